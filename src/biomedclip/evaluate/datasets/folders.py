"""Labelled images from folders (:mod:`biomedclip.labelled_folders`, the reader ``corpus build`` uses too) and
from CSV files (path, label[, split])."""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from biomedclip.evaluate.datasets.base import SPLITS, DatasetError, LabeledImages, load_image
from biomedclip.labelled_folders import DEFAULT_HASH_SPLIT, HashSplit, read_labelled_folder, split_of_folder


def check_split(split: str, *, allow_all: bool = False) -> str:
    """``split`` if it is one of train/val/test (or ``all`` when allowed), else a :class:`DatasetError`."""
    if split not in SPLITS and not (allow_all and split == "all"):
        choices = ", ".join(SPLITS + (("all",) if allow_all else ()))
        raise DatasetError(f"unknown split {split!r}: use one of {choices}")
    return split


def labeled_from_files(
    name: str,
    split: str,
    source: Path,
    items: list[tuple[Path, str]],
    classnames: tuple[str, ...],
    *,
    prompt_key: str | None = None,
    loader: Callable[[Path], object] = load_image,
    found: int | None = None,
    rule: str = "",
) -> LabeledImages:
    """Build :class:`LabeledImages` from ``(file, label)`` pairs (labels must be in ``classnames``)."""
    if not items:
        how = f" ({rule}, of {found} images)" if rule and found else ""
        raise DatasetError(f"{name}: no images for split {split!r} under {source}{how}")
    index = {c: i for i, c in enumerate(classnames)}
    unknown = sorted({label for _, label in items} - set(index))
    if unknown:
        raise DatasetError(f"{name}: labels {unknown} are not among the classes {list(classnames)}")
    paths = [path for path, _ in items]
    labels = np.array([index[label] for _, label in items], dtype=np.int64)
    keys = [path.relative_to(source).as_posix() if path.is_relative_to(source) else str(path) for path in paths]
    return LabeledImages(
        name,
        split,
        classnames,
        labels,
        keys,
        lambda i: loader(paths[i]),
        str(source.resolve()),
        prompt_key,
        found if found is not None else len(items),
        rule,
        paths,
    )


def folder_dataset(
    name: str,
    root: Path,
    split: str,
    hash_split: HashSplit,
    *,
    folders: Mapping[str, str] | None = None,
    prompt_key: str | None = None,
) -> LabeledImages:
    """One split of a labelled folder; ``folders`` maps class folder names to class names (others are ignored).

    Class order: the values of ``folders`` in order, else the sorted folder names.
    """
    data = read_labelled_folder(root, hash_split, folders=folders)
    chosen = data.select(check_split(split, allow_all=True))
    classnames = tuple(folders.values()) if folders is not None else data.classes
    items = [(image.path, folders[image.folder] if folders is not None else image.folder) for image in chosen]
    return labeled_from_files(
        name, split, root, items, classnames, prompt_key=prompt_key, found=len(data.images), rule=data.rule(split)
    )


def image_folder(root: str | Path, split: str = "test", hash_split: HashSplit = DEFAULT_HASH_SPLIT) -> LabeledImages:
    """``root/[<split>/]<class>/<image>`` (:mod:`biomedclip.labelled_folders`); classes are the sorted folder names."""
    return folder_dataset("imagefolder", Path(root), split, hash_split)


def csv_dataset(path: str | Path, split: str = "test", hash_split: HashSplit = DEFAULT_HASH_SPLIT) -> LabeledImages:
    """CSV with a header holding ``path`` and ``label`` columns and optionally ``split``.

    Relative paths are resolved against the CSV's folder. Class names are the sorted distinct labels (as
    strings; numeric labels sort numerically). The ``split`` column takes the split-folder aliases
    (``training``, ``dev``, ``Testing``...); rows without it go to splits by ``hash_split`` of their ``path``.
    """
    path = Path(path)
    check_split(split, allow_all=True)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise DatasetError(f"cannot read CSV {path}: {error}") from error
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DatasetError(f"{path}: expected a header with 'path' and 'label' columns (and optional 'split')")
    labels = sorted({row["label"] for row in rows}, key=lambda v: (not v.lstrip("-").isdigit(), _num(v), v))
    if len(labels) < 2:
        raise DatasetError(f"{path}: only the label {labels}; a labelled dataset needs at least 2 classes")
    items = []
    for row in rows:
        given = row.get("split")
        row_split = split_of_folder(given) if given else hash_split.of(row["path"])
        if given and row_split is None:
            raise DatasetError(f"{path}: unknown split {given!r} in row {row}; use train, val or test")
        if split in ("all", row_split):
            file = Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"]
            items.append((file, row["label"]))
    how = "from the split column" if "split" in rows[0] else f"by hash {hash_split.describe()}"
    rule = "all rows" if split == "all" else f"split {split} {how}"
    return labeled_from_files("csv", split, path.parent, items, tuple(labels), found=len(rows), rule=rule)


def _num(value: str) -> int:
    return int(value) if value.lstrip("-").isdigit() else 0
