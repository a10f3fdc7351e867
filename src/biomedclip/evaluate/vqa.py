"""Medical VQA as in the paper: answer classification over the training answers, with a co-attention fusion.

The paper plugs BiomedCLIP's encoders into METER (co-attention over image patch and text token features, then an
answer classifier). This is a compact version: the CLIP encoders stay frozen and their token features are
extracted once; a few METER-style layers (self-attention, cross-attention to the other modality, MLP, in each
stream) fuse them, and an MLP over the two pooled first tokens scores every answer seen in training.

What it needs from the model (true for BiomedCLIP and open_clip's ``CustomTextCLIP``, i.e. timm + HF towers):
``model.visual.trunk.forward_features(pixels) -> (B, T, Wv)`` (class token + patch tokens; a CNN's (B, C, H, W)
map becomes its mean token + H*W tokens) and
``model.text.transformer(input_ids=, attention_mask=).last_hidden_state -> (B, L, Wt)``, with the pad id from
``model.text.pad_token_id`` (default 0). Questions whose answer never occurs in training count as wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from biomedclip.evaluate.datasets import DatasetError, VQAQuestions, load_dataset
from biomedclip.evaluate.embeddings import model_device
from biomedclip.evaluate.models import EvalModel
from biomedclip.evaluate.results import make_result


@dataclass(frozen=True)
class VQAConfig:
    """Fusion size and training schedule (compact defaults; METER uses 6 layers of width 768)."""

    hidden: int = 256
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.01
    seed: int = 0


@dataclass
class TokenFeatures:
    """Frozen token features of a VQA split: image tokens per unique image, text tokens per question."""

    image_tokens: torch.Tensor  # (I, T, Wv)
    image_of_question: torch.Tensor  # (N,) row of image_tokens for each question
    text_tokens: torch.Tensor  # (N, L, Wt)
    text_mask: torch.Tensor  # (N, L) True for real tokens


@torch.no_grad()
def extract_token_features(model: EvalModel, data: VQAQuestions, batch_size: int = 32) -> TokenFeatures:
    """Run the frozen towers once over the split's images and questions."""
    net = model.model
    trunk = getattr(getattr(net, "visual", None), "trunk", None)
    text = getattr(net, "text", None)
    if not hasattr(trunk, "forward_features") or not hasattr(text, "transformer"):
        raise DatasetError(
            "VQA needs token features: model.visual.trunk.forward_features and model.text.transformer "
            "(timm + Hugging Face towers, as BiomedCLIP and open_clip's CustomTextCLIP)"
        )
    device = model_device(net)
    keys = list(dict.fromkeys(data.image_keys))
    row = {key: i for i, key in enumerate(keys)}
    images = []
    for start in range(0, len(keys), batch_size):
        pixels = torch.stack([model.transform(data.image_loader(k)) for k in keys[start : start + batch_size]])
        images.append(_as_tokens(trunk.forward_features(pixels.to(device))).float().cpu())
    pad = getattr(text, "pad_token_id", 0) or 0
    ids = model.tokenizer(list(data.questions))
    used = int((ids != pad).any(0).nonzero().max()) + 1
    ids = ids[:, :used]
    mask = ids != pad
    tokens = []
    for start in range(0, len(ids), batch_size):
        batch, batch_mask = ids[start : start + batch_size].to(device), mask[start : start + batch_size].to(device)
        tokens.append(
            text.transformer(input_ids=batch, attention_mask=batch_mask.long()).last_hidden_state.float().cpu()
        )
    return TokenFeatures(torch.cat(images), torch.tensor([row[k] for k in data.image_keys]), torch.cat(tokens), mask)


def _as_tokens(features: torch.Tensor) -> torch.Tensor:
    """ViT output (B, T, W) as is; a CNN feature map (B, C, H, W) as its mean token followed by its H*W tokens."""
    if features.ndim == 4:
        tokens = features.flatten(2).transpose(1, 2)
        return torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
    return features


