"""Contrastive training on corpus shards with the paper's recipe (single process, torchrun, multi-node)."""

from biomedclip.train.config import TrainConfig, load_config, parse_overrides
from biomedclip.train.loop import TrainResult, train
from biomedclip.train.loss import ClipLoss

__all__ = ["ClipLoss", "TrainConfig", "TrainResult", "load_config", "parse_overrides", "train"]
