"""MedMNIST-style ``.npz`` arrays: ``{split}_images`` (N, H, W[, C]) uint8 and ``{split}_labels`` (N[, 1])."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from biomedclip.evaluate.datasets.base import DatasetError, LabeledImages, fingerprint
from biomedclip.evaluate.datasets.folders import check_split

# Label names from MedMNIST v2's INFO table, for the files whose name starts with the key.
MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal or benign"),
}


def npz_dataset(path: str | Path, split: str = "test", classnames: tuple[str, ...] | None = None) -> LabeledImages:
    """One split of a MedMNIST-style archive; class names from :data:`MEDMNIST_CLASSES` or ``class <i>``."""
    path = Path(path)
    check_split(split)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    key_images, key_labels = f"{split}_images", f"{split}_labels"
    if key_images not in archive.files or key_labels not in archive.files:
        raise DatasetError(f"{path} has no {key_images}/{key_labels} arrays (it holds {', '.join(archive.files)})")
    images = archive[key_images]
    labels = archive[key_labels].reshape(len(images), -1)
    if labels.shape[1] != 1:
        raise DatasetError(f"{path}: multi-label {key_labels} (shape {labels.shape}) is not supported")
    labels = labels[:, 0].astype(np.int64)
    if classnames is None:
        known = next((v for k, v in MEDMNIST_CLASSES.items() if path.name.lower().startswith(k)), None)
        count = int(max(labels.max(initial=0), _max_label(archive)) + 1)
        classnames = known if known and len(known) >= count else tuple(f"class {i}" for i in range(count))

    def load(i: int) -> Image.Image:
        return Image.fromarray(images[i]).convert("RGB")

    keys = [f"{split}/{i}" for i in range(len(images))]
    source = fingerprint(path.resolve(), path.stat().st_size, path.stat().st_mtime_ns)
    return LabeledImages("npz", split, tuple(classnames), labels, keys, load, source)


def _max_label(archive) -> int:
    """Largest label over every split of the archive (so all splits agree on the class count)."""
    return max(int(archive[k].max()) for k in archive.files if k.endswith("_labels"))
