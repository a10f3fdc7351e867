"""Token ids equal open_clip's ``HFTokenizer`` (its ftfy / HTML / whitespace clean-up, truncation and padding to
256) on every figure caption of the PMC fixtures and on crafted text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from biomedclip.corpus.jats import JatsError, extract_figures
from biomedclip.model.pretrained import builtin_tokenizer_dir
from biomedclip.model.tokenizer import load_tokenizer

CONTEXT = 256  # the released model's context length

CRAFTED = [
    "“Curly” quotes and ‘single’ ones: the patient’s X‑ray",
    "Ｆｕｌｌ－ｗｉｄｔｈ ＣＴ ｓｃａｎ ｏｆ ｔｈｅ ｌｕｎｇ",
    "H&amp;E stain &lt;x40&gt; &amp;amp; PAS",
    "Ã©chographie du foie â€” lÃ©sion hypoÃ©chogÃ¨ne",
    "  tabs\tand\nnew lines\r\n  and\u00a0non-breaking\u2009spaces  ",
    "ﬁbrosis (ligature) and ½ dose, µm scale",
    "",
    "Figure 2. " + "Kaplan-Meier survival of patients stratified by grade " * 40,  # longer than 256 tokens
]


def _fixture_captions(root: Path) -> list[str]:
    captions = []
    for path in sorted([*root.rglob("*.nxml"), *root.rglob("*.xml")]):
        try:
            records = extract_figures(path.read_bytes(), source=path.name)
        except JatsError:
            continue  # not an article (e.g. a package manifest)
        captions.extend(r.caption for r in records if r.caption)
    return captions


@pytest.fixture(scope="module")
def tokenizers():
    from open_clip.tokenizer import HFTokenizer

    folder = builtin_tokenizer_dir("pmc-fixtures-wordpiece")
    return load_tokenizer(folder, CONTEXT), HFTokenizer(str(folder), context_length=CONTEXT)


def test_every_fixture_caption_gets_open_clips_ids(tokenizers, shared_fixtures):
    ours, theirs = tokenizers
    captions = _fixture_captions(shared_fixtures / "pmc")
    assert len(captions) > 100
    assert torch.equal(ours(captions), theirs(captions))


@pytest.mark.parametrize("text", CRAFTED)
def test_crafted_text_gets_open_clips_ids(tokenizers, text):
    ours, theirs = tokenizers
    expected = theirs([text])
    assert expected.shape == (1, CONTEXT)
    assert torch.equal(ours([text]), expected)
    assert torch.equal(ours(text), expected)


def test_context_length_argument_cleans_once(tokenizers):
    ours, theirs = tokenizers
    text = "H&amp;amp;lt;E&amp;amp;gt; stain"  # unescaped twice gives "H&lt;E&gt;", three times "H<E>"
    assert torch.equal(ours([text], context_length=16), theirs([text], context_length=16))


def test_clean_up_changes_ids_where_it_should(tokenizers):
    """The crafted cases really exercise the clean-up: without it, ids differ from open_clip's."""
    ours, theirs = tokenizers
    raw = ours.backend.encode_batch(CRAFTED[:4])
    differing = [text for text, enc in zip(CRAFTED[:4], raw, strict=True) if enc.ids != theirs([text])[0].tolist()]
    assert len(differing) == 4
