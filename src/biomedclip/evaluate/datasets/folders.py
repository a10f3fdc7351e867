"""Labelled images from folders (class = folder name) and from CSV files (path, label[, split])."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from biomedclip.evaluate.datasets.base import SPLITS, DatasetError, LabeledImages, hash_split, load_image
from biomedclip.shards import IMAGE_EXTENSIONS

IMAGE_SUFFIXES = frozenset({*(f".{ext}" for ext in IMAGE_EXTENSIONS), ".dcm", ".dicom"})
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "valid", "validation", "validate"), "test": ("test",)}


def check_split(split: str) -> str:
    """``split`` if it is one of train/val/test, else a :class:`DatasetError`."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return split


def split_folder(root: Path, split: str) -> Path | None:
    """``root/<split>`` (or an alias such as ``valid``) when the dataset ships split folders, else ``None``."""
    for alias in SPLIT_ALIASES[check_split(split)]:
        if (root / alias).is_dir():
            return root / alias
    return None


def image_files(folder: Path) -> list[Path]:
    """Every image file below ``folder`` (recursive, sorted)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def labeled_from_files(
    name: str,
    split: str,
    source: Path,
    items: list[tuple[Path, str]],
    classnames: tuple[str, ...],
    *,
    prompt_key: str | None = None,
    loader: Callable[[Path], object] = load_image,
) -> LabeledImages:
    """Build :class:`LabeledImages` from ``(file, class folder/label)`` pairs (labels must be in ``classnames``)."""
    if not items:
        raise DatasetError(f"{name}: no images for split {split!r} under {source}")
    index = {c: i for i, c in enumerate(classnames)}
    unknown = sorted({label for _, label in items} - set(index))
    if unknown:
        raise DatasetError(f"{name}: labels {unknown} are not among the classes {list(classnames)}")
    paths = [path for path, _ in items]
    labels = np.array([index[label] for _, label in items], dtype=np.int64)
    keys = [str(path.relative_to(source)) if path.is_relative_to(source) else str(path) for path in paths]
    return LabeledImages(
        name, split, classnames, labels, keys, lambda i: loader(paths[i]), str(source.resolve()), prompt_key
    )


def class_folder_items(root: Path, split: str, folders: dict[str, str] | None = None) -> list[tuple[Path, str]]:
    """``(image, class)`` pairs from ``root[/split]/<class folder>/**``.

    Without split folders, images are assigned to splits by :func:`hash_split` of their relative path.
    ``folders`` maps folder names to class names (others are ignored); by default every folder is a class.
    """
    base = split_folder(root, split)
    hashed = base is None
    base = base or root
    items = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        if hashed and folder.name.lower() in {a for aliases in SPLIT_ALIASES.values() for a in aliases}:
            continue
        if folders is not None and folder.name not in folders:
            continue
        label = folders[folder.name] if folders is not None else folder.name
        for path in image_files(folder):
            if not hashed or hash_split(str(path.relative_to(root))) == split:
                items.append((path, label))
    return items


def image_folder(root: str | Path, split: str = "test") -> LabeledImages:
    """ImageFolder layout: ``root/[train|val|test/]<class>/<image>``; classes are the sorted folder names."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist")
    items = class_folder_items(root, check_split(split))
    classnames = tuple(sorted({label for _, label in items}))
    return labeled_from_files("imagefolder", split, root, items, classnames)


def csv_dataset(path: str | Path, split: str = "test") -> LabeledImages:
    """CSV with a header holding ``path`` and ``label`` columns and optionally ``split``.

    Relative paths are resolved against the CSV's folder. Class names are the sorted distinct labels (as
    strings; numeric labels sort numerically). Without a ``split`` column, rows go to splits by :func:`hash_split`.
    """
    path = Path(path)
    check_split(split)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise DatasetError(f"cannot read CSV {path}: {error}") from error
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DatasetError(f"{path}: expected a header with 'path' and 'label' columns (and optional 'split')")
    labels = sorted({row["label"] for row in rows}, key=lambda v: (not v.lstrip("-").isdigit(), _num(v), v))
    items = []
    for row in rows:
        row_split = row.get("split") or hash_split(row["path"])
        if row_split.lower() in SPLIT_ALIASES[split]:
            file = Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"]
            items.append((file, row["label"]))
    return labeled_from_files("csv", split, path.parent, items, tuple(labels))


def _num(value: str) -> int:
    return int(value) if value.lstrip("-").isdigit() else 0
