"""The CLIP model: image tower, text tower and a learnable temperature, interchangeable with open_clip's
``CustomTextCLIP`` (same state-dict keys, same ``encode_*``/``forward`` contract)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from biomedclip.model.config import ModelConfig
from biomedclip.model.towers import HFTextTower, TimmVisionTower


class BiomedCLIP(nn.Module):
    """BiomedCLIP: ``encode_image(pixels)``, ``encode_text(token_ids)`` and a log-space ``logit_scale``."""

    def __init__(self, config: ModelConfig, output_dict: bool = False) -> None:
        super().__init__()
        self.config = config
        self.output_dict = output_dict
        self.visual = TimmVisionTower(config.vision, config.embed_dim)
        self.text = HFTextTower(config.text, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.ones([]) * config.init_logit_scale)
        if config.init_logit_bias is None:
            self.logit_bias = None
        else:
            self.logit_bias = nn.Parameter(torch.ones([]) * config.init_logit_bias)
        self.embed_dim = config.embed_dim
        self.context_length = config.text.context_length
        self.vocab_size = self.text.vocab_size
        self.image_size = config.vision.image_size

    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image embeddings ``[N, embed_dim]`` from pixels ``[N, 3, H, W]``."""
        features = self.visual(pixels)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, token_ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Text embeddings ``[N, embed_dim]`` from token ids ``[N, context_length]`` (pad id 0)."""
        features = self.text(token_ids)
        return F.normalize(features, dim=-1) if normalize else features

    def get_logits(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image-to-text and text-to-image logits, scaled by ``logit_scale.exp()`` (plus bias if any)."""
        image_logits = self.logit_scale.exp() * self.encode_image(image, True) @ self.encode_text(text, True).T
        if self.logit_bias is not None:
            image_logits = image_logits + self.logit_bias
        return image_logits, image_logits.T

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        """Normalised features and the temperature, as a dict or a tuple like open_clip."""
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        if self.output_dict:
            out = {
                "image_features": image_features,
                "text_features": text_features,
                "logit_scale": self.logit_scale.exp(),
            }
            if self.logit_bias is not None:
                out["logit_bias"] = self.logit_bias
            return out
        if self.logit_bias is not None:
            return image_features, text_features, self.logit_scale.exp(), self.logit_bias
        return image_features, text_features, self.logit_scale.exp()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in both towers."""
        self.visual.trunk.set_grad_checkpointing(enable)
        if enable:
            self.text.transformer.gradient_checkpointing_enable()
        else:
            self.text.transformer.gradient_checkpointing_disable()
