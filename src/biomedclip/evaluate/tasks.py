"""One function per evaluation task: load the split(s), embed (through the cache), score, return the result.

Each returns the result record of :func:`biomedclip.evaluate.results.make_result` (metrics + resolved settings);
the CLI writes it with :func:`~biomedclip.evaluate.results.write_result`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from biomedclip.errors import InputError
from biomedclip.evaluate.datasets import (
    DatasetError,
    HashSplit,
    ImageTextPairs,
    LabeledImages,
    default_split,
    load_dataset,
)
from biomedclip.evaluate.embeddings import EmbeddingCache, embed_images, embed_texts, transform_fingerprint
from biomedclip.evaluate.linear_probe import LinearProbeConfig, linear_probe
from biomedclip.evaluate.metrics import one_class_warning
from biomedclip.evaluate.models import EvalModel
from biomedclip.evaluate.prompts import DEFAULT_TEMPLATES, PAPER_PROMPTS, PromptSet
from biomedclip.evaluate.results import make_result, prompts_hash
from biomedclip.evaluate.retrieval import RetrievalConfig, evaluate_retrieval, group_captions
from biomedclip.evaluate.zeroshot import build_zeroshot_classifier, evaluate_zeroshot


@dataclass(frozen=True)
class RunSettings:
    """Settings shared by every task (batching, device, sub-sampling, cache)."""

    batch_size: int = 64
    device: str | None = None
    num_workers: int = 0
    max_items: int | None = None
    seed: int = 0
    cache_dir: str | None = None
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train/val/test of the hash rule (unsplit folders)
    train_catalog: str | None = None  # a corpus catalog: report the scored images that are training images
    train_overlap: str | None = None  # rows of 'corpus overlap' of the training corpus: report the known copies

    @property
    def hash_split(self) -> HashSplit:
        return HashSplit(*self.split_ratios)


def dataset_counts(data: LabeledImages | ImageTextPairs, found: int | None = None) -> dict:
    """Items scored (``n``) of found (``found``), how the split was chosen, and for labels the majority class."""
    counts = {"n": len(data), "found": found if found is not None else getattr(data, "found", None) or len(data)}
    counts["rule"] = getattr(data, "rule", "") or f"split {data.split}"
    if isinstance(data, LabeledImages):
        tally = np.bincount(data.labels, minlength=len(data.classnames))
        top = int(tally.argmax()) if tally.size else 0
        counts["majority_class"] = data.classnames[top] if tally.size else None
        counts["majority_rate"] = float(tally[top] / max(1, len(data))) if tally.size else None
        counts["class_counts"] = dict(zip(data.classnames, tally.tolist(), strict=True))
    else:
        counts["unit"] = "pairs"
    return counts


def _extras(data: LabeledImages | ImageTextPairs, settings: RunSettings, found: int | None = None) -> dict:
    """The ``counts`` and (with ``train_catalog`` or ``train_overlap``) ``leakage`` entries of a result about the
    scored ``data``."""
    extras = {"counts": dataset_counts(data, found)}
    if settings.train_catalog or settings.train_overlap:
        from biomedclip.evaluate.leakage import check_overlap

        extras["leakage"] = check_overlap(data, settings.train_catalog, overlap_rows=settings.train_overlap)
    return extras


def _limit(dataset, settings: RunSettings):
    """A seeded random subset of ``max_items`` items (kept in dataset order), or the dataset itself."""
    if settings.max_items is None or len(dataset) <= settings.max_items:
        return dataset
    rng = np.random.default_rng(settings.seed)
    return dataset.subset(np.sort(rng.choice(len(dataset), settings.max_items, replace=False)))


def image_embeddings(model: EvalModel, dataset: LabeledImages | ImageTextPairs, settings: RunSettings) -> np.ndarray:
    """Normalised image embeddings of every item, read from / written to the cache when one is configured."""

    def compute() -> np.ndarray:
        return embed_images(
            model.model,
            dataset,
            model.transform,
            batch_size=settings.batch_size,
            device=settings.device,
            num_workers=settings.num_workers,
        )

    if settings.cache_dir is None:
        return compute()
    cache = EmbeddingCache(settings.cache_dir)
    transform = transform_fingerprint(model.transform)
    key = cache.key(model=model.fingerprint, dataset=dataset.identity, transform=transform, kind="image")
    meta = {"model": model.name, "dataset": dataset.name, "split": dataset.split, "transform": transform}
    array, _ = cache.get_or_compute(key, compute, meta)
    return array


def resolve_prompts(dataset: LabeledImages, prompts: PromptSet | None) -> PromptSet:
    """User prompts, else the paper's for a paper benchmark, else the class names with the three paper templates."""
    if prompts is None:
        prompts = PAPER_PROMPTS.get(dataset.prompt_key or "") or PromptSet(dataset.classnames, DEFAULT_TEMPLATES)
    if len(prompts.classnames) != len(dataset.classnames):
        raise DatasetError(
            f"{len(prompts.classnames)} prompt class names for {len(dataset.classnames)} classes "
            f"({', '.join(dataset.classnames)}): list one name per class, in label order"
        )
    return prompts


