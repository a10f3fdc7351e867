"""Dataset registry: ``load_dataset("NAME:PATH" or PATH, split)`` for every adapter.

| name | layout | task |
|---|---|---|
| ``imagefolder`` | ``root/[split/]<class>/<image or .dcm>`` (:mod:`biomedclip.labelled_folders`) | classification |
| ``dicom`` | same as imagefolder, DICOM files (windowing: :mod:`.dicom`) | classification |
| ``csv`` | ``file.csv`` with ``path,label[,split]`` | classification |
| ``npz`` / ``medmnist`` | MedMNIST ``{split}_images`` / ``{split}_labels`` | classification |
| ``pcam``, ``lc25000_lung``, ``lc25000_colon``, ``tcga_til``, ``rsna_pneumonia`` | :mod:`.benchmarks` | classif. |
| ``shards`` | corpus ``{split}-NNNNNN.tar`` shards or a shard spec (:mod:`.shards`) | retrieval (labelled: classif.) |
| ``vqa_rad``, ``slake`` | see :mod:`.vqa_data` | VQA |

A bare path is detected: ``.npz`` -> npz, ``.csv`` -> csv, a folder holding ``*-NNNNNN.tar`` or a ``.tar`` spec
(brace range, glob) -> shards, the VQA-RAD JSON -> vqa_rad, SLAKE's ``train.json`` -> slake, PCam h5 -> pcam,
any other folder -> imagefolder.

Splits: ``train``, ``val``, ``test``, and ``all`` (every image) for every adapter but the VQA ones (trained on
train); shards read each sample's split from its record. Datasets without an official split (labelled folders
without split folders, CSVs without a split column, LC25000) use the shared hash rule whose ratios ``hash_split``
sets; LC25000's zero-shot default is ``all``, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from biomedclip.evaluate.datasets.base import (
    DatasetError,
    ImageTextPairs,
    LabeledImages,
    VQAQuestions,
    load_image,
)
from biomedclip.evaluate.datasets.benchmarks import lc25000_colon, lc25000_lung, pcam, rsna_pneumonia, tcga_til
from biomedclip.evaluate.datasets.folders import csv_dataset, image_folder
from biomedclip.evaluate.datasets.npz import npz_dataset
from biomedclip.evaluate.datasets.shards import corpus_shards
from biomedclip.evaluate.datasets.vqa_data import VQA_RAD_JSON, slake, vqa_rad
from biomedclip.labelled_folders import HashSplit

Dataset = LabeledImages | ImageTextPairs | VQAQuestions

DATASETS: dict[str, Callable[..., Dataset]] = {
    "csv": csv_dataset,
    "dicom": image_folder,
    "imagefolder": image_folder,
    "lc25000_colon": lc25000_colon,
    "lc25000_lung": lc25000_lung,
    "medmnist": npz_dataset,
    "npz": npz_dataset,
    "pcam": pcam,
    "rsna_pneumonia": rsna_pneumonia,
    "shards": corpus_shards,
    "slake": slake,
    "tcga_til": tcga_til,
    "vqa_rad": vqa_rad,
}
# Adapters that read ``all`` and take the ratios of the shared hash rule (``hash_split=``).
LABELLED = frozenset({"csv", "dicom", "imagefolder", "lc25000_colon", "lc25000_lung", "medmnist", "npz", "pcam"})
LABELLED |= {"rsna_pneumonia", "tcga_til"}
# The paper scores these on every image (no official split); other datasets default to their test split.
ZEROSHOT_ALL = frozenset({"lc25000_colon", "lc25000_lung"})


def list_datasets() -> list[str]:
    """Registered adapter names."""
    return sorted(DATASETS)


def detect_adapter(path: Path) -> str:
    """The adapter for a bare path (see the module docstring)."""
    if path.suffix.lower() == ".npz":
        return "npz"
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.name.endswith(".tar"):
        return "shards"
    if path.is_dir():
        if any(path.glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].tar")):
            return "shards"
        if (path / VQA_RAD_JSON).is_file():
            return "vqa_rad"
        if (path / "train.json").is_file() and (path / "imgs").is_dir():
            return "slake"
        if any(path.glob("camelyonpatch_level_2_split_*_x.h5")):
            return "pcam"
        return "imagefolder"
    raise DatasetError(f"dataset {path} does not exist or has no known layout (name it as ADAPTER:PATH)")


def parse_dataset_spec(spec: str) -> tuple[str, Path]:
    """``"NAME:PATH"`` -> (NAME, PATH); a bare path -> (detected adapter, PATH)."""
    name, sep, rest = spec.partition(":")
    if sep and name in DATASETS:
        return name, Path(rest)
    path = Path(spec)
    return detect_adapter(path), path


def default_split(spec: str, task: str) -> str:
    """The split a task scores when none is given: ``all`` for zero-shot on LC25000, else ``test``."""
    return "all" if task == "zeroshot" and parse_dataset_spec(spec)[0] in ZEROSHOT_ALL else "test"


def load_dataset(spec: str, split: str = "test", hash_split: HashSplit | None = None) -> Dataset:
    """Load one split of a dataset given as ``NAME:PATH`` or a bare path (``hash_split``: ratios of the hash rule)."""
    name, path = parse_dataset_spec(spec)
    if name in LABELLED:
        return DATASETS[name](path, split, hash_split or HashSplit())
    return DATASETS[name](path, split)


__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "HashSplit",
    "ImageTextPairs",
    "LabeledImages",
    "VQAQuestions",
    "default_split",
    "list_datasets",
    "load_dataset",
    "load_image",
    "parse_dataset_spec",
]
