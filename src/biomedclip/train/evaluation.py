"""In-training evaluation on rank 0: validation loss, retrieval R@1/5/10 on the val split, zero-shot accuracy.

Retrieval and zero-shot use ``biomedclip.evaluate``. A zero-shot entry of ``eval.zeroshot`` is a labelled image
folder: one sub-folder per class (``FOLDER/<class name>/*.png``), class order = sorted sub-folder names, and an
optional ``FOLDER/prompts.yaml`` (``{classnames: [...], templates: [...]}``) for the class names and templates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from biomedclip.model.inference import DEFAULT_TEMPLATES, build_zeroshot_classifier, embed_images, embed_texts
from biomedclip.shards import IMAGE_EXTENSIONS, expand_shards
from biomedclip.train.config import TrainConfig
from biomedclip.train.data import decode_pair, eval_batches, iterate_samples
from biomedclip.train.loss import ClipLoss

IMAGE_SUFFIXES = {f".{ext}" for ext in IMAGE_EXTENSIONS}
Evaluator = Callable[[torch.nn.Module], dict[str, Any]]


def load_labelled_folder(folder: str | Path) -> tuple[list[Path], np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Image paths, labels, class names and templates of a labelled folder (see the module docstring)."""
    from biomedclip.evaluate.prompts import load_prompt_set

    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ValueError(f"{folder}: a zero-shot folder needs at least two class sub-folders")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([label] * len(files))
    classnames, templates = tuple(c.replace("_", " ") for c in classes), tuple(DEFAULT_TEMPLATES)
    if (folder / "prompts.yaml").is_file():
        prompts = load_prompt_set(folder / "prompts.yaml")
        if len(prompts.classnames) != len(classes):
            raise ValueError(f"{folder}/prompts.yaml names {len(prompts.classnames)} classes for {len(classes)}")
        classnames, templates = prompts.classnames, prompts.templates
    return paths, np.asarray(labels, dtype=np.int64), classnames, templates


@torch.no_grad()
def validation_metrics(
    model: torch.nn.Module, urls: list[str], transform: Callable, tokenizer: Callable, *, config: TrainConfig
) -> dict[str, Any]:
    """Mean contrastive loss over val batches of ``eval.batch_size``, plus retrieval recalls on the split."""
    device = next(model.parameters()).device
    loss_fn = ClipLoss(local_loss=False, gather_with_grad=False)
    total, count = 0.0, 0
    for images, texts in eval_batches(
        urls, transform, tokenizer, batch_size=config.eval.batch_size, max_samples=config.data.val_num_samples
    ):
        image_features = model.encode_image(images.to(device), normalize=True)
        text_features = model.encode_text(texts.to(device), normalize=True)
        loss = loss_fn(image_features.float(), text_features.float(), model.logit_scale.exp().float())
        total += loss.item() * images.shape[0]
        count += images.shape[0]
    metrics: dict[str, Any] = {"val_loss": total / max(count, 1), "val_samples": count}
    if config.eval.retrieval:
        metrics.update(_retrieval(model, urls, transform, tokenizer, config))
    return metrics


def _retrieval(model, urls, transform, tokenizer, config: TrainConfig) -> dict[str, Any]:
    from biomedclip.evaluate.retrieval import evaluate_retrieval, group_captions

    images, captions = [], []
    keys = tuple(config.data.image_key.split(";"))
    for sample in iterate_samples(urls):
        if config.data.val_num_samples is not None and len(captions) >= config.data.val_num_samples:
            break
        image, caption = decode_pair(sample, keys, config.data.text_key)
        images.append(image)
        captions.append(caption)
    texts, text_index = group_captions(captions)
    image_emb = embed_images(model, images, transform, batch_size=config.eval.batch_size)
    text_emb = embed_texts(model, tokenizer, texts, batch_size=config.eval.batch_size)
    result = evaluate_retrieval(image_emb, text_emb, text_index)
    return {f"val_{k}": v for k, v in result.items()}


@torch.no_grad()
def zeroshot_metrics(model: torch.nn.Module, folder: str, transform: Callable, tokenizer: Callable) -> dict[str, Any]:
    """Zero-shot accuracy (and AUROC for two classes) on a labelled folder."""
    from biomedclip.evaluate.zeroshot import evaluate_zeroshot

    paths, labels, classnames, templates = load_labelled_folder(folder)
    images = [Image.open(p).convert("RGB") for p in paths]
    classifier = build_zeroshot_classifier(model, tokenizer, classnames, templates)
    result = evaluate_zeroshot(embed_images(model, images, transform), labels, classifier, classnames)
    name = Path(folder).name
    return {f"zeroshot_{name}_{k}": result[k] for k in ("accuracy", "balanced_accuracy", "auroc")}


def build_evaluator(config: TrainConfig, transform: Callable, tokenizer: Callable, device) -> Evaluator | None:
    """The evaluation a run asked for, as one callable over the (unwrapped) model; None when nothing is set."""
    val_urls = expand_shards(config.data.val) if config.data.val else None
    folders = list(config.eval.zeroshot)
    for folder in folders:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"eval.zeroshot folder {folder} does not exist")
    if val_urls is None and not folders:
        return None

    def evaluate(model: torch.nn.Module) -> dict[str, Any]:
        model.eval()
        metrics: dict[str, Any] = {}
        if val_urls is not None:
            metrics.update(validation_metrics(model, val_urls, transform, tokenizer, config=config))
        for folder in folders:
            metrics.update(zeroshot_metrics(model, folder, transform, tokenizer))
        return metrics

    return evaluate
