"""The text tower's architecture without a BERT ``config.json``: built in for the paper's BERT names, else read
off the checkpoint's tensor shapes. The released BiomedCLIP repo ships no BERT config, so without this it
cannot be built offline (open_clip fails the same way). This module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from biomedclip.model.config import ModelConfig

# BERT-base, uncased, 30,522 WordPiece tokens: the config.json of every PubMedBERT/BiomedBERT base release.
BERT_BASE_UNCASED: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}

# Microsoft renamed PubMedBERT to BiomedBERT in 2023; both names stay in circulation (the release uses the new one).
KNOWN_TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    f"microsoft/BiomedNLP-{family}-base-uncased-{corpus}": BERT_BASE_UNCASED
    for family in ("PubMedBERT", "BiomedBERT")
    for corpus in ("abstract", "abstract-fulltext")
}

TEXT_PREFIX = "text.transformer."
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")
HEAD_WIDTH = 64  # BERT's head width: the number of heads is not visible in the tensor shapes


def known_text_config(name: str) -> dict[str, Any] | None:
    """The built-in architecture of a known BERT hub name (a copy), else ``None``."""
    config = KNOWN_TEXT_CONFIGS.get(name)
    return dict(config) if config is not None else None


def text_config_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """A BERT config from the shapes of a CLIP state dict (``text.transformer.*`` keys).

    Vocabulary, width, depth, MLP width, positions and token types are read off the shapes; the head count is
    ``width / 64`` (BERT's convention) and the rest are BERT's defaults. Raises ``ValueError`` when the keys are
    not a BERT encoder's.
    """
    bert = {k.removeprefix(TEXT_PREFIX): v for k, v in shapes.items() if k.startswith(TEXT_PREFIX)}
    needed = (
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "encoder.layer.0.intermediate.dense.weight",
    )
    missing = [k for k in needed if k not in bert]
    if missing:
        raise ValueError(f"cannot infer the text tower's architecture: no {TEXT_PREFIX}{missing[0]} in the weights")
    vocab_size, hidden = bert["embeddings.word_embeddings.weight"]
    if hidden % HEAD_WIDTH:
        raise ValueError(f"cannot infer the number of attention heads of a width-{hidden} text tower")
    layers = 1 + max(int(m.group(1)) for k in bert if (m := _LAYER.match(k)))
    token_types = bert.get("embeddings.token_type_embeddings.weight", (2, hidden))[0]
    return dict(
        BERT_BASE_UNCASED,
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // HEAD_WIDTH,
        intermediate_size=bert["encoder.layer.0.intermediate.dense.weight"][0],
        max_position_embeddings=bert["embeddings.position_embeddings.weight"][0],
        type_vocab_size=token_types,
    )


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a weight file (safetensors: header only; torch pickles: memory-mapped, weights only)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    from biomedclip.model.checkpoint import read_state_dict

    return {key: tuple(tensor.shape) for key, tensor in read_state_dict(path).items()}


def with_text_architecture(config: ModelConfig, weights: str | Path | None) -> ModelConfig:
    """``config`` with an inline text architecture whenever it can be had without the network: a config that
    has one or starts from pretrained text weights, or names a local HF folder, is returned as is; a known
    BERT name gets the built-in config; otherwise the weights' shapes decide. With neither, ``config`` is
    returned unchanged (its ``config.json`` must then come from the hub or the hub cache)."""
    text = config.text
    if (
        text.hf_model_config
        or text.hf_model_pretrained
        or (Path(text.hf_model_name).expanduser() / "config.json").is_file()
    ):
        return config
    inline = known_text_config(text.hf_model_name)
    if inline is None and weights is not None:
        inline = text_config_from_shapes(weight_shapes(weights))
    if inline is None:
        return config
    return dataclasses.replace(config, text=dataclasses.replace(text, hf_model_config=inline))
