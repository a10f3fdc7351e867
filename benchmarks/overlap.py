"""``corpus overlap`` at scale: cost per corpus figure, recall on planted copies, false overlaps.

    .venv/bin/python benchmarks/overlap.py                      # corpus of 100k and 1M figures (~1 GB of disk)
    .venv/bin/python benchmarks/overlap.py --sizes 20000        # quick

Evaluation set: real images of the fixtures (chest X-rays, BCCD smears, PMC figures and 300 PneumoniaMNIST
X-rays). Corpus: a catalog (Parquet, the build's columns) of N synthetic figures (random hashes and
thumbnails: the cost of streaming a corpus through the index), plus, fingerprinted by the corpus' own
``process_image``: for every evaluation image, copies changed as publishing changes figures (resized 50-150 %,
JPEG quality 60-95, up to 5 % cropped, grey, a 1-5 % border; one change at a time and all at once), and every
image of other datasets (BreastMNIST, DICOM CT/MR, the MedICaT figures) unchanged and changed. Recall: planted
copies found with their evaluation image; false overlaps: matches of an evaluation image with an image of
another dataset, per 10,000 pairs (evaluation image, other image) checked; also printed: copies matched with a
different picture of the evaluation set itself. Cost: CPU seconds of ``find_overlap`` per corpus figure, and per
synthetic figure with the planted rows' own time (measured alone) taken off; fingerprinting the evaluation set
is counted apart. Target: cost per synthetic figure at the largest N within 1.3x of the smallest, recall >=
0.98, false overlaps <= 1 per 10,000 pairs. CPU time on a shared machine: the figures are indicative.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from biomedclip.corpus.images import process_image
from biomedclip.corpus.overlap import catalog_batches, eval_prints, find_overlap
from dedup_pixels import (
    CHANGES,
    SAME_PICTURE,
    SHARED,
    _png,
    transform,
)  # this folder is on sys.path when a benchmark runs

ROWS_PER_PART = 100_000


def eval_images(shared: Path) -> dict[str, Image.Image]:
    images = shared / "images"
    paths = sorted((images / "chest_xray").rglob("*.png")) + sorted((images / "chest_xray").rglob("*.jpg"))
    paths += sorted((images / "bccd").rglob("*.jpg")) + sorted((shared / "compound" / "images").glob("*"))
    out = {p.relative_to(shared).as_posix(): Image.open(p).convert("RGB") for p in paths}
    pneumonia = np.load(shared / "labeled" / "pneumoniamnist_28_trainval.npz")["train_images"][:300]
    out.update({f"pneumoniamnist/train/{i}": Image.fromarray(a).convert("RGB") for i, a in enumerate(pneumonia)})
    return out


def other_images(shared: Path) -> dict[str, bytes]:
    from biomedclip.evaluate.datasets.dicom import read_dicom

    breast = np.load(shared / "labeled" / "breastmnist_28_trainval.npz")
    out = {f"breastmnist/{k}/{i}": _png(Image.fromarray(a)) for k in ("train_images", "val_images")
           for i, a in enumerate(breast[k])}  # fmt: skip
    for p in sorted((shared / "images" / "dicom").rglob("*.dcm")):
        if "lossy" not in p.name:
            out[p.name] = _png(read_dicom(p))
    out.update({p.name: p.read_bytes() for p in sorted((shared / "image_text").rglob("*.png"))})
    return out


def catalog_rows(named: dict[str, bytes]) -> dict[str, list]:
    rows: dict[str, list] = {c: [] for c in ("key", "status", "split", "pixel_sha256", "phash", "thumb")}
    for key, blob in named.items():
        image = process_image(blob)
        for column, value in zip(rows, (key, "accepted", "train", image.pixel_sha256, image.phash, image.thumb),
                                 strict=True):  # fmt: skip
            rows[column].append(value)
    return rows


def write_synthetic(folder: Path, n: int, planted: dict[str, list], seed: int = 0) -> None:
    """Catalog parts of ``n`` random figures with the planted rows spread among them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    at = np.sort(rng.choice(n, len(planted["key"]), replace=False)) // ROWS_PER_PART
    for part, lo in enumerate(range(0, n, ROWS_PER_PART)):
        hi = min(n, lo + ROWS_PER_PART)
        hashes = rng.integers(0, 2**63, hi - lo, dtype=np.uint64) * np.uint64(2)
        thumbs = rng.integers(0, 256, (hi - lo, 64), dtype=np.uint8)
        rows = {
            "key": [f"PMC{i:09d}_F1" for i in range(lo, hi)], "status": ["accepted"] * (hi - lo),
            "split": ["train"] * (hi - lo), "pixel_sha256": [f"{i:064x}" for i in range(lo, hi)],
            "phash": [f"{int(h):016x}" for h in hashes], "thumb": [t.tobytes().hex() for t in thumbs],
        }  # fmt: skip
        mine = np.flatnonzero(at == part)
        for column in rows:
            rows[column] += [planted[column][i] for i in mine]
        pq.write_table(pa.table(rows), folder / f"part-{part:05d}.parquet")


