"""Medical VQA as in the paper: answer classification over the training answers with a co-attention fusion.

Two heads (``VQAConfig.head``):

* ``meter`` (default, the paper's setting, after METER, Dou et al. 2022): both CLIP encoders are fine-tuned
  together with 6 co-attention fusion layers of width 768 (12 heads); the pooled first tokens of the two
  streams feed an answer classifier trained with binary cross-entropy on soft answer scores (VQA's
  ``min(1, count / 3)`` when a question has several annotator answers, 1.0 for the single answer of
  VQA-RAD and SLAKE), summed over answers and averaged over questions as METER does. AdamW, encoder learning
  rate ``lr`` and ``head_lr_mult`` times that for the fusion and classifier. The evaluated model is copied
  first, so the caller's weights are not changed.
* ``light`` (the earlier, cheap head): frozen encoders whose token features are extracted once, 2 layers of
  width 256, cross-entropy on the single answer.

What it needs from the model (true for BiomedCLIP and open_clip's ``CustomTextCLIP``, i.e. timm + HF towers):
``model.visual.trunk.forward_features(pixels) -> (B, T, Wv)`` (class token + patch tokens; a CNN's (B, C, H, W)
map becomes its mean token + H*W tokens) and
``model.text.transformer(input_ids=, attention_mask=).last_hidden_state -> (B, L, Wt)``, with the pad id from
``model.text.pad_token_id`` (default 0). Questions whose answer never occurs in training count as wrong.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from biomedclip.evaluate.datasets import DatasetError, VQAQuestions, load_dataset
from biomedclip.evaluate.embeddings import model_device
from biomedclip.evaluate.models import EvalModel
from biomedclip.evaluate.results import make_result

HEADS = ("meter", "light")


@dataclass(frozen=True)
class VQAConfig:
    """Head, fusion size and training schedule; defaults = the paper's METER-style setting."""

    head: str = "meter"
    hidden: int = 768
    layers: int = 6
    heads: int = 12
    dropout: float = 0.1
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-5
    head_lr_mult: float = 10.0
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown VQA head {self.head!r}: use one of {', '.join(HEADS)}")
        if self.hidden % self.heads:
            raise ValueError(f"fusion width {self.hidden} is not a multiple of {self.heads} attention heads")

    @classmethod
    def for_head(cls, head: str = "meter", **overrides: Any) -> VQAConfig:
        """The defaults of ``head`` (light: 2 x 256, 4 heads, lr 2e-4) with ``overrides`` (None keeps a default)."""
        base = cls(head=head) if head != "light" else cls(head=head, hidden=256, layers=2, heads=4, lr=2e-4)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def soft_scores(answer_lists: Sequence[Sequence[str]], index: dict[str, int]) -> torch.Tensor:
    """(N, A) VQA soft targets: ``min(1, count / 3)`` per answer; a question with one answer scores it 1.0."""
    targets = torch.zeros(len(answer_lists), len(index))
    for row, answers in enumerate(answer_lists):
        if len(answers) == 1:
            if answers[0] in index:
                targets[row, index[answers[0]]] = 1.0
            continue
        for answer in set(answers):
            if answer in index:
                targets[row, index[answer]] = min(1.0, answers.count(answer) / 3)
    return targets


@dataclass
class TokenFeatures:
    """Frozen token features of a VQA split: image tokens per unique image, text tokens per question."""

    image_tokens: torch.Tensor  # (I, T, Wv)
    image_of_question: torch.Tensor  # (N,) row of image_tokens for each question
    text_tokens: torch.Tensor  # (N, L, Wt)
    text_mask: torch.Tensor  # (N, L) True for real tokens


def _towers(net: Any) -> tuple[Any, Any]:
    """``(image trunk, text tower)`` of a timm + HF CLIP model, or a clear error."""
    trunk = getattr(getattr(net, "visual", None), "trunk", None)
    text = getattr(net, "text", None)
    if not hasattr(trunk, "forward_features") or not hasattr(text, "transformer"):
        raise DatasetError(
            "VQA needs token features: model.visual.trunk.forward_features and model.text.transformer "
            "(timm + Hugging Face towers, as BiomedCLIP and open_clip's CustomTextCLIP)"
        )
    return trunk, text


