"""Near-duplicate dedup on real medical images: false merges of distinct images, recall on planted copies.

    .venv/bin/python benchmarks/dedup_pixels.py                    # all real images of ../shared/fixtures
    .venv/bin/python benchmarks/dedup_pixels.py --sides 8 12 16    # compare thumbnail sizes

Distinct images: every image of the fixtures' chest X-rays (CXR14, TBX11K, others), BCCD blood smears, DICOM
(CT, MR), MedMNIST archives (PneumoniaMNIST, BreastMNIST) and PMC figures, each through the corpus' own
``process_image``. Exact copies (same decoded pixels) are dropped first: they are duplicates, not false merges.
A pair is merged "before" when its perceptual hashes lie within ``max_distance`` bits (the old rule), "after"
when it also passes the pixel check (``corpus.pixels``). False merges per 1,000 images: images that dedup
would reject as a near duplicate of another (cluster size - 1, summed), per 1,000 distinct images.

Planted copies: each image of a sample (MedMNIST's tiny images included), transformed as publishing does:
resized 50-150 %, JPEG quality 60-95, up to 5 % cropped, converted to grey or padded with a small border,
one change at a time and all at once. Recall: copies that end in the original's cluster (pair checked alone).
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from biomedclip.corpus.dedup import DedupConfig
from biomedclip.corpus.images import process_image
from biomedclip.corpus.pixels import MAX_PIXEL_DISTANCE, block_distances, normalised, thumbnail

SHARED = Path(os.environ.get("BIOMEDCLIP_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "fixtures"


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def real_images(shared: Path) -> dict[str, list[bytes]]:
    """Encoded images per group, as a corpus would read them."""
    from biomedclip.evaluate.datasets.dicom import read_dicom

    images = shared / "images"
    groups: dict[str, list[bytes]] = {
        "chest X-ray": [
            p.read_bytes() for p in sorted((images / "chest_xray").rglob("*")) if p.suffix in (".png", ".jpg")
        ],
        "BCCD smear": [p.read_bytes() for p in sorted((images / "bccd").rglob("*.jpg"))],
        "DICOM CT/MR": [
            _png(read_dicom(p)) for p in sorted((images / "dicom").rglob("*.dcm")) if "lossy" not in p.name
        ],
        "PMC figure": [p.read_bytes() for p in sorted((shared / "compound" / "images").glob("*"))]
        + [p.read_bytes() for p in sorted((shared / "image_text").rglob("*.png"))],
    }
    for archive in sorted((shared / "labeled").glob("*.npz")):
        data = np.load(archive)
        arrays = np.concatenate([data[k] for k in data.files if k.endswith("_images")])
        groups[f"MedMNIST {archive.stem.split('_')[0]}"] = [_png(Image.fromarray(a)) for a in arrays]
    return groups


def fingerprints(blobs: list[bytes], side: int) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """Perceptual hashes (uint64), thumbnails (uint8 rows) and decoded-pixel digests of ``blobs``."""
    hashes, thumbs, pixels = [], [], []
    for blob in blobs:
        processed = process_image(blob)
        decoded = Image.open(io.BytesIO(blob))
        hashes.append(int(processed.phash, 16))
        thumbs.append(np.frombuffer(thumbnail(Image.open(io.BytesIO(processed.jpeg)), side), np.uint8))
        pixels.append(decoded.convert("RGB").tobytes())
    return np.array(hashes, np.uint64), np.stack(thumbs), pixels


def false_merges(hashes: np.ndarray, thumbs: np.ndarray, max_distance: int, threshold: float | None) -> int:
    """Images merged into another's cluster (cluster size - 1, summed) among distinct images."""
    near = np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= max_distance
    if threshold is not None:
        z = normalised(thumbs)
        near &= block_distances(z, z) <= threshold
    i, j = np.nonzero(np.triu(near, 1))
    graph = coo_matrix((np.ones(len(i), bool), (i, j)), shape=(len(hashes),) * 2)
    labels = connected_components(graph, directed=False)[1]
    return len(hashes) - len(np.unique(labels))


