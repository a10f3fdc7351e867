"""The paper's classification benchmarks, read from their public releases on local disk.

* **PCam**: the Zenodo h5 files ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (``x``: N x 96 x 96 x 3
  uint8, ``y``: N x 1 x 1 x 1); label 1 = metastasis. Official splits (262,144 / 32,768 / 32,768).
* **LC25000** (Borkowski et al., 2019): ``lung_image_sets/{lung_aca,lung_n,lung_scc}`` and
  ``colon_image_sets/{colon_aca,colon_n}`` (the archive's ``lung_colon_image_set`` folder or either subfolder),
  5,000 images per class. There is no official split: the paper scores zero-shot on every image (``all``, the
  zero-shot default here); ``train``/``val``/``test`` (for the linear probe) come from the shared hash rule of
  :mod:`biomedclip.labelled_folders` (70/10/20 unless set).
* **TCGA-TIL**: the paper's set is the TCGA **LUAD** patches of the TCGA-TILs release (Abousamra et al., 2022;
  Zenodo record 6604094, ``TCGA-TILs/images-tcga-tils/<study>/{train,val,test}/{til-negative,til-positive}/*.png``);
  the paper reports 2,480 patches with 5.9 % positive and does not publish its file list. We read the
  ``luad`` study folder and its official split folders (zero-shot default: ``test``); the printed count and
  majority-class rate show whether a copy matches the paper's. ``tcga_til:DIR`` takes the release root
  (``TCGA-TILs/``, ``images-tcga-tils/``) or a study folder itself (``.../luad``; another study, e.g.
  ``pancancer``, is read as given and is not the paper's set).
* **RSNA Pneumonia** (Kaggle 2018, stage 2): ``stage_2_train_labels.csv`` (patientId, x, y, width, height, Target;
  one row per box) beside ``stage_2_train_images/<patientId>.dcm``; a patient is pneumonia when any row has
  Target 1. Kaggle's test labels are not public, so the paper's 18,678 / 4,003 / 9,069 split cannot be rebuilt
  exactly (the public labels cover 26,684 patients, fewer than 31,750, and the paper's list is not published).
  We order the patients by SHA-256 of ``rsna-v1:<patientId>`` and take the first ``round(N * 18678 / 26684)``
  as train (18,678 of the full release), the next ``round(N * 4003 / 26684)`` as val (4,003) and the rest as
  test (4,003 of the full release, not 9,069).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from biomedclip.evaluate.datasets.base import DatasetError, LabeledImages, fingerprint
from biomedclip.evaluate.datasets.folders import check_split, folder_dataset, labeled_from_files
from biomedclip.evaluate.prompts import PAPER_PROMPTS
from biomedclip.labelled_folders import DEFAULT_HASH_SPLIT, HashSplit

PCAM_SPLITS = {"train": "train", "val": "valid", "test": "test"}
LC25000_FOLDERS = {
    "lc25000_lung": ("lung_image_sets", ("lung_aca", "lung_n", "lung_scc")),
    "lc25000_colon": ("colon_image_sets", ("colon_aca", "colon_n")),
}
TIL_FOLDERS = ("til-negative", "til-positive")
TIL_STUDY = "luad"
RSNA_PAPER = {"train": 18_678, "val": 4_003, "public_patients": 26_684}


def pcam(root: str | Path, split: str = "test", hash_split: HashSplit = DEFAULT_HASH_SPLIT) -> LabeledImages:
    """PatchCamelyon from its h5 files (``all``: the three official splits in train, val, test order); images
    are read lazily from the h5 files (each opened once per process)."""
    import h5py

    root = Path(root)
    wanted = list(PCAM_SPLITS) if check_split(split, allow_all=True) == "all" else [split]
    parts: list[tuple[str, Path, np.ndarray]] = []  # split, x file, labels
    found = 0
    for name, file_part in PCAM_SPLITS.items():
        stem = f"camelyonpatch_level_2_split_{file_part}"
        x_path, y_path = root / f"{stem}_x.h5", root / f"{stem}_y.h5"
        present = x_path.is_file() and y_path.is_file()
        if name in wanted and not present:
            raise DatasetError(f"PCam: expected {x_path.name} and {y_path.name} in {root}")
        if present:
            with h5py.File(y_path, "r") as handle:
                labels = np.asarray(handle["y"]).reshape(-1).astype(np.int64)
            found += labels.size
            if name in wanted:
                parts.append((name, x_path, labels))
    handles: dict[Path, h5py.File] = {}
    where = [(path, i) for _, path, labels in parts for i in range(labels.size)]

    def load(i: int) -> Image.Image:
        path, row = where[i]
        if path not in handles:
            handles[path] = h5py.File(path, "r")
        return Image.fromarray(np.asarray(handles[path]["x"][row])).convert("RGB")

    keys = [f"{name}/{i}" for name, _, labels in parts for i in range(labels.size)]
    source = fingerprint(*(f"{path.resolve()}:{path.stat().st_size}" for _, path, _ in parts))
    classnames = PAPER_PROMPTS["pcam"].classnames
    rule = "all official splits" if split == "all" else f"official split {split}"
    labels = np.concatenate([labels for *_, labels in parts])
    return LabeledImages("pcam", split, classnames, labels, keys, load, source, "pcam", found, rule)


def _lc25000(name: str, root: str | Path, split: str, hash_split: HashSplit) -> LabeledImages:
    root = Path(root)
    subfolder, folders = LC25000_FOLDERS[name]
    base = next((p for p in (root / subfolder, root / "lung_colon_image_set" / subfolder, root) if p.is_dir()), None)
    if base is None or not all((base / f).is_dir() for f in folders):
        raise DatasetError(f"LC25000: expected {subfolder}/{{{','.join(folders)}}} under {root}")
    mapping = dict(zip(folders, PAPER_PROMPTS[name].classnames, strict=True))
    return folder_dataset(name, base, split, hash_split, folders=mapping, prompt_key=name)


def lc25000_lung(root: str | Path, split: str = "all", hash_split: HashSplit = DEFAULT_HASH_SPLIT) -> LabeledImages:
    """LC25000 lung: adenocarcinoma, benign tissue, squamous cell carcinoma (paper's class order)."""
    return _lc25000("lc25000_lung", root, split, hash_split)


def lc25000_colon(root: str | Path, split: str = "all", hash_split: HashSplit = DEFAULT_HASH_SPLIT) -> LabeledImages:
    """LC25000 colon: adenocarcinoma, benign tissue."""
    return _lc25000("lc25000_colon", root, split, hash_split)


def tcga_til_study(root: Path) -> Path:
    """The study folder ``tcga_til:ROOT`` names: ROOT itself when it holds split folders, else its LUAD folder."""
    if all((root / s).is_dir() for s in ("train", "val", "test")):
        return root
    for candidate in (root / TIL_STUDY, root / "images-tcga-tils" / TIL_STUDY):
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        f"TCGA-TIL: expected [TCGA-TILs/images-tcga-tils/]{TIL_STUDY}/{{train,val,test}}/{{{','.join(TIL_FOLDERS)}}}"
        f" under {root} (Zenodo record 6604094)"
    )


