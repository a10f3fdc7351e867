"""A longer text context for a trained model (``biomedclip model extend-context``).

The text tower's learned position embeddings bound its context to ``max_position_embeddings`` positions (512 for
PubMedBERT; the released BiomedCLIP reads 256 of them). ``extend_context(model, n)`` returns a copy that reads
``n`` tokens:

* ``n <= max_position_embeddings``: only the context length changes; the rows past the old context are the
  tower's own (for BiomedCLIP, PubMedBERT's rows, pretrained on 512-token abstracts).
* ``n > max_position_embeddings``: the table grows to ``n`` rows. ``copy`` (the default, as Longformer grew
  RoBERTa's table) keeps every row and fills row ``i`` with row ``i mod old``, so a text that fits the old
  context gets exactly the old embedding; ``interpolate`` resamples the whole table linearly to ``n`` rows
  (every position moves a little, short texts included).

Either way the new positions carry no knowledge of where they are: fine-tune on long captions
(``configs/paper-long.yaml``, the corpus report's ``long_captions`` counts) before trusting them.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from biomedclip.model.checkpoint import text_config_dict
from biomedclip.model.clip import BiomedCLIP

METHODS = ("copy", "interpolate")
POSITIONS = "text.transformer.embeddings.position_embeddings.weight"
BUFFERS = ("position_ids", "token_type_ids")  # derived from the table's size by transformers, never learned


def grown_positions(table: torch.Tensor, size: int, method: str = "copy") -> torch.Tensor:
    """A position-embedding table ``[old, width]`` grown to ``[size, width]`` (see the module for the methods)."""
    old = table.shape[0]
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if size <= old:
        return table.clone()
    if method == "copy":
        return table[torch.arange(size) % old].clone()
    resized = F.interpolate(table.T.unsqueeze(0).float(), size=size, mode="linear", align_corners=True)
    return resized.squeeze(0).T.to(table.dtype).contiguous()


def extend_context(model: BiomedCLIP, context_length: int, method: str = "copy") -> BiomedCLIP:
    """A copy of ``model`` whose text tower reads ``context_length`` tokens, in eval mode on the CPU."""
    if context_length < 2:
        raise ValueError(f"context_length must be at least 2 ([CLS] and [SEP]), not {context_length}")
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    table = state[POSITIONS]
    size = max(table.shape[0], context_length)
    hf_config = {**text_config_dict(model), "max_position_embeddings": size}
    text = dataclasses.replace(
        model.config.text, context_length=context_length, hf_model_pretrained=False, hf_model_config=hf_config
    )
    longer = BiomedCLIP(dataclasses.replace(model.config, text=text))
    state[POSITIONS] = grown_positions(table, size, method)
    state = {k: v for k, v in state.items() if not k.endswith(BUFFERS)}
    missing, unexpected = longer.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith(BUFFERS)]:
        raise ValueError(f"the model's weights do not fit the longer text tower: {unexpected or missing}")
    return longer.eval()
