import torch

from biomedclip.model import get_tokenizer, train_wordpiece
from biomedclip.model.tokenizer import load_tokenizer


def test_builtin_vocab_is_offline_and_bert_shaped():
    tokenizer = get_tokenizer("tiny")
    assert tokenizer.vocab_size > 1000 and tokenizer.context_length == 64 and tokenizer.pad_token_id == 0
    ids = tokenizer(["Figure 1. Chest radiograph", "x " * 500])
    assert ids.shape == (2, 64)
    assert ids[0, 0].item() == tokenizer.backend.token_to_id("[CLS]")
    assert ids[1, -1].item() == tokenizer.backend.token_to_id("[SEP]")  # truncated, [SEP] kept
    assert (ids[0] == 0).sum() > 0  # padded with id 0


def test_context_length_argument():
    tokenizer = get_tokenizer("tiny", context_length=16)
    assert tokenizer(["a b c"]).shape == (1, 16)
    assert tokenizer(["a"], context_length=8).shape == (1, 8)
    assert tokenizer(["a"]).shape == (1, 16)
    assert tokenizer([]).shape == (0, 16)


def test_train_save_load_round_trip_matches_transformers(tmp_path):
    texts = ["Histology of the liver shows fibrosis.", "MRI of the brain with contrast."] * 20
    tokenizer = train_wordpiece(texts, vocab_size=200, min_frequency=1, context_length=24)
    tokenizer.save(tmp_path)
    again = load_tokenizer(tmp_path, 24)
    assert again.vocab_size == tokenizer.vocab_size
    assert torch.equal(again(texts[:2]), tokenizer(texts[:2]))
    (tmp_path / "tokenizer.json").unlink()  # vocab.txt alone must give the same ids
    assert torch.equal(load_tokenizer(tmp_path, 24)(texts[:2]), tokenizer(texts[:2]))

    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert len(hf) == tokenizer.vocab_size
    expected = hf(texts[:2], padding="max_length", max_length=24, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(expected, tokenizer(texts[:2]))
