"""The Python API: ``biomedclip.load(name_or_path)`` and what it returns.

    >>> import biomedclip
    >>> clip = biomedclip.load()                                       # the released BiomedCLIP checkpoint
    >>> clip = biomedclip.load("local-dir:checkpoints/biomedclip")    # or "hf-hub:ORG/NAME", a folder, a file
    >>> clip.embed_images(["chest.png"]).shape                         # (1, 512), unit rows
    >>> clip.classify(["chest.png"], ["normal lung", "pneumonia"])     # (1, 2) probabilities
    >>> clip.similarity(["chest.png"], ["a chest X-ray"])              # (1, 1) cosine similarities

Batching, device choice (CUDA, else MPS, else CPU) and image decoding happen inside. An :class:`Embedder` may be
shared between threads: inference is serialised by a lock, which is how the HTTP service stays safe under
concurrency. Everything here lives in :mod:`biomedclip.model.inference`.
"""

from __future__ import annotations

from biomedclip.model.inference import Embedder, ImageDecodeError, ImageInput, load, open_image
from biomedclip.model.pretrained import RELEASED_CHECKPOINT, UntrainedModelWarning

__all__ = [
    "RELEASED_CHECKPOINT",
    "Embedder",
    "ImageDecodeError",
    "ImageInput",
    "UntrainedModelWarning",
    "load",
    "open_image",
]