def tcga_til(root: str | Path, split: str = "test", hash_split: HashSplit = DEFAULT_HASH_SPLIT) -> LabeledImages:
    """TCGA-TIL LUAD patches: ``til-negative`` -> "none", ``til-positive`` -> "tumor infiltrating lymphocytes"."""
    study = tcga_til_study(Path(root))
    mapping = dict(zip(TIL_FOLDERS, PAPER_PROMPTS["tcga_til"].classnames, strict=True))
    data = folder_dataset("tcga_til", study, split, hash_split, folders=mapping, prompt_key="tcga_til")
    data.rule = f"study {study.name}, {'all splits' if split == 'all' else f'official split {split}'}"
    return data


def rsna_order(patients: list[str]) -> list[str]:
    """Patients in the order the split takes them: by SHA-256 of ``rsna-v1:<patientId>``."""
    return sorted(patients, key=lambda p: hashlib.sha256(f"rsna-v1:{p}".encode()).hexdigest())


def rsna_split(patients: list[str]) -> dict[str, str]:
    """patientId -> split, sized like the paper's train and val (see the module docstring)."""
    ordered = rsna_order(patients)
    total = RSNA_PAPER["public_patients"]
    n_train = round(len(ordered) * RSNA_PAPER["train"] / total)
    n_val = round(len(ordered) * RSNA_PAPER["val"] / total)
    return {p: "train" if i < n_train else "val" if i < n_train + n_val else "test" for i, p in enumerate(ordered)}


def rsna_pneumonia(root: str | Path, split: str = "test", hash_split: HashSplit = DEFAULT_HASH_SPLIT) -> LabeledImages:
    """RSNA Pneumonia Detection (Kaggle stage 2 layout): per-patient normal vs pneumonia from DICOM."""
    root = Path(root)
    check_split(split, allow_all=True)
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
    split_of = rsna_split(list(target))
    items = [
        (images / f"{patient}.dcm", classnames[value])
        for patient, value in sorted(target.items())
        if split in ("all", split_of[patient])
    ]
    missing = [str(path) for path, _ in items if not path.is_file()]
    if missing:
        raise DatasetError(f"RSNA: {len(missing)} DICOM files listed in the CSV are missing, e.g. {missing[0]}")
    rule = "all patients" if split == "all" else f"split {split} by patient hash, sized as the paper's train/val"
    return labeled_from_files(
        "rsna_pneumonia", split, root, items, classnames, prompt_key="rsna_pneumonia", found=len(target), rule=rule
    )
