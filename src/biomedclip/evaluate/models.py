"""The model under evaluation is the inference layer's loaded model (:class:`biomedclip.model.inference.Embedder`).

``EvalModel`` and ``load_model`` are its names in the evaluation package.
"""

from __future__ import annotations

from biomedclip.model.inference import Embedder as EvalModel
from biomedclip.model.inference import load as load_model

__all__ = ["EvalModel", "load_model"]
