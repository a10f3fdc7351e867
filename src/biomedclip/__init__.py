"""biomedclip: an open, reproducible implementation of BiomedCLIP.

Stages (each reads only the previous stage's files): ``corpus`` (PMC articles to WebDataset shards),
``model`` (open_clip-compatible BiomedCLIP), ``train`` (torchrun trainer), ``evaluate`` (the paper's suite)
and ``serve`` (figure search index and HTTP service).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
