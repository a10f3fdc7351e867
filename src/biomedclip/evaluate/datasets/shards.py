"""Corpus shards (``{split}-NNNNNN.tar``, read through :mod:`biomedclip.shards`) as an evaluation dataset.

``shards:DIR`` takes the split's shards of a folder (``all``: every ``*-NNNNNN.tar``); any other spec uses the shard
spec grammar (``shards:DIR/test-{000000..000003}.tar``, globs, ``::`` lists). Each sample's split is read from its
record (else from its shard's ``{split}-`` name), never assumed from the command: samples of other splits are left
out and counted in the dataset's ``rule``; ``all`` keeps every sample. Shards whose every record names a class (built
from ``imagefolder:``) are labelled image-caption pairs, for classification and retrieval alike (classes = the
sorted class folder names); others are image-caption pairs for retrieval. Captions and records are read once,
images lazily, by seeking into the tar.
"""

from __future__ import annotations

import glob
import io
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from biomedclip.evaluate.datasets.base import SPLITS, DatasetError, ImageTextPairs, LabeledImages, fingerprint
from biomedclip.evaluate.datasets.folders import check_split
from biomedclip.shards import ShardError, ShardSpecError, expand_shards, is_url, iter_samples, read_member


class LabeledPairs(ImageTextPairs, LabeledImages):
    """Image-caption pairs whose every image also has a class (shards built from ``imagefolder:``): a dataset for
    retrieval and for classification alike."""

    def __init__(
        self,
        pairs: ImageTextPairs,
        classnames: tuple[str, ...],
        labels: np.ndarray,
    ) -> None:
        ImageTextPairs.__init__(self, pairs.name, pairs.split, pairs.captions, pairs.keys, pairs.loader, pairs.source)
        self.found, self.rule = pairs.found, pairs.rule
        self.classnames, self.labels, self.prompt_key, self.paths = classnames, labels, None, None

    @property
    def identity(self) -> str:
        return fingerprint(self.name, self.source, self.split, self.keys, self.captions, self.labels.tolist())

    def subset(self, indices: Sequence[int]) -> LabeledPairs:
        indices = [int(i) for i in indices]
        return LabeledPairs(ImageTextPairs.subset(self, indices), self.classnames, self.labels[indices])


def shard_files(spec: str | Path, split: str) -> list[str]:
    """The shards of a spec: a folder's sorted ``{split}-*.tar``, else every shard the spec names."""
    text = str(spec)
    if os.path.isdir(text):
        prefix = "*" if check_split(split, allow_all=True) == "all" else split
        files = sorted(glob.glob(os.path.join(glob.escape(text), f"{prefix}-[0-9][0-9][0-9][0-9][0-9][0-9].tar")))
        if not files:
            raise DatasetError(f"no {prefix}-NNNNNN.tar shards in {text}")
        return files
    try:
        return expand_shards(text)
    except ShardSpecError as error:
        raise DatasetError(f"shards {text}: {error}") from error


def _split_of(record: dict, url: str) -> str:
    """A sample's split: its record's, else its shard name's ``{split}-NNNNNN.tar`` prefix, else ``unknown``."""
    if record.get("split") in SPLITS:
        return record["split"]
    prefix = Path(url).name.rsplit("-", 1)[0]
    return prefix if prefix in SPLITS else "unknown"


def corpus_shards(spec: str | Path, split: str = "test") -> ImageTextPairs | LabeledImages:
    """The split's samples with an image: :class:`LabeledPairs` when every record has a ``class_name`` and every
    sample a caption, :class:`LabeledImages` when only the classes are complete, else image-caption pairs (of
    the samples with a caption)."""
    urls = shard_files(spec, check_split(split, allow_all=True))
    items: list[tuple[str, str, str | None, str | None, tuple[int, int]]] = []  # url, key, caption, class, span
    splits_seen: Counter[str] = Counter()
    for url in urls:
        try:
            for sample in iter_samples(url, read=lambda ext: ext in ("txt", "json")):
                image = sample.image_span("evaluation")
                if image is None:
                    continue
                record = sample.record()
                sample_split = _split_of(record, url)
                splits_seen[sample_split] += 1
                if split != "all" and sample_split != split:
                    continue
                caption = sample.text()
                class_name = record.get("class_name")
                items.append((url, sample.key, caption and caption.strip(), class_name or None, image[1]))
        except ShardError as error:
            raise DatasetError(str(error)) from error
    found = sum(splits_seen.values())
    if not found:
        raise DatasetError(f"the shards of {spec} hold no image samples")
    if split != "all" and splits_seen["unknown"]:
        raise DatasetError(
            f"{splits_seen['unknown']} sample(s) of {spec} name no split in their record or shard name: "
            "score them with --split all"
        )
    tally = ", ".join(f"{count} {name}" for name, count in sorted(splits_seen.items()))
    rule = (
        f"all splits, read from the records ({tally})"
        if split == "all"
        else f"split {split} read from the records: {len(items)} of {found} samples ({tally})"
    )
    if not items:
        raise DatasetError(f"the shards of {spec} hold no {split} samples (their records say: {tally})")
    source = fingerprint(*(u if is_url(u) else f"{Path(u).resolve()}:{os.path.getsize(u)}" for u in urls))

    def load(i: int) -> Image.Image:
        url, _, _, _, (offset, size) = items[i]
        try:
            with Image.open(io.BytesIO(read_member(url, offset, size))) as image:
                return image.convert("RGB")
        except (OSError, ShardError) as error:
            raise DatasetError(f"cannot read image {items[i][1]} of {url}: {error}") from error

    keys = [f"{Path(url).name}/{key}" for url, key, *_ in items]
    kept = [i for i, item in enumerate(items) if item[2]]
    pairs = ImageTextPairs("shards", split, [items[i][2] for i in kept], [keys[i] for i in kept], source=source,
                           loader=lambda j: load(kept[j]), found=found, rule=rule)  # fmt: skip
    if all(class_name for *_, class_name, _ in items):
        classnames = tuple(sorted({class_name for *_, class_name, _ in items}))
        labels = np.array([classnames.index(class_name) for *_, class_name, _ in items], dtype=np.int64)
        if len(kept) == len(items):
            return LabeledPairs(pairs, classnames, labels)
        return LabeledImages("shards", split, classnames, labels, keys, load, source, found=found, rule=rule)
    if not kept:
        raise DatasetError(f"the shards of {spec} hold no image+caption samples")
    return pairs
