"""The paper's classification benchmarks, read from their standard distributions on local disk.

* PCam: the Zenodo h5 files ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (``x``: N x 96 x 96 x 3
  uint8, ``y``: N x 1 x 1 x 1); label 1 = metastasis.
* LC25000: ``lung_image_sets/{lung_aca,lung_n,lung_scc}`` and ``colon_image_sets/{colon_aca,colon_n}`` (the
  archive's ``lung_colon_image_set`` folder or either subfolder). No official split: :func:`hash_split` of the path.
* TCGA-TIL: ``[pancancer/]{train,val,test}/{til-negative,til-positive}/*.png`` (Saltz et al. / Zenodo
  "TCGA-TILs" layout); without split folders the split is hashed.
* RSNA pneumonia: Kaggle's ``stage_2_train_labels.csv`` (patientId, x, y, width, height, Target; one row per box)
  beside ``stage_2_train_images/<patientId>.dcm``; a patient is pneumonia when any row has Target 1. The split is
  hashed by patientId (Kaggle's test labels are not public).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from biomedclip.evaluate.datasets.base import DatasetError, LabeledImages, fingerprint, hash_split, load_image
from biomedclip.evaluate.datasets.folders import check_split, class_folder_items, labeled_from_files
from biomedclip.evaluate.prompts import PAPER_PROMPTS

PCAM_SPLITS = {"train": "train", "val": "valid", "test": "test"}
LC25000_FOLDERS = {
    "lc25000_lung": ("lung_image_sets", ("lung_aca", "lung_n", "lung_scc")),
    "lc25000_colon": ("colon_image_sets", ("colon_aca", "colon_n")),
}
TIL_FOLDERS = ("til-negative", "til-positive")


def pcam(root: str | Path, split: str = "test") -> LabeledImages:
    """PatchCamelyon from its h5 files; images are read lazily from the h5 file (opened once per process)."""
    import h5py

    root = Path(root)
    stem = f"camelyonpatch_level_2_split_{PCAM_SPLITS[check_split(split)]}"
    x_path, y_path = root / f"{stem}_x.h5", root / f"{stem}_y.h5"
    if not x_path.is_file() or not y_path.is_file():
        raise DatasetError(f"PCam: expected {x_path.name} and {y_path.name} in {root}")
    with h5py.File(y_path, "r") as handle:
        labels = np.asarray(handle["y"]).reshape(-1).astype(np.int64)
    handles: dict[str, h5py.File] = {}

    def load(i: int) -> Image.Image:
        if "x" not in handles:
            handles["x"] = h5py.File(x_path, "r")
        return Image.fromarray(np.asarray(handles["x"]["x"][i])).convert("RGB")

    keys = [f"{split}/{i}" for i in range(labels.size)]
    source = fingerprint(x_path.resolve(), x_path.stat().st_size, y_path.stat().st_size)
    return LabeledImages("pcam", split, PAPER_PROMPTS["pcam"].classnames, labels, keys, load, source, "pcam")


def _lc25000(name: str, root: str | Path, split: str) -> LabeledImages:
    root = Path(root)
    subfolder, folders = LC25000_FOLDERS[name]
    base = next((p for p in (root / subfolder, root / "lung_colon_image_set" / subfolder, root) if p.is_dir()), None)
    if base is None or not all((base / f).is_dir() for f in folders):
        raise DatasetError(f"LC25000: expected {subfolder}/{{{','.join(folders)}}} under {root}")
    classnames = PAPER_PROMPTS[name].classnames
    items = class_folder_items(base, check_split(split), dict(zip(folders, classnames, strict=True)))
    return labeled_from_files(name, split, base, items, classnames, prompt_key=name)


def lc25000_lung(root: str | Path, split: str = "test") -> LabeledImages:
    """LC25000 lung: adenocarcinoma, benign tissue, squamous cell carcinoma (paper's class order)."""
    return _lc25000("lc25000_lung", root, split)


def lc25000_colon(root: str | Path, split: str = "test") -> LabeledImages:
    """LC25000 colon: adenocarcinoma, benign tissue."""
    return _lc25000("lc25000_colon", root, split)


def tcga_til(root: str | Path, split: str = "test") -> LabeledImages:
    """TCGA-TIL patches: ``til-negative`` -> "none", ``til-positive`` -> "tumor infiltrating lymphocytes"."""
    root = Path(root)
    if (root / "pancancer").is_dir():
        root = root / "pancancer"
    classnames = PAPER_PROMPTS["tcga_til"].classnames
    found = {p.name for p in root.rglob("til-*") if p.is_dir()} if root.is_dir() else set()
    if not set(TIL_FOLDERS) <= found:
        raise DatasetError(f"TCGA-TIL: expected [split/]{{{','.join(TIL_FOLDERS)}}} folders under {root}")
    items = class_folder_items(root, check_split(split), dict(zip(TIL_FOLDERS, classnames, strict=True)))
    return labeled_from_files("tcga_til", split, root, items, classnames, prompt_key="tcga_til")


def rsna_pneumonia(root: str | Path, split: str = "test") -> LabeledImages:
    """RSNA Pneumonia Detection (Kaggle stage 2 layout): per-patient normal vs pneumonia from DICOM."""
    root = Path(root)
    labels_csv = root / "stage_2_train_labels.csv"
    images = root / "stage_2_train_images"
    if not labels_csv.is_file() or not images.is_dir():
        raise DatasetError(f"RSNA: expected stage_2_train_labels.csv and stage_2_train_images/ in {root}")
    target: dict[str, int] = {}
    with labels_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                target[row["patientId"]] = max(target.get(row["patientId"], 0), int(row["Target"]))
            except (KeyError, ValueError) as error:
                raise DatasetError(f"{labels_csv}: bad row {row} ({error})") from error
    classnames = PAPER_PROMPTS["rsna_pneumonia"].classnames
    items = [
        (images / f"{patient}.dcm", classnames[value])
        for patient, value in sorted(target.items())
        if hash_split(patient) == check_split(split)
    ]
    missing = [str(path) for path, _ in items if not path.is_file()]
    if missing:
        raise DatasetError(f"RSNA: {len(missing)} DICOM files listed in the CSV are missing, e.g. {missing[0]}")
    return labeled_from_files(
        "rsna_pneumonia", split, root, items, classnames, prompt_key="rsna_pneumonia", loader=load_image
    )
