"""What every dataset adapter returns: labelled images, image-text pairs or VQA questions, all loaded lazily."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from biomedclip.errors import InputError
from biomedclip.labelled_folders import SPLITS

__all__ = ["SPLITS", "DatasetError", "ImageTextPairs", "LabeledImages", "VQAQuestions", "fingerprint", "load_image"]


class DatasetError(InputError):
    """A dataset that cannot be found or read in the expected layout; the message says what was expected."""


def load_image(path: str | Path) -> Image.Image:
    """An RGB image from a regular image file or a DICOM file (``.dcm``, windowed, see :mod:`.dicom`)."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):
        from biomedclip.evaluate.datasets.dicom import read_dicom

        return read_dicom(path)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise DatasetError(f"cannot read image {path}: {error}") from error


def fingerprint(*parts: object) -> str:
    """A short stable hash of the parts' string forms (used as the dataset identity in cache keys)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


@dataclass
class LabeledImages:
    """Images with integer labels in ``[0, len(classnames))``; ``images[i]`` loads the i-th as RGB PIL."""

    name: str
    split: str
    classnames: tuple[str, ...]
    labels: np.ndarray
    keys: list[str]
    loader: Callable[[int], Image.Image]
    source: str = ""
    prompt_key: str | None = None  # entry of PAPER_PROMPTS used for zero-shot, when the paper covers it
    found: int | None = None  # images in the whole dataset (every split), when known
    rule: str = ""  # how this split was chosen: "split test by hash 70/10/20", "official split", "all images"
    paths: list[Path] | None = None  # the source file of each item, when items are files (for leakage checks)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Image.Image:
        return self.loader(index)

    @property
    def identity(self) -> str:
        """Stable id of this split's content (adapter, source, split, item keys and labels)."""
        return fingerprint(self.name, self.source, self.split, self.keys, self.labels.tolist())

    def subset(self, indices: Sequence[int]) -> LabeledImages:
        """The same dataset restricted to ``indices`` (in that order)."""
        indices = [int(i) for i in indices]
        return LabeledImages(
            self.name,
            self.split,
            self.classnames,
            self.labels[indices],
            [self.keys[i] for i in indices],
            lambda i, base=self.loader, idx=indices: base(idx[i]),
            self.source,
            self.prompt_key,
            self.found,
            self.rule,
            None if self.paths is None else [self.paths[i] for i in indices],
        )


@dataclass
class ImageTextPairs:
    """Image-caption pairs for retrieval; ``pairs[i]`` loads the i-th image."""

    name: str
    split: str
    captions: list[str]
    keys: list[str]
    loader: Callable[[int], Image.Image]
    source: str = ""
    found: int | None = None  # samples read before the split was chosen, when known
    rule: str = ""  # how the split was chosen: "split test read from the records: 98 of 448 samples"

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Image.Image:
        return self.loader(index)

    @property
    def identity(self) -> str:
        return fingerprint(self.name, self.source, self.split, self.keys, self.captions)

    def subset(self, indices: Sequence[int]) -> ImageTextPairs:
        indices = [int(i) for i in indices]
        return ImageTextPairs(
            self.name,
            self.split,
            [self.captions[i] for i in indices],
            [self.keys[i] for i in indices],
            lambda i, base=self.loader, idx=indices: base(idx[i]),
            self.source,
            self.found,
            self.rule,
        )


@dataclass
class VQAQuestions:
    """Questions about images; ``answer_types[i]`` is ``"CLOSED"`` (yes/no, options) or ``"OPEN"``."""

    name: str
    split: str
    image_keys: list[str]
    questions: list[str]
    answers: list[str]
    answer_types: list[str]
    image_loader: Callable[[str], Image.Image]
    source: str = ""

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def identity(self) -> str:
        return fingerprint(self.name, self.source, self.split, self.image_keys, self.questions, self.answers)
