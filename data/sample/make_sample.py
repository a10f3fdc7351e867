"""Re-create the bundled demo sample from ../shared/fixtures (a one-off, documented derivation).

Run from the repo root: ``.venv/bin/python data/sample/make_sample.py ../shared/fixtures``. It copies the CC BY
PMC packages (with their figure captions) and the MedMNIST val splits, turns a class-balanced subset of the
MedMNIST train splits into labelled PNG folders for ``imagefolder:`` sources, and writes PROVENANCE.tsv.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
PMC_PACKAGES = ["PMC10802347", "PMC10118017", "PMC10487465", "PMC11286954"]
IMAGEFOLDERS = {  # folder -> (npz, {label index: class folder name}, images per class)
    "chest_xray": ("pneumoniamnist_28_trainval.npz", {0: "normal lungs", 1: "pneumonia"}, 200),
    "breast_ultrasound": ("breastmnist_28_trainval.npz", {0: "malignant tumor", 1: "normal or benign tissue"}, 150),
}


def main(fixtures: Path) -> None:
    provenance = list(csv.reader((fixtures / "PROVENANCE.tsv").open(), delimiter="\t"))
    header, rows = provenance[0], {row[0]: row for row in provenance[1:]}
    out_rows: list[list[str]] = []

    def copy(rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fixtures / rel, dest)
        out_rows.append([str(dest.relative_to(HERE)), *rows[rel][1:]])

    extracted = "pmc/packages/extracted"
    for pmcid in PMC_PACKAGES:
        for path in sorted((fixtures / extracted / pmcid).rglob("*")):
            if path.is_file() and path.suffix in {".jpg", ".gif", ".nxml"}:
                copy(str(path.relative_to(fixtures)), HERE / "pmc" / path.relative_to(fixtures / extracted))
        meta = fixtures / extracted / "figure_metadata_json" / pmcid
        for path in sorted(meta.glob("*.json")):
            copy(str(path.relative_to(fixtures)), HERE / "pmc" / "figure_metadata_json" / pmcid / path.name)

    for folder, (npz, classes, per_class) in IMAGEFOLDERS.items():
        rel = f"labeled/{npz}"
        copy(rel, HERE / "labeled" / npz)
        data = np.load(fixtures / rel)
        images, labels = data["train_images"], data["train_labels"].ravel()
        for index, name in classes.items():
            target = HERE / "imagefolder" / folder / name
            target.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(labels == index)[:per_class]:
                Image.fromarray(images[i]).save(target / f"{folder}_train_{i:05d}.png")
            note = f"DERIVED: first {per_class} train images of label {index} of {rel}, saved as PNG"
            out_rows.append([str(target.relative_to(HERE)) + "/*.png", *rows[rel][1:-1], note])

    with (HERE / "PROVENANCE.tsv").open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(out_rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