def run_zeroshot(
    model: EvalModel,
    dataset: str,
    *,
    split: str | None = None,
    prompts: PromptSet | None = None,
    settings: RunSettings,
) -> dict:
    """Zero-shot classification of one split (default: ``all`` for LC25000, else ``test``)."""
    split = split or default_split(dataset, "zeroshot")
    data = _limit(_labeled(dataset, split, settings), settings)
    prompt_set = resolve_prompts(data, prompts)
    classifier = build_zeroshot_classifier(
        model.model, model.tokenizer, prompt_set.classnames, prompt_set.templates, device=settings.device
    )
    metrics = evaluate_zeroshot(image_embeddings(model, data, settings), data.labels, classifier, prompt_set.classnames)
    collapsed = one_class_warning(metrics["confusion_matrix"], prompt_set.classnames)
    if collapsed:
        metrics["warnings"] = [*metrics.get("warnings", []), collapsed]
    resolved = asdict(settings) | {
        "classnames": list(prompt_set.classnames),
        "templates": list(prompt_set.templates),
        "prompts_hash": prompts_hash(prompt_set.classnames, prompt_set.templates),
    }
    return make_result("zeroshot", model.name, dataset, split, metrics, resolved, **_extras(data, settings))


def run_linear_probe(
    model: EvalModel,
    dataset: str,
    *,
    split: str = "test",
    config: LinearProbeConfig | None = None,
    settings: RunSettings,
) -> dict:
    """Linear probe: features of train (+ val when it exists and is not the evaluated split) and ``split``."""
    config = config or LinearProbeConfig()
    if split in ("train", "all"):
        raise InputError(f"a linear probe is fitted on train: score it on val or test, not {split!r}")
    train = _limit(_labeled(dataset, "train", settings), settings)
    test = _limit(_labeled(dataset, split, settings), settings)
    val = None
    if config.protocol == "logistic" and split != "val":
        try:
            val = _limit(_labeled(dataset, "val", settings), settings)
        except InputError:  # no val split (folder, archive): the probe cuts one from train
            val = None
    features = {name: image_embeddings(model, d, settings) for name, d in (("train", train), ("test", test))}
    result = linear_probe(
        features["train"],
        train.labels,
        features["test"],
        test.labels,
        len(train.classnames),
        val_features=None if val is None else image_embeddings(model, val, settings),
        val_labels=None if val is None else val.labels,
        config=config,
    )
    metrics = {"summary": result["summary"], "runs": result["runs"], "classnames": list(train.classnames)}
    metrics["seeds_at_chance"] = result["seeds_at_chance"]
    if result["warnings"]:
        metrics["warnings"] = result["warnings"]
    resolved = asdict(settings) | {
        "linear_probe": result["config"],
        "validation": "val split"
        if val
        else "class-balanced 20% of each training subset"
        if config.protocol == "elevater"
        else "20% of train",
    }
    extras = _extras(test, settings)
    extras["counts"]["train_n"] = len(train)
    return make_result("linear_probe", model.name, dataset, split, metrics, resolved, **extras)


def long_captions(data: ImageTextPairs, min_tokens: int) -> ImageTextPairs:
    """The pairs whose caption has at least ``min_tokens`` WordPiece tokens, counted as the corpus report counts
    them (``corpus.tokens``: BERT uncased WordPiece, [CLS] and [SEP] included, never truncated); all for 0."""
    if min_tokens <= 0:
        return data
    from biomedclip.corpus.tokens import count_tokens

    kept = [i for i, n in enumerate(count_tokens(list(data.captions))) if n >= min_tokens]
    if not kept:
        raise DatasetError(f"no caption of {data.name} [{data.split}] has {min_tokens} tokens or more")
    return data.subset(kept)


def run_retrieval(
    model: EvalModel, dataset: str, *, split: str = "test", config: RetrievalConfig | None = None, settings: RunSettings
) -> dict:
    """Image<->text Recall@K over a whole split of image-caption pairs (exact, tiled)."""
    config = config or RetrievalConfig()
    data = load_dataset(dataset, split)
    if not isinstance(data, ImageTextPairs):
        raise DatasetError(f"{dataset} is not an image-caption dataset (use corpus shards for retrieval)")
    found = data.found or len(data)
    data = _limit(long_captions(data, config.min_tokens), settings)
    texts, text_index = group_captions(data.captions, merge=config.merge_captions)
    text_embeddings = embed_texts(model.model, model.tokenizer, texts, device=settings.device)
    metrics = evaluate_retrieval(
        image_embeddings(model, data, settings),
        text_embeddings,
        text_index,
        config.ks,
        query_chunk=config.query_chunk,
        gallery_chunk=config.gallery_chunk,
    )
    resolved = asdict(settings) | asdict(config)
    return make_result("retrieval", model.name, dataset, split, metrics, resolved, **_extras(data, settings, found))


def _labeled(dataset: str, split: str, settings: RunSettings) -> LabeledImages:
    data = load_dataset(dataset, split, settings.hash_split)
    if not isinstance(data, LabeledImages):
        raise DatasetError(f"{dataset} is not a labelled image dataset")
    return data
