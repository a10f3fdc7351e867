"""Corpus shards (``{split}-NNNNNN.tar``, read through :mod:`biomedclip.shards`) as an evaluation dataset.

``shards:DIR`` takes the split's shards of a folder; any other spec uses the shard spec grammar
(``shards:DIR/test-{000000..000003}.tar``, globs, ``::`` lists). Shards whose every record names a class (built
from ``imagefolder:``) are labelled image-caption pairs, for classification and retrieval alike (classes = the
sorted class folder names); others are image-caption pairs for retrieval. Captions and records are read once,
images lazily, by seeking into the tar.
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from biomedclip.evaluate.datasets.base import DatasetError, ImageTextPairs, LabeledImages, fingerprint
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
        self.classnames, self.labels, self.prompt_key = classnames, labels, None

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
        files = sorted(glob.glob(os.path.join(glob.escape(text), f"{check_split(split)}-*.tar")))
        if not files:
            raise DatasetError(f"no {split}-NNNNNN.tar shards in {text}")
        return files
    try:
        return expand_shards(text)
    except ShardSpecError as error:
        raise DatasetError(f"shards {text}: {error}") from error


def corpus_shards(spec: str | Path, split: str = "test") -> ImageTextPairs | LabeledImages:
    """The split's samples with an image: :class:`LabeledPairs` when every record has a ``class_name`` and every
    sample a caption, :class:`LabeledImages` when only the classes are complete, else image-caption pairs (of
    the samples with a caption)."""
    urls = shard_files(spec, split)
    items: list[tuple[str, str, str | None, str | None, tuple[int, int]]] = []  # url, key, caption, class, span
    for url in urls:
        try:
            for sample in iter_samples(url, read=lambda ext: ext in ("txt", "json")):
                image = sample.image_span("evaluation")
                if image is None:
                    continue
                caption = sample.text()
                class_name = sample.record().get("class_name")
                items.append((url, sample.key, caption and caption.strip(), class_name or None, image[1]))
        except ShardError as error:
            raise DatasetError(str(error)) from error
    if not items:
        raise DatasetError(f"the shards of {spec} hold no image samples")
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
                           loader=lambda j: load(kept[j]))  # fmt: skip
    if all(class_name for *_, class_name, _ in items):
        classnames = tuple(sorted({class_name for *_, class_name, _ in items}))
        labels = np.array([classnames.index(class_name) for *_, class_name, _ in items], dtype=np.int64)
        if len(kept) == len(items):
            return LabeledPairs(pairs, classnames, labels)
        return LabeledImages("shards", split, classnames, labels, keys, load, source)
    if not kept:
        raise DatasetError(f"the shards of {spec} hold no image+caption samples")
    return pairs
