"""Labelled image folders: the one reader behind ``imagefolder:`` in ``corpus build``, ``eval`` and training.

Two layouts are understood (folder names compared case-insensitively):

* **split folders**: ``ROOT/<split>/<class>/**/<image>``, where ``<split>`` is one of :data:`SPLIT_ALIASES`
  (``train``/``training``, ``val``/``valid``/``validation``/``dev``, ``test``/``testing``). The folder is the
  split; a dataset may ship only some splits (Kaggle's ``Training/`` + ``Testing/``). Without a training folder
  (only ``Testing/``, say) there is nothing to train on, so the images of the split folders present are split by
  the hash rule below, and every command says so.
* **class folders only**: ``ROOT/<class>/**/<image>``; each image's split is :meth:`HashSplit.of` its key
  (its path below ``ROOT``, or below its split folder: ``<class>/<file>``), a pure function of that key, the
  ratios and the salt, so the same folder gives the same split in every command that uses the same ratios
  (default 70/10/20), whether it is given as ``ROOT`` or as ``ROOT/Testing``.

The class of an image is its top class folder's name. Images directly under ``ROOT`` (or ``ROOT/<split>``) have no
class and are not read. A layout that cannot be read as either is an :class:`~biomedclip.errors.InputError`
naming the expected layout: class folders that look like split folders (``test_set``, a ``Testing`` folder
inside ``Training``), split folders mixed with class folders, two folders for one split, or fewer than two
classes. A root that is itself named like a split (``ROOT/Testing`` given as the folder) holds class folders, so
it is split by hash too; :meth:`LabelledFolder.rule` says so, and ``all`` scores every image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from biomedclip.corpus.split import article_hash
from biomedclip.errors import InputError
from biomedclip.shards import IMAGE_EXTENSIONS

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing"),
}
IMAGE_SUFFIXES = frozenset({*(f".{ext}" for ext in IMAGE_EXTENSIONS), ".dcm", ".dicom"})
LAYOUT = (
    "ROOT/<class>/<image> (split by hash) or ROOT/<split>/<class>/<image> with split folders named "
    "train|training, val|valid|validation|dev, test|testing"
)
# A folder name read as a split, not a class: a split word, optionally followed by one of the filler words.
_SPLIT_WORDS = frozenset({a for aliases in SPLIT_ALIASES.values() for a in aliases} | {"validate", "eval", "holdout"})
_FILLER_WORDS = frozenset({"set", "sets", "data", "dataset", "images", "imgs", "img", "split", "folder", "samples"})


def split_of_folder(name: str) -> str | None:
    """The split a folder name stands for (``Testing`` -> ``test``), or ``None``."""
    lowered = name.lower()
    return next((split for split, aliases in SPLIT_ALIASES.items() if lowered in aliases), None)


def looks_like_split(name: str) -> bool:
    """Whether a folder name reads as a split (``Testing``, ``test_set``, ``TrainingData``), not a class."""
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower()
    first, *rest = re.findall(r"[a-z]+", words) or [""]
    return first in _SPLIT_WORDS and all(word in _FILLER_WORDS for word in rest)


@dataclass(frozen=True)
class HashSplit:
    """Train/val/test shares (normalised) and the salt of the hash that assigns an image to a split."""

    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    salt: str = "biomedclip-folder-split-v1"

    def __post_init__(self) -> None:
        shares = (self.train, self.val, self.test)
        if min(shares) < 0 or sum(shares) <= 0:
            raise InputError(f"split ratios must be >= 0 and not all 0, got train/val/test = {shares}")

    @classmethod
    def parse(cls, text: str) -> HashSplit:
        """``"0.7,0.1,0.2"`` (TRAIN,VAL,TEST shares, as the CLIs take them) as a ``HashSplit``."""
        try:
            shares = [float(v) for v in text.split(",")]
        except ValueError:
            shares = []
        if len(shares) != 3:
            raise InputError(f"expected three shares TRAIN,VAL,TEST >= 0 such as 0.7,0.1,0.2, got {text!r}")
        return cls(*shares)

    def of(self, key: str) -> str:
        """``train``, ``val`` or ``test`` for an image key (a uniform number from SHA-256 of salt and key)."""
        u = article_hash(key, self.salt)
        total = self.train + self.val + self.test
        return "train" if u < self.train / total else "val" if u < (self.train + self.val) / total else "test"

    def describe(self) -> str:
        total = self.train + self.val + self.test
        return "/".join(f"{100 * s / total:g}" for s in (self.train, self.val, self.test))


DEFAULT_HASH_SPLIT = HashSplit()


@dataclass(frozen=True)
class LabelledImage:
    """One image: its file, its class folder name, its split and its key (its path below ``ROOT``, posix)."""

    path: Path
    folder: str
    split: str
    key: str


@dataclass(frozen=True)
class LabelledFolder:
    """Every image of a labelled folder with its class and split (see the module docstring)."""

    root: Path
    classes: tuple[str, ...]  # class folder names, sorted
    images: tuple[LabelledImage, ...]
    split_folders: dict[str, str]  # split -> folder name of the split folders present, empty without any
    hash_split: HashSplit
    hashed: bool = False  # splits come from the hash rule: no split folders, or none for training

    def select(self, split: str) -> list[LabelledImage]:
        """The images of ``split`` (``train``, ``val``, ``test``) or every image (``all``)."""
        if split == "all":
            return list(self.images)
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}: use one of {', '.join(SPLITS)} or all")
        if not self.hashed and split not in self.split_folders:
            found = ", ".join(f"{s} ({f}/)" for s, f in self.split_folders.items())
            raise InputError(f"{self.root} has no {split} split folder (found {found}); expected {LAYOUT}")
        return [image for image in self.images if image.split == split]

    def rule(self, split: str) -> str:
        """How ``split`` was chosen, for results and printed counts: ``split test by hash 70/10/20``."""
        if split == "all":
            return "all images"
        if not self.hashed:
            return f"split {split} from folder {self.split_folders[split]}/"
        return f"split {split} by hash {self.hash_split.describe()}{self.hash_note()}"

    def hash_note(self) -> str:
        """Why a folder with split-like names was split by hash (empty for plain class folders)."""
        if self.split_folders:
            given = ", ".join(f"{name}/" for name in self.split_folders.values())
            return f" of the images in {given} (no training folder)"
        if split_of_folder(self.root.name):
            return f" of {self.root.name}/ (named like a split, but it holds the class folders)"
        return ""

    def describe(self) -> str:
        """``1,123 images, 4 classes; split by hash 70/10/20 ...: train 752, val 118, test 253``."""
        counts = {split: sum(1 for image in self.images if image.split == split) for split in SPLITS}
        how = (
            f"split by hash {self.hash_split.describe()}{self.hash_note()}"
            if self.hashed
            else "split by folder " + ", ".join(f"{name}/ = {split}" for split, name in self.split_folders.items())
        )
        tally = ", ".join(f"{split} {count:,}" for split, count in counts.items())
        return f"{len(self.images):,} images, {len(self.classes)} classes; {how}: {tally}"


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_labelled_folder(
    root: str | Path,
    hash_split: HashSplit = DEFAULT_HASH_SPLIT,
    *,
    folders: Mapping[str, str] | None = None,
    min_classes: int = 2,
) -> LabelledFolder:
    """Read ``root`` in either layout; ``folders`` restricts the classes to these folder names (others ignored).

    Raises:
        InputError: a missing root or a layout that is not one of the two (the message names the expected one).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"labelled image folder {root} does not exist")
    top = _dirs(root)
    by_split: dict[str, list[Path]] = {}
    for folder in top:
        split = split_of_folder(folder.name)
        if split:
            by_split.setdefault(split, []).append(folder)
    doubled = {s: [f.name for f in fs] for s, fs in by_split.items() if len(fs) > 1}
    if doubled:
        raise InputError(f"{root}: more than one folder for one split {doubled}; expected {LAYOUT}")
    if by_split:
        others = [f.name for f in top if not split_of_folder(f.name)]
        if others:
            raise InputError(f"{root} mixes split folders and other folders {others}; expected {LAYOUT}")
        groups = [(split, by_split[split][0]) for split in SPLITS if split in by_split]
    else:
        groups = [(None, root)]
    images = []
    hashed = "train" not in by_split  # no split folders, or none to train on
    for split, base in groups:
        for class_dir in _dirs(base):
            if looks_like_split(class_dir.name):
                where = f"{base.name}/{class_dir.name}" if split else class_dir.name
                raise InputError(f"{root}: folder {where}/ looks like a split, not a class; expected {LAYOUT}")
            if folders is not None and class_dir.name not in folders:
                continue
            for path in _images(class_dir):
                key = path.relative_to(root).as_posix()
                # hashed on the path below the split folder: ROOT and ROOT/Testing split its images alike
                chosen = hash_split.of(path.relative_to(base).as_posix()) if hashed else split
                images.append(LabelledImage(path, class_dir.name, chosen, key))
    classes = tuple(sorted({image.folder for image in images}))
    if len(classes) < min_classes:
        found = f"only {', '.join(classes)}" if classes else "no class folder with images"
        raise InputError(f"{root}: {found}; a labelled folder needs at least {min_classes} classes: {LAYOUT}")
    split_folders = {split: by_split[split][0].name for split, _ in groups if split}
    return LabelledFolder(root, classes, tuple(images), split_folders, hash_split, hashed)