class CoAttentionLayer(nn.Module):
    """One METER-style layer per stream: self-attention, cross-attention to the other stream, MLP (pre-norm)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.ModuleList([nn.MultiheadAttention(hidden, heads, dropout, batch_first=True) for _ in "it"])
        self.cross_attn = nn.ModuleList([nn.MultiheadAttention(hidden, heads, dropout, batch_first=True) for _ in "it"])
        self.mlp = nn.ModuleList(
            [nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden)) for _ in "it"]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(hidden) for _ in range(6)])

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.norms
        x = n[0](image)
        image = image + self.self_attn[0](x, x, x, need_weights=False)[0]
        y = n[1](text)
        text = text + self.self_attn[1](y, y, y, key_padding_mask=text_pad, need_weights=False)[0]
        x, y = n[2](image), n[3](text)
        image, text = (
            image + self.cross_attn[0](x, y, y, key_padding_mask=text_pad, need_weights=False)[0],
            text + self.cross_attn[1](y, x, x, need_weights=False)[0],
        )
        return image + self.mlp[0](n[4](image)), text + self.mlp[1](n[5](text))


class VQAFusion(nn.Module):
    """Projects both token streams, fuses them with co-attention layers and classifies the pooled pair."""

    def __init__(self, image_width: int, text_width: int, num_answers: int, config: VQAConfig) -> None:
        super().__init__()
        self.image_proj = nn.Linear(image_width, config.hidden)
        self.text_proj = nn.Linear(text_width, config.hidden)
        self.modality = nn.Parameter(torch.zeros(2, config.hidden))
        self.layers = nn.ModuleList(
            [CoAttentionLayer(config.hidden, config.heads, config.dropout) for _ in range(config.layers)]
        )
        self.classifier = nn.Sequential(
            nn.LayerNorm(2 * config.hidden),
            nn.Linear(2 * config.hidden, 2 * config.hidden),
            nn.GELU(),
            nn.Linear(2 * config.hidden, num_answers),
        )

    def forward(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        image = self.image_proj(image) + self.modality[0]
        text = self.text_proj(text) + self.modality[1]
        for layer in self.layers:
            image, text = layer(image, text, ~text_mask)
        return self.classifier(torch.cat([image[:, 0], text[:, 0]], dim=-1))


def train_fusion(features: TokenFeatures, targets: torch.Tensor, num_answers: int, config: VQAConfig) -> VQAFusion:
    """Train the fusion + classifier with AdamW and cross-entropy on the frozen features."""
    torch.manual_seed(config.seed)
    fusion = VQAFusion(features.image_tokens.shape[-1], features.text_tokens.shape[-1], num_answers, config)
    optimizer = torch.optim.AdamW(fusion.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    fusion.train()
    for _ in range(config.epochs):
        for batch in torch.randperm(len(targets), generator=generator).split(config.batch_size):
            logits = fusion(
                features.image_tokens[features.image_of_question[batch]],
                features.text_tokens[batch],
                features.text_mask[batch],
            )
            loss = nn.functional.cross_entropy(logits, targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return fusion.eval()


@torch.no_grad()
def predict(fusion: VQAFusion, features: TokenFeatures, batch_size: int = 128) -> np.ndarray:
    """Index of the best answer for every question."""
    out = []
    for batch in torch.arange(len(features.text_tokens)).split(batch_size):
        image = features.image_tokens[features.image_of_question[batch]]
        out.append(fusion(image, features.text_tokens[batch], features.text_mask[batch]).argmax(-1))
    return torch.cat(out).numpy()


def vqa_accuracy(predicted: list[str], answers: list[str], answer_types: list[str]) -> dict:
    """Exact-match accuracy overall and per answer type (``closed_accuracy`` / ``open_accuracy``)."""
    correct = np.array([p == a for p, a in zip(predicted, answers, strict=True)])
    types = np.array(answer_types)
    metrics: dict[str, Any] = {
        "n": int(correct.size),
        "overall_accuracy": float(correct.mean()) if correct.size else 0.0,
    }
    for kind in ("CLOSED", "OPEN"):
        chosen = types == kind
        metrics[f"n_{kind.lower()}"] = int(chosen.sum())
        metrics[f"{kind.lower()}_accuracy"] = float(correct[chosen].mean()) if chosen.any() else None
    return metrics


def run_vqa(model: EvalModel, dataset: str, *, split: str = "test", config: VQAConfig | None = None, settings) -> dict:
    """Train the fusion on the train split and report closed/open/overall accuracy on ``split``."""
    config = config or VQAConfig()
    train, test = load_dataset(dataset, "train"), load_dataset(dataset, split)
    if not isinstance(train, VQAQuestions) or not isinstance(test, VQAQuestions):
        raise DatasetError(f"{dataset} is not a VQA dataset (use vqa_rad:PATH or slake:PATH)")
    answers = sorted(set(train.answers))
    index = {answer: i for i, answer in enumerate(answers)}
    train_features = extract_token_features(model, train, settings.batch_size)
    test_features = extract_token_features(model, test, settings.batch_size)
    fusion = train_fusion(train_features, torch.tensor([index[a] for a in train.answers]), len(answers), config)
    predicted = [answers[i] for i in predict(fusion, test_features)]
    metrics = vqa_accuracy(predicted, test.answers, test.answer_types)
    metrics["n_answers"] = len(answers)
    metrics["answerable"] = float(np.mean([a in index for a in test.answers]))
    resolved = asdict(settings) | {"vqa": asdict(config), "train_questions": len(train)}
    return make_result("vqa", model.name, dataset, split, metrics, resolved)
