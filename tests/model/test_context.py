"""A longer text context: the extended model loads in open_clip offline with the same embeddings as ours, keeps
the embeddings of texts that fit the old context (copy), and reads the tokens past it."""

from __future__ import annotations

import torch

from biomedclip.model import create_model_and_transforms, get_tokenizer, save_pretrained
from biomedclip.model.context import POSITIONS, extend_context, grown_positions

SHORT = ["a", "lung CT, axial", "H&E stain of a liver biopsy"]
LONG = ["cells " * 40 + "tumour " * 100]  # past tiny's 64-token context, within 256


def test_copy_keeps_every_row_and_repeats_the_table():
    table = torch.arange(12.0).reshape(4, 3)
    grown = grown_positions(table, 10, "copy")
    assert grown.shape == (10, 3) and torch.equal(grown[:4], table)
    assert torch.equal(grown[4:8], table) and torch.equal(grown[8:], table[:2])
    assert torch.equal(grown_positions(table, 3), table)  # a table already long enough is kept


def test_interpolate_resamples_the_table_linearly():
    table = torch.tensor([[0.0, 10.0], [3.0, 13.0]])
    grown = grown_positions(table, 4, "interpolate")
    assert torch.allclose(grown, torch.tensor([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0], [3.0, 13.0]]))


def test_extended_tiny_reads_past_its_old_context_and_keeps_short_texts(tiny):
    model, _, _, _ = tiny
    table = model.text.transformer.embeddings.position_embeddings.weight
    assert (model.context_length, table.shape[0]) == (64, 128)
    longer = extend_context(model, 256)
    assert longer.context_length == 256 and longer.state_dict()[POSITIONS].shape == (256, table.shape[1])
    old_tokens, new_tokens = (
        get_tokenizer("tiny")(SHORT + LONG),
        get_tokenizer("tiny", context_length=256)(SHORT + LONG),
    )
    assert int((new_tokens[-1] > 0).sum()) > 64 == int((old_tokens[-1] > 0).sum())
    with torch.no_grad():
        before, after = model.encode_text(old_tokens), longer.encode_text(new_tokens)
    assert torch.allclose(before[:3], after[:3], atol=1e-6)  # texts within 64 tokens: the same embeddings
    assert not torch.allclose(before[3], after[3], atol=1e-3)  # the long caption is read past token 64
    within = extend_context(model, 100)  # inside the 128-row table: nothing grows
    assert torch.equal(within.state_dict()[POSITIONS], table.detach())


def test_extended_checkpoint_loads_in_open_clip_with_our_embeddings(tmp_path, model_cli, monkeypatch, cut_network):
    import open_clip

    model, tokenizer = create_model_and_transforms("tiny")[0], get_tokenizer("tiny")
    base = save_pretrained(model, tokenizer, tmp_path / "base", bin_copy=False)
    out = tmp_path / "long"
    result = model_cli("extend-context", "-m", f"local-dir:{base}", "--context-length", "256", "-o", out)
    assert "from 64 to 256 tokens" in result.output and "grown from 128 to 256" in result.output
    calls = cut_network()
    ours, _, _ = create_model_and_transforms(f"local-dir:{out}")
    our_tokens = get_tokenizer(f"local-dir:{out}")(SHORT + LONG)
    monkeypatch.chdir(out)
    theirs, _, _ = open_clip.create_model_and_transforms("local-dir:.")
    their_tokens = open_clip.get_tokenizer("local-dir:.")(SHORT + LONG)
    theirs.eval()
    assert calls == [] and their_tokens.shape == (4, 256) and torch.equal(their_tokens, our_tokens)
    with torch.no_grad():
        assert (theirs.encode_text(our_tokens) - ours.encode_text(our_tokens)).abs().max() < 1e-5
        expected = model.encode_text(get_tokenizer("tiny")(SHORT))  # the unextended model, short texts
        assert (theirs.encode_text(their_tokens[:3]) - expected).abs().max() < 1e-5