def _question_ids(model: EvalModel, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids trimmed to the longest question, and the mask of real tokens."""
    pad = getattr(model.model.text, "pad_token_id", 0) or 0
    ids = model.tokenizer(list(questions))
    used = int((ids != pad).any(0).nonzero().max()) + 1
    ids = ids[:, :used]
    return ids, ids != pad


def _pixels(model: EvalModel, data: VQAQuestions) -> tuple[torch.Tensor, torch.Tensor]:
    """Transformed pixels of every distinct image, and the image row of each question."""
    keys = list(dict.fromkeys(data.image_keys))
    row = {key: i for i, key in enumerate(keys)}
    pixels = torch.stack([model.transform(data.image_loader(key)) for key in keys])
    return pixels, torch.tensor([row[key] for key in data.image_keys])


@torch.no_grad()
def extract_token_features(model: EvalModel, data: VQAQuestions, batch_size: int = 32) -> TokenFeatures:
    """Run the frozen towers once over the split's images and questions (the light head's input)."""
    trunk, text = _towers(model.model)
    device = model_device(model.model)
    pixels, image_of_question = _pixels(model, data)
    images = [_as_tokens(trunk.forward_features(chunk.to(device))).float().cpu() for chunk in pixels.split(batch_size)]
    ids, mask = _question_ids(model, data.questions)
    tokens = []
    for batch, batch_mask in zip(ids.split(batch_size), mask.split(batch_size), strict=True):
        out = text.transformer(input_ids=batch.to(device), attention_mask=batch_mask.long().to(device))
        tokens.append(out.last_hidden_state.float().cpu())
    return TokenFeatures(torch.cat(images), image_of_question, torch.cat(tokens), mask)


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
    """Light head: train the fusion + classifier with AdamW and cross-entropy on the frozen features."""
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


class METERModel(nn.Module):
    """Both CLIP towers (trainable) + the co-attention fusion: pixels and question ids -> answer logits."""

    def __init__(self, net: Any, num_answers: int, config: VQAConfig, sample: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.trunk, self.text = _towers(net)
        with torch.no_grad():
            image, text = self.tokens(*sample)
        self.fusion = VQAFusion(image.shape[-1], text.shape[-1], num_answers, config)

    def tokens(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = _as_tokens(self.trunk.forward_features(pixels))
        text = self.text.transformer(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return image.float(), text.float()

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fusion(*self.tokens(pixels, ids, mask), mask)


@dataclass
class QuestionInputs:
    """Pixels of the distinct images and token ids of the questions of a split."""

    pixels: torch.Tensor  # (I, 3, H, W)
    image_of_question: torch.Tensor  # (N,)
    ids: torch.Tensor  # (N, L)
    mask: torch.Tensor  # (N, L)

    @classmethod
    def of(cls, model: EvalModel, data: VQAQuestions) -> QuestionInputs:
        return cls(*_pixels(model, data), *_question_ids(model, data.questions))

    def batch(self, rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        pixels = self.pixels[self.image_of_question[rows]]
        return pixels.to(device), self.ids[rows].to(device), self.mask[rows].to(device)


def train_meter(model: EvalModel, inputs: QuestionInputs, targets: torch.Tensor, config: VQAConfig) -> METERModel:
    """Fine-tune a copy of the towers with the fusion on soft targets (BCE, AdamW, two learning rates)."""
    torch.manual_seed(config.seed)
    device = model_device(model.model)
    sample = inputs.batch(torch.arange(min(2, len(targets))), device)
    net = METERModel(copy.deepcopy(model.model), targets.shape[1], config, sample).to(device)
    encoder = [p for name, p in net.named_parameters() if not name.startswith("fusion.")]
    for parameter in encoder:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder, "lr": config.lr},
            {"params": net.fusion.parameters(), "lr": config.lr * config.head_lr_mult},
        ],
        weight_decay=config.weight_decay,
    )
    generator = torch.Generator().manual_seed(config.seed)
    net.train()
    for _ in range(config.epochs):
        for rows in torch.randperm(len(targets), generator=generator).split(config.batch_size):
            logits = net(*inputs.batch(rows, device))
            loss = nn.functional.binary_cross_entropy_with_logits(
                logits, targets[rows].to(device), reduction="sum"
            ) / len(rows)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def predict_meter(net: METERModel, inputs: QuestionInputs, batch_size: int = 64) -> np.ndarray:
    """Index of the best answer for every question."""
    device = next(net.parameters()).device
    rows = torch.arange(len(inputs.ids))
    return torch.cat([net(*inputs.batch(b, device)).argmax(-1).cpu() for b in rows.split(batch_size)]).numpy()


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
    """Train on the train split (METER-style or light head) and report closed/open/overall accuracy on ``split``."""
    config = config or VQAConfig()
    train, test = load_dataset(dataset, "train"), load_dataset(dataset, split)
    if not isinstance(train, VQAQuestions) or not isinstance(test, VQAQuestions):
        raise DatasetError(f"{dataset} is not a VQA dataset (use vqa_rad:PATH or slake:PATH)")
    answers = sorted(set(train.answers))
    index = {answer: i for i, answer in enumerate(answers)}
    if config.head == "meter":
        targets = soft_scores([[a] for a in train.answers], index)
        net = train_meter(model, QuestionInputs.of(model, train), targets, config)
        chosen = predict_meter(net, QuestionInputs.of(model, test), settings.batch_size)
    else:
        train_features = extract_token_features(model, train, settings.batch_size)
        test_features = extract_token_features(model, test, settings.batch_size)
        fusion = train_fusion(train_features, torch.tensor([index[a] for a in train.answers]), len(answers), config)
        chosen = predict(fusion, test_features)
    predicted = [answers[i] for i in chosen]
    metrics = vqa_accuracy(predicted, test.answers, test.answer_types)
    metrics["n_answers"] = len(answers)
    metrics["answerable"] = float(np.mean([a in index for a in test.answers]))
    resolved = asdict(settings) | {"vqa": asdict(config), "train_questions": len(train)}
    return make_result("vqa", model.name, dataset, split, metrics, resolved)