def transform(image: Image.Image, rng: np.random.Generator, kind: str) -> bytes:
    """A copy of ``image`` changed as publishing changes figures (``kind``: one change or ``all``)."""
    image = image.convert("RGB")
    w, h = image.size
    if kind in ("crop", "all"):
        cut = rng.uniform(0, 0.05)
        left, top = rng.uniform(0, cut) * w, rng.uniform(0, cut) * h
        image = image.crop((round(left), round(top), round(w - (cut * w - left)), round(h - (cut * h - top))))
    if kind in ("grey", "all"):
        image = image.convert("L").convert("RGB")
    if kind in ("border", "all"):
        pad = max(1, round(rng.uniform(0.01, 0.05) * max(image.size)))
        colour = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
        framed = Image.new("RGB", (image.width + 2 * pad, image.height + 2 * pad), colour)
        framed.paste(image, (pad, pad))
        image = framed
    if kind in ("resize", "all"):
        scale = rng.uniform(0.5, 1.5)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BICUBIC)  # fmt: skip
    out = io.BytesIO()
    quality = int(rng.integers(60, 96)) if kind in ("jpeg", "all") else 95
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def recall(blobs: list[bytes], side: int, max_distance: int, threshold: float, kinds: list[str], seed: int = 0):
    """Per change: (copies found by hash alone, found by hash and pixels, copies)."""
    rng = np.random.default_rng(seed)
    hashes, thumbs, _ = fingerprints(blobs, side)
    result = {}
    for kind in kinds:
        copies = [transform(Image.open(io.BytesIO(b)), rng, kind) for b in blobs]
        c_hashes, c_thumbs, _ = fingerprints(copies, side)
        by_hash = np.bitwise_count(hashes ^ c_hashes) <= max_distance
        pixel = np.diag(block_distances(normalised(thumbs), normalised(c_thumbs))) <= threshold
        result[kind] = (int(by_hash.sum()), int((by_hash & pixel).sum()), int(pixel.sum()), len(blobs))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--sides", type=int, nargs="+", default=[8])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[MAX_PIXEL_DISTANCE])
    parser.add_argument("--copies", type=int, default=400, help="images sampled for planted copies")
    args = parser.parse_args()
    d = DedupConfig().max_distance
    groups = real_images(args.shared)
    rng = np.random.default_rng(0)
    for side in args.sides:
        total = {"n": 0, "before": 0, **{t: 0 for t in args.thresholds}}
        everything = []
        for name, blobs in groups.items():
            hashes, thumbs, pixels = fingerprints(blobs, side)
            first = {}
            distinct = [first.setdefault(p, i) == i for i, p in enumerate(pixels)]
            hashes, thumbs = hashes[distinct], thumbs[distinct]
            everything += [b for b, keep in zip(blobs, distinct, strict=True) if keep]
            before = false_merges(hashes, thumbs, d, None)
            after = {t: false_merges(hashes, thumbs, d, t) for t in args.thresholds}
            total["n"] += len(hashes)
            total["before"] += before
            for t in args.thresholds:
                total[t] += after[t]
            print(f"side {side} {name}: {len(hashes)} distinct images ({len(blobs) - len(hashes)} exact copies "
                  f"dropped); false merges before {before}, after " + ", ".join(f"{after[t]} (t={t})" for t in
                  args.thresholds))  # fmt: skip
        n = total["n"]
        print(f"side {side} ALL {n} distinct images: false merges per 1,000 before {1000 * total['before'] / n:.2f}, "
              "after " + ", ".join(f"{1000 * total[t] / n:.2f} (t={t})" for t in args.thresholds))  # fmt: skip
        sample = [everything[i] for i in rng.choice(len(everything), min(args.copies, len(everything)), replace=False)]
        for t in args.thresholds:
            found = recall(sample, side, d, t, ["resize", "jpeg", "crop", "grey", "border", "all"])
            print(f"side {side} t={t} recall on {len(sample)} planted copies (hash alone / hash+pixels / pixels "
                  "alone): " + "; ".join(f"{k} {a / n_:.3f}/{b / n_:.3f}/{c / n_:.3f}"
                                         for k, (a, b, c, n_) in found.items()))  # fmt: skip


if __name__ == "__main__":
    main()
