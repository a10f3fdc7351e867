"""The two towers, with the module names (and so the state-dict keys) of open_clip's ``TimmModel`` and
``HFTextEncoder``: ``visual.trunk.* / visual.head.proj.weight`` and ``text.transformer.* / text.proj.*``."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from biomedclip.model.config import TextConfig, VisionConfig


class TimmVisionTower(nn.Module):
    """A timm trunk without classifier, then dropout and a linear projection to the joint space."""

    def __init__(self, cfg: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        import timm

        kwargs = dict(cfg.timm_model_kwargs)
        if cfg.timm_drop_path is not None:
            kwargs["drop_path_rate"] = cfg.timm_drop_path
        if cfg.timm_pool:
            kwargs["global_pool"] = cfg.timm_pool
        self.trunk = timm.create_model(
            cfg.timm_model_name, pretrained=cfg.timm_model_pretrained, num_classes=0, **kwargs
        )
        self.image_size = cfg.image_size
        width = self.trunk.num_features
        head: OrderedDict[str, nn.Module] = OrderedDict()
        if cfg.timm_proj == "linear":
            head["drop"] = nn.Dropout(cfg.timm_drop)
            head["proj"] = nn.Linear(width, embed_dim, bias=cfg.timm_proj_bias)
        elif cfg.timm_proj not in ("", "none"):
            raise ValueError(f"unsupported timm_proj {cfg.timm_proj!r} (use 'linear' or 'none')")
        elif width != embed_dim:
            raise ValueError(f"timm_proj 'none' needs trunk width {width} == embed_dim {embed_dim}")
        self.head = nn.Sequential(head)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(pixels))


def build_hf_config(cfg: TextConfig):
    """The transformers config of the text encoder: inline when given, else the ``config.json`` of a local folder
    or of a hub repo (read from the hub cache; the hub is asked only when it is reachable)."""
    from transformers import AutoConfig

    from biomedclip.model.pretrained import hub_config_dir

    if cfg.hf_model_config:
        values = dict(cfg.hf_model_config)
        return AutoConfig.for_model(values.pop("model_type", "bert"), **values)
    folder = Path(cfg.hf_model_name).expanduser()
    return AutoConfig.from_pretrained(
        folder if (folder / "config.json").is_file() else hub_config_dir(cfg.hf_model_name)
    )


def _is_exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


class HFTextTower(nn.Module):
    """A HF encoder without its pooling layer, class-token pooling and an MLP projection (open_clip's
    ``cls_last_hidden_state_pooler`` + ``mlp``). The attention mask is ``ids != pad_token_id``.

    Trailing columns that are padding in every row are cut before the encoder runs: with absolute positions
    and masked keys the output is unchanged, and captions are far shorter than the context length.
    """

    def __init__(self, cfg: TextConfig, embed_dim: int) -> None:
        super().__init__()
        from transformers import AutoModel

        self.pooler_type = cfg.hf_pooler_type
        if self.pooler_type not in ("cls_last_hidden_state_pooler", "mean_pooler", "cls_pooler"):
            raise ValueError(f"unsupported hf_pooler_type {self.pooler_type!r}")
        with_pooler = self.pooler_type == "cls_pooler"
        if cfg.hf_model_pretrained:
            self.transformer = AutoModel.from_pretrained(cfg.hf_model_name, add_pooling_layer=with_pooler)
        else:
            self.transformer = AutoModel.from_config(build_hf_config(cfg), add_pooling_layer=with_pooler)
        self.config = self.transformer.config
        self.pad_token_id = self.config.pad_token_id or 0
        self.context_length = cfg.context_length
        self.vocab_size = self.config.vocab_size
        width = self.config.hidden_size
        if cfg.hf_proj_type == "mlp":
            hidden = (width + embed_dim) // 2
            self.proj = nn.Sequential(
                nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, embed_dim, bias=False)
            )
        elif cfg.hf_proj_type == "linear":
            self.proj = nn.Linear(width, embed_dim, bias=False)
        elif width == embed_dim and cfg.hf_proj_type in ("", "none", None):
            self.proj = nn.Identity()
        else:
            raise ValueError(f"unsupported hf_proj_type {cfg.hf_proj_type!r} for width {width} -> {embed_dim}")

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        mask = (token_ids != self.pad_token_id).long()
        if not _is_exporting() and token_ids.shape[1] > 1:
            used = int(mask.any(dim=0).nonzero().max().item()) + 1 if mask.any() else 1
            token_ids, mask = token_ids[:, :used], mask[:, :used]
        out = self.transformer(input_ids=token_ids, attention_mask=mask)
        if self.pooler_type == "cls_pooler":
            pooled = out.pooler_output
        elif self.pooler_type == "mean_pooler":
            weights = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1)
        else:
            pooled = out.last_hidden_state[:, 0]
        return self.proj(pooled)
