"""In-training evaluation on rank 0: validation loss, retrieval R@1/5/10 on the val split, zero-shot accuracy.

Retrieval and zero-shot use ``biomedclip.evaluate``. An ``eval.zeroshot`` entry is any labelled dataset spec that
``biomedclip eval`` accepts (``imagefolder:DIR``, ``DIR``, ``medmnist:FILE.npz``, ``pcam:DIR``, ...), read by the
evaluation package's dataset registry with the same split rules; ``eval.zeroshot_split`` picks the split scored.
Prompts: the dataset's own (the paper's for the paper's benchmarks, else the class names in the generic
templates), or ``eval.prompts``: ``train`` (the training captions' template) or a prompts YAML; class folder names
read through ``eval.class_names`` (see :mod:`biomedclip.classnames`). Every dataset is loaded and checked before the
model is built, so a bad spec fails in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from biomedclip.errors import InputError
from biomedclip.shards import expand_shards
from biomedclip.train.config import TrainConfig
from biomedclip.train.data import decode_pair, eval_batches, iterate_samples
from biomedclip.train.loss import ClipLoss

Evaluator = Callable[[torch.nn.Module], dict[str, Any]]


@dataclass
class ZeroShotTask:
    """One labelled split with the prompts it is scored with."""

    name: str  # the key prefix of its metrics: zeroshot_<name>_accuracy
    dataset: Any  # biomedclip.evaluate.datasets.LabeledImages
    classnames: tuple[str, ...]
    templates: tuple[str, ...]


def _dataset_name(spec: str) -> str:
    return Path(spec.split(":", 1)[1] if ":" in spec and not Path(spec).exists() else spec).name or spec


def zeroshot_tasks(config: TrainConfig) -> list[ZeroShotTask]:
    """Load every ``eval.zeroshot`` dataset and resolve its prompts; raises InputError naming what is wrong."""
    if not config.eval.zeroshot:
        return []
    from biomedclip.classnames import class_texts, load_class_names
    from biomedclip.evaluate.datasets import DatasetError, LabeledImages, load_dataset
    from biomedclip.evaluate.prompts import PromptSet, load_prompt_set
    from biomedclip.evaluate.tasks import resolve_prompts

    names = load_class_names(config.eval.class_names) if config.eval.class_names else None
    templates: tuple[str, ...] | None = None
    user_prompts: PromptSet | None = None
    if config.eval.prompts == "train":
        from biomedclip.train.prompts import caption_templates

        templates = caption_templates(expand_shards(config.data.train))
    elif config.eval.prompts:
        try:
            user_prompts = load_prompt_set(config.eval.prompts)
        except ValueError as error:
            raise InputError(f"eval.prompts: {error}") from error
    tasks = []
    for spec in config.eval.zeroshot:
        try:
            data = load_dataset(spec, config.eval.zeroshot_split)
            if not isinstance(data, LabeledImages):
                raise DatasetError(f"{spec} is not a labelled image dataset")
            prompts = resolve_prompts(data, user_prompts)
        except (DatasetError, ValueError) as error:
            raise InputError(f"eval.zeroshot {spec}: {error}") from error
        classnames = prompts.classnames
        if names is not None or config.eval.prompts == "train":
            classnames = class_texts(data.classnames, names)
        tasks.append(ZeroShotTask(_dataset_name(spec), data, classnames, templates or prompts.templates))
    return tasks


@torch.no_grad()
def validation_metrics(
    model: torch.nn.Module, urls: list[str], transform: Callable, tokenizer: Callable, *, config: TrainConfig
) -> dict[str, Any]:
    """Mean contrastive loss over val batches of ``eval.batch_size``, plus retrieval recalls on the split.

    The validation loss is open_clip's (every other item of a batch is a negative, duplicates included) whatever
    ``loss.mask_duplicate_captions`` says: its value does not depend on how many copies of a caption a batch holds,
    so it compares across runs, batches and with open_clip's own ``val_loss``.
    """
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
    from biomedclip.model.inference import embed_images, embed_texts

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
def zeroshot_metrics(model: torch.nn.Module, task: ZeroShotTask, transform: Callable, tokenizer: Callable) -> dict:
    """Zero-shot accuracy, balanced accuracy and AUROC (two classes) of one task, with the number of images, of
    classes and of classes predicted for at least one image."""
    from biomedclip.evaluate.zeroshot import evaluate_zeroshot
    from biomedclip.model.inference import build_zeroshot_classifier, embed_images

    classifier = build_zeroshot_classifier(model, tokenizer, task.classnames, task.templates)
    images = embed_images(model, task.dataset, transform)
    result = evaluate_zeroshot(images, task.dataset.labels, classifier, task.classnames)
    metrics = {f"zeroshot_{task.name}_{k}": result[k] for k in ("accuracy", "balanced_accuracy", "auroc")}
    predicted = sum(1 for column in zip(*result["confusion_matrix"], strict=True) if sum(column))
    return metrics | {
        f"zeroshot_{task.name}_n": len(task.dataset),
        f"zeroshot_{task.name}_classes": len(task.classnames),
        f"zeroshot_{task.name}_predicted_classes": predicted,  # 1: every image got the same class (collapse)
    }


def build_evaluator(
    config: TrainConfig, transform: Callable, tokenizer: Callable, tasks: list[ZeroShotTask] | None = None
) -> Evaluator | None:
    """The evaluation a run asked for, as one callable over the (unwrapped) model; None when nothing is set.

    ``tasks`` are the zero-shot tasks already loaded by :func:`zeroshot_tasks` (loaded here when not given).
    """
    val_urls = expand_shards(config.data.val) if config.data.val else None
    tasks = zeroshot_tasks(config) if tasks is None else tasks
    if val_urls is None and not tasks:
        return None

    def evaluate(model: torch.nn.Module) -> dict[str, Any]:
        model.eval()
        metrics: dict[str, Any] = {}
        if val_urls is not None:
            metrics.update(validation_metrics(model, val_urls, transform, tokenizer, config=config))
        for task in tasks:
            metrics.update(zeroshot_metrics(model, task, transform, tokenizer))
        return metrics

    return evaluate


def training_corpus(train_spec: str) -> Path | None:
    """The ``corpus build`` OUT folder the training shards come from (``OUT/shards/train-*.tar`` with a catalog
    in ``OUT``), or ``None`` for shards without one (remote, or written by other tools)."""
    from biomedclip.evaluate.leakage import catalog_path
    from biomedclip.shards import is_url

    try:
        urls = expand_shards(train_spec)
    except (ValueError, OSError):
        return None
    if not urls or is_url(urls[0]):
        return None
    corpus = Path(urls[0]).resolve().parent.parent
    try:
        catalog_path(corpus)
    except InputError:
        return None
    return corpus


def zeroshot_leakage(tasks: list[ZeroShotTask], corpus: Path) -> list[str]:
    """One warning per in-training zero-shot dataset whose scored images include training images of ``corpus``."""
    from biomedclip.evaluate.leakage import check_overlap

    warnings = []
    for task in tasks:
        leak = check_overlap(task.dataset, corpus)
        if leak["overlap"]:
            warnings.append(
                f"zero-shot on {task.name} scores {leak['overlap']} of {leak['checked']} images that are training "
                f"images of {corpus} (same SHA-256): its in-training numbers overstate the model"
            )
        elif leak["unchecked"]:
            warnings.append(
                f"zero-shot on {task.name}: {leak['unchecked']} scored images could not be compared with the training "
                f"images of {corpus} ({leak['unchecked_reason']})"
            )
    return warnings
