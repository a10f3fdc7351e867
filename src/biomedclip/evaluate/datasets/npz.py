"""MedMNIST-style ``.npz`` arrays: ``{split}_images`` (N, H, W[, C]) uint8 and ``{split}_labels`` (N[, 1])."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from biomedclip.evaluate.datasets.base import DatasetError, LabeledImages, fingerprint
from biomedclip.evaluate.datasets.folders import check_split
from biomedclip.labelled_folders import SPLITS, HashSplit

# Label names from MedMNIST v2's INFO table, for the files whose name starts with the key.
MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal or benign"),
}


def npz_dataset(
    path: str | Path,
    split: str = "test",
    hash_split: HashSplit | None = None,
    classnames: tuple[str, ...] | None = None,
) -> LabeledImages:
    """One split (or ``all`` present splits) of a MedMNIST-style archive; class names from
    :data:`MEDMNIST_CLASSES` or ``class <i>``. The archive's own splits are used (``hash_split`` is not)."""
    path = Path(path)
    check_split(split, allow_all=True)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    present = [s for s in SPLITS if f"{s}_images" in archive.files and f"{s}_labels" in archive.files]
    wanted = present if split == "all" else [split]
    if not present or not set(wanted) <= set(present):
        arrays = f"{split}_images/{split}_labels" if split != "all" else "<split>_images/<split>_labels"
        raise DatasetError(f"{path} has no {arrays} arrays (it holds {', '.join(archive.files)})")
    images = np.concatenate([archive[f"{s}_images"] for s in wanted])
    labels = np.concatenate([archive[f"{s}_labels"].reshape(len(archive[f"{s}_images"]), -1) for s in wanted])
    if labels.shape[1] != 1:
        raise DatasetError(f"{path}: multi-label labels (shape {labels.shape}) are not supported")
    labels = labels[:, 0].astype(np.int64)
    if classnames is None:
        known = next((v for k, v in MEDMNIST_CLASSES.items() if path.name.lower().startswith(k)), None)
        count = int(max(labels.max(initial=0), _max_label(archive)) + 1)
        classnames = known if known and len(known) >= count else tuple(f"class {i}" for i in range(count))

    def load(i: int) -> Image.Image:
        return Image.fromarray(images[i]).convert("RGB")

    keys = [f"{s}/{i}" for s in wanted for i in range(len(archive[f"{s}_images"]))]
    source = fingerprint(path.resolve(), path.stat().st_size, path.stat().st_mtime_ns)
    found = sum(len(archive[f"{s}_labels"]) for s in present)
    rule = "all splits of the archive" if split == "all" else f"official split {split}"
    return LabeledImages("npz", split, tuple(classnames), labels, keys, load, source, None, found, rule)


def _max_label(archive) -> int:
    """Largest label over every split of the archive (so all splits agree on the class count)."""
    return max(int(archive[k].max()) for k in archive.files if k.endswith("_labels"))
