"""Tokenizer cases that mutation testing showed untested (docs/MUTATION.md), against transformers' BERT tokenizer
and open_clip's text clean-up as references."""

from __future__ import annotations

import json

import pytest
import torch
from open_clip.tokenizer import get_clean_fn
from transformers import BertTokenizer, PreTrainedTokenizerFast

from biomedclip.model.tokenizer import (
    WordPieceTokenizer,
    clean_text,
    has_tokenizer_files,
    load_tokenizer,
    train_wordpiece,
)

TEXTS = ["Histology of the Liver shows fibrosis.", "MRI of the brain with contrast.", "Ki-67 staining"] * 10


@pytest.fixture(scope="module")
def trained() -> WordPieceTokenizer:
    return train_wordpiece(TEXTS, vocab_size=120, min_frequency=1, context_length=20)


@pytest.mark.parametrize(
    "text",
    ["â€œquotedâ€\x9d  text", "&amp;lt;b&amp;gt; bold", "  tabs\tand\nnew   lines ", "ｆｕｌｌ width", "plain"],
)
def test_clean_text_equals_open_clip_whitespace_clean(text: str) -> None:
    assert clean_text(text) == get_clean_fn("whitespace")(text)


def test_saved_folder_reads_as_bert_in_transformers(tmp_path, trained: WordPieceTokenizer) -> None:
    trained.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["model_max_length"] == 20
    assert json.loads((tmp_path / "special_tokens_map.json").read_text()) == {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    slow = BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=config["do_lower_case"])  # vocab.txt alone
    fast = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert (slow.pad_token, slow.cls_token, slow.sep_token) == ("[PAD]", "[CLS]", "[SEP]")
    assert (fast.pad_token, fast.unk_token, fast.mask_token) == ("[PAD]", "[UNK]", "[MASK]")
    assert fast.model_max_length == 20
    want = slow(TEXTS[:3], padding="max_length", max_length=20, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(trained(TEXTS[:3]), want)
    assert torch.equal(trained(TEXTS[0]), want[:1])  # a single string is a batch of one


def test_vocab_txt_with_a_cased_config_keeps_case(tmp_path, trained: WordPieceTokenizer) -> None:
    trained.save(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    assert has_tokenizer_files(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = load_tokenizer(tmp_path, context_length=12)
    want = BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=False)(
        ["Liver LIVER liver"], padding="max_length", max_length=12, truncation=True, return_tensors="pt"
    ).input_ids
    assert torch.equal(cased(["Liver LIVER liver"]), want)
    assert cased.context_length == 12
    (tmp_path / "tokenizer_config.json").unlink()  # no config: BERT's default, uncased
    uncased = load_tokenizer(tmp_path)(["Liver LIVER"])
    assert uncased.shape == (1, 256) and uncased[0, 1:3].tolist() == [trained.backend.token_to_id("liver")] * 2


def test_tokenizer_files_and_missing_folders(tmp_path) -> None:
    assert not has_tokenizer_files(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    assert has_tokenizer_files(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json or vocab\.txt"):
        load_tokenizer(tmp_path / "empty")


def test_vocabulary_size_and_frequency_bounds() -> None:
    texts = ["alpha beta", "alpha gamma", "alpha beta"]
    frequent = train_wordpiece(texts, vocab_size=200, min_frequency=2, context_length=8)
    vocab = frequent.backend.get_vocab()
    assert "alpha" in vocab and "beta" in vocab and "gamma" not in vocab  # gamma occurs once
    assert frequent.vocab_size == len(vocab) <= 200
    ids = frequent(["alpha"])[0].tolist()
    assert ids == [vocab["[CLS]"], vocab["alpha"], vocab["[SEP]"], 0, 0, 0, 0, 0]


def test_a_vocabulary_without_special_tokens_is_refused() -> None:
    from tokenizers import Tokenizer, models

    with pytest.raises(ValueError, match=r"^tokenizer vocabulary has no \[PAD\] token$"):
        WordPieceTokenizer(Tokenizer(models.WordPiece({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))


def test_training_defaults_keep_pairs_seen_twice_and_the_papers_context() -> None:
    tokenizer = train_wordpiece(["alpha beta", "alpha gamma delta"], vocab_size=60)
    vocab = tokenizer.backend.get_vocab()
    assert "alpha" in vocab and "gamma" not in vocab  # min_frequency 2: alpha occurs twice, gamma once
    assert tokenizer.context_length == 256  # BiomedCLIP's text context
    ids = tokenizer(["alpha ж"])[0].tolist()
    assert ids[:4] == [vocab["[CLS]"], vocab["alpha"], vocab["[UNK]"], vocab["[SEP]"]]  # unseen character


def test_save_creates_missing_parent_folders(tmp_path, trained: WordPieceTokenizer) -> None:
    out = trained.save(tmp_path / "run" / "tokenizer")
    assert has_tokenizer_files(out) and load_tokenizer(out).vocab_size == trained.vocab_size


def test_pairs_decoding_and_bert_normalisation_match_transformers(tmp_path, trained: WordPieceTokenizer) -> None:
    trained.save(tmp_path)
    slow = BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)
    fast = PreTrainedTokenizerFast.from_pretrained(tmp_path)  # reads tokenizer.json: our pipeline as saved
    assert fast("liver shows", "brain").input_ids == slow("liver shows", "brain").input_ids  # [CLS] a [SEP] b [SEP]
    ids = fast("Histology fibrosis").input_ids
    assert fast.decode(ids, skip_special_tokens=True) == slow.decode(ids, skip_special_tokens=True)
    odd = "Caf\u00e9\x07 \u4e2d\u6587 LIVER"  # an accent, a control character, Chinese characters
    (tmp_path / "tokenizer.json").unlink()
    from_vocab = load_tokenizer(tmp_path, context_length=16)  # the BERT pipeline rebuilt from vocab.txt
    want = slow([odd], padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(from_vocab([odd]), want)


def test_tokenizer_json_alone_is_enough_and_ids_are_int64(tmp_path, trained: WordPieceTokenizer) -> None:
    trained.save(tmp_path)
    (tmp_path / "vocab.txt").unlink()
    alone = load_tokenizer(tmp_path, context_length=20)
    assert torch.equal(alone(TEXTS[:2]), trained(TEXTS[:2]))
    assert alone([]).dtype == torch.long and alone(TEXTS[:1]).dtype == torch.long
    assert WordPieceTokenizer(trained.backend).context_length == 256


def test_cls_and_sep_are_both_required() -> None:
    from tokenizers import Tokenizer, models

    from biomedclip.model.tokenizer import _add_cls_sep

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "a": 3}
    with pytest.raises(ValueError, match=r"^tokenizer vocabulary needs \[CLS\] and \[SEP\]$"):
        _add_cls_sep(Tokenizer(models.WordPiece(vocab, unk_token="[UNK]")))
