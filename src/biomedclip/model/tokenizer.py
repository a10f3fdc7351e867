"""WordPiece tokenizer (HF ``tokenizers``): BERT-style uncased ids, ``[CLS] ... [SEP]``, padded with id 0
and truncated to the context length. Saved and loaded in the HF folder layout, so transformers'
``AutoTokenizer.from_pretrained(dir)`` (and thus open_clip) reads the same files.

Text is cleaned first exactly as open_clip's ``HFTokenizer`` does (``clean="whitespace"``): ``ftfy.fix_text``
(curly quotes, full-width letters, mojibake), ``html.unescape`` twice, then runs of whitespace to one space.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from pathlib import Path

import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


class WordPieceTokenizer:
    """Callable: ``tokenizer(list_of_str) -> LongTensor[N, context_length]``."""

    def __init__(self, backend, context_length: int = 256) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(backend.to_str())  # a private copy: padding settings are per tokenizer
        self.context_length = context_length
        self.pad_token_id = self.backend.token_to_id("[PAD]")
        if self.pad_token_id is None:
            raise ValueError("tokenizer vocabulary has no [PAD] token")
        self.backend.enable_truncation(max_length=context_length)
        self.backend.enable_padding(length=context_length, pad_id=self.pad_token_id, pad_token="[PAD]")

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary, special tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        tokenizer = self
        if context_length is not None and context_length != self.context_length:
            tokenizer = WordPieceTokenizer(self.backend, context_length)
        if not texts:
            return torch.zeros(0, tokenizer.context_length, dtype=torch.long)
        encodings = tokenizer.backend.encode_batch([clean_text(t) for t in texts])
        return torch.tensor([e.ids for e in encodings], dtype=torch.long)

    def save(self, out_dir: str | Path) -> Path:
        """Write tokenizer.json, vocab.txt and the transformers config files into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(out / "tokenizer.json"))
        vocab = self.backend.get_vocab(with_added_tokens=True)
        ordered = sorted(vocab, key=vocab.__getitem__)
        (out / "vocab.txt").write_text("".join(f"{token}\n" for token in ordered), encoding="utf-8")
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "model_max_length": self.context_length,
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        special = {name: config[name] for name in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")}
        (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
        return out


def clean_text(text: str) -> str:
    """open_clip's ``HFTokenizer`` clean-up: ftfy, HTML entities (unescaped twice), whitespace collapsed."""
    import ftfy

    return " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split())


def has_tokenizer_files(folder: str | Path) -> bool:
    """True when ``folder`` holds a tokenizer.json or a vocab.txt."""
    folder = Path(folder)
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()


def load_tokenizer(folder: str | Path, context_length: int = 256) -> WordPieceTokenizer:
    """Load from a HF tokenizer folder: ``tokenizer.json`` if present, else a BERT ``vocab.txt``."""
    from tokenizers import Tokenizer, models

    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").is_file():
        lowercase = True
        config_path = folder / "tokenizer_config.json"
        if config_path.is_file():
            lowercase = bool(json.loads(config_path.read_text(encoding="utf-8")).get("do_lower_case", True))
        backend = _bert_pipeline(models.WordPiece.from_file(str(folder / "vocab.txt"), unk_token="[UNK]"), lowercase)
    else:
        raise FileNotFoundError(f"no tokenizer.json or vocab.txt in {folder}")
    return WordPieceTokenizer(backend, context_length)


def train_wordpiece(
    texts: Iterable[str], vocab_size: int = 30522, min_frequency: int = 2, context_length: int = 256
) -> WordPieceTokenizer:
    """Train an uncased BERT WordPiece vocabulary on ``texts`` (the paper's domain-adapted vocabulary)."""
    from tokenizers import models, trainers

    backend = _bert_pipeline(models.WordPiece(unk_token="[UNK]"), lowercase=True)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS)
    )
    backend.train_from_iterator(texts, trainer=trainer)
    _add_cls_sep(backend)
    return WordPieceTokenizer(backend, context_length)


def _bert_pipeline(model, lowercase: bool):
    """A tokenizers pipeline that reproduces BERT's: normaliser, pre-tokeniser, [CLS]/[SEP], ## decoder."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers

    backend = Tokenizer(model)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    if backend.token_to_id("[CLS]") is not None:
        _add_cls_sep(backend)
    return backend


def _add_cls_sep(backend) -> None:
    from tokenizers import processors

    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    if cls is None or sep is None:
        raise ValueError("tokenizer vocabulary needs [CLS] and [SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