def report_matches(result, evaluation: dict[str, Image.Image], copies: dict[str, bytes], others: dict) -> None:
    """Recall on the planted copies (per change and image size), false overlaps with other datasets, and
    matches of a copy with a different image of the evaluation set itself (pictures more than ``SAME_PICTURE``
    grey levels apart: one modality at 28 px, the hardest case)."""
    found = {(r["key"], r["eval"]) for r in result.rows}
    hits = sum((key, key.split(" ", 2)[2]) in found for key in copies)
    false = [r for r in result.rows if r["key"].split(" ")[-1] in others or r["key"] in others]
    pairs = len(evaluation) * len(others)
    grey = {
        n: np.asarray(im.convert("L").resize((64, 64), Image.Resampling.BOX), float) for n, im in evaluation.items()
    }
    cross = [r for r in result.rows if r["key"] in copies and r["key"].split(" ", 2)[2] != r["eval"]
             and np.abs(grey[r["key"].split(" ", 2)[2]] - grey[r["eval"]]).mean() > SAME_PICTURE]  # fmt: skip
    cross_pairs = len(copies) * (len(evaluation) - 1)
    print(
        f"recall {hits}/{len(copies)} = {hits / len(copies):.3f}; false overlaps with other datasets "
        f"{len(false)} in {pairs:,} pairs ({1e4 * len(false) / pairs:.2f} per 10,000); copies matched with a "
        f"different evaluation image {len(cross)} in {cross_pairs:,} pairs ({1e4 * len(cross) / cross_pairs:.2f} "
        f"per 10,000); {result.candidates:,} candidates",
        flush=True,
    )
    for change in CHANGES:
        line = []
        for label, tiny in (("large images", False), ("MedMNIST 28 px", True)):
            mine = [k for k in copies if k.split(" ")[1] == change and
                    k.split(" ", 2)[2].startswith("pneumoniamnist/") == tiny]  # fmt: skip
            got = sum((k, k.split(" ", 2)[2]) in found for k in mine)
            line.append(f"{label} {got}/{len(mine)} = {got / max(1, len(mine)):.3f}")
        print(f"  {change}: " + "; ".join(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--shared", type=Path, default=SHARED)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    evaluation = eval_images(args.shared)
    start = time.process_time()
    prints = eval_prints(evaluation.items())
    print(f"evaluation set: {len(evaluation)} images, {len(prints.hashes)} variants fingerprinted in "
          f"{time.process_time() - start:.1f} CPU-s", flush=True)  # fmt: skip
    copies = {f"copy {change} {name}": transform(image, rng, change) for name, image in evaluation.items()
              for change in CHANGES}  # fmt: skip
    others = other_images(args.shared)
    others.update({f"copy {change} {name}": transform(Image.open(io.BytesIO(blob)), rng, change)
                   for name, blob in list(others.items()) for change in ("resize", "all")})  # fmt: skip
    planted = catalog_rows({**copies, **others})
    start = time.process_time()
    alone = find_overlap(prints, [planted])
    fixed = time.process_time() - start
    report_matches(alone, evaluation, copies, others)
    print(f"planted rows alone: {len(planted['key']):,} figures in {fixed:.1f} CPU-s", flush=True)
    root = Path(tempfile.mkdtemp(prefix="overlap-bench-"))
    costs = {}
    try:
        for n in args.sizes:
            folder = root / f"n{n}"
            write_synthetic(folder, n, planted)
            start = time.process_time()
            result = find_overlap(prints, catalog_batches(folder))
            spent = time.process_time() - start
            costs[n] = (spent - fixed) / n
            print(
                f"N={n:,} synthetic + {len(planted['key']):,} planted figures: {spent:.1f} CPU-s, "
                f"{1e6 * spent / (n + len(planted['key'])):.1f} CPU-us per corpus figure, "
                f"{1e6 * costs[n]:.1f} CPU-us per synthetic figure (planted rows' time taken off); "
                f"{result.candidates - alone.candidates:,} candidates and "
                f"{len(result.rows) - len(alone.rows)} matches beyond the planted rows'; same planted matches: "
                f"{result.rows == alone.rows}",
                flush=True,
            )
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GB", flush=True)
    if len(costs) > 1:
        first, last = min(costs), max(costs)
        print(
            f"RATIO CPU-seconds per synthetic corpus figure N={last:,} / N={first:,}: "
            f"{costs[last] / costs[first]:.2f}x (target <= 1.3x)"
        )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
