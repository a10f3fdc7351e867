"""Near-duplicate dedup on real medical images: false merges of distinct images, recall on planted copies.

    .venv/bin/python benchmarks/dedup_pixels.py                 # every real image of ../shared/fixtures
    .venv/bin/python benchmarks/dedup_pixels.py --copies 100    # fewer planted copies

Images: the fixtures' chest X-rays (CXR14, TBX11K, others), BCCD blood smears, DICOM (CT, MR), PMC figures and
the MedMNIST archives (PneumoniaMNIST, BreastMNIST), each through the corpus' ``process_image``. "before" is the
old rule (perceptual hash of the whole image within ``max_distance`` bits), "after" the new one (hash of the
image without a uniform border, confirmed on pixels). A merge is false when the two pictures differ by more
than 10 grey levels (mean absolute difference of their grey pixels at 64 x 64; an independent check: in the
MedMNIST archives the nearest other image lies below 10, BreastMNIST's repeated frames, or above 12).
False merges per 1,000 images: the images dedup rejects as a near duplicate of a different picture.

Planted copies: a sample of the images, each transformed as publishing does (resized 50-150 %, JPEG quality
60-95, up to 5 % cropped, grey, a 1-5 % white or black border), one change at a time and all at once; recall:
copies merged with their original (pair checked alone), for large images and for MedMNIST's 28 px ones.
"""

from __future__ import annotations

import argparse
import io
import os
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from biomedclip.corpus.dedup import DedupConfig, Fingerprint, find_duplicates
from biomedclip.corpus.images import process_image
from biomedclip.corpus.pixels import distance

SHARED = Path(os.environ.get("BIOMEDCLIP_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "fixtures"
SAME_PICTURE = 10.0
CHANGES = ("resize", "jpeg", "crop", "grey", "border", "all")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def real_images(shared: Path) -> dict[str, list[bytes]]:
    """Encoded images per group, as a corpus would read them."""
    from biomedclip.evaluate.datasets.dicom import read_dicom

    images = shared / "images"
    xrays = sorted(p for p in (images / "chest_xray").rglob("*") if p.suffix in (".png", ".jpg"))
    dicoms = sorted(p for p in (images / "dicom").rglob("*.dcm") if "lossy" not in p.name)  # 12-bit JPEG: no decoder
    groups: dict[str, list[bytes]] = {
        "chest X-ray": [p.read_bytes() for p in xrays],
        "BCCD smear": [p.read_bytes() for p in sorted((images / "bccd").rglob("*.jpg"))],
        "DICOM CT/MR": [_png(read_dicom(p)) for p in dicoms],
        "PMC figure": [p.read_bytes() for p in sorted((shared / "compound" / "images").glob("*"))]
        + [p.read_bytes() for p in sorted((shared / "image_text").rglob("*.png"))],
    }
    for archive in sorted((shared / "labeled").glob("*.npz")):
        data = np.load(archive)
        arrays = np.concatenate([data[k] for k in sorted(data.files) if k.endswith("_images")])
        groups[f"MedMNIST {archive.stem.split('_')[0]}"] = [_png(Image.fromarray(a)) for a in arrays]
    return groups


@contextmanager
def old_rule():
    """The perceptual hash as it was: of the whole image, its border included."""
    with mock.patch("biomedclip.corpus.images.content", lambda image: image):
        yield


def fingerprints(blobs: list[bytes], old: bool) -> list[Fingerprint]:
    if old:
        with old_rule():
            return fingerprints(blobs, False)
    out = []
    for i, blob in enumerate(blobs):
        image = process_image(blob)
        out.append(Fingerprint(f"{i:06d}", image.sha256, image.phash, None if old else image.thumb))
    return out


def _grey64(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("L").resize((64, 64), Image.Resampling.BOX), float)


def merges(blobs: list[bytes], old: bool) -> tuple[int, int]:
    """(false, true) merges: images rejected as a near duplicate of a different / of the same picture."""
    config = DedupConfig(max_pixel_distance=float("inf")) if old else DedupConfig()
    false = true = 0
    for cluster in find_duplicates(fingerprints(blobs, old), config):
        kept = _grey64(blobs[int(cluster.kept)])
        for dup in cluster.duplicates:
            same = np.abs(kept - _grey64(blobs[int(dup)])).mean() <= SAME_PICTURE
            true, false = true + same, false + (not same)
    return false, true


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
    image.save(out, format="JPEG", quality=int(rng.integers(60, 96)) if kind in ("jpeg", "all") else 95)
    return out.getvalue()


def recall(blobs: list[bytes], seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per change: the share of copies found by the old rule and by the new one."""
    rng = np.random.default_rng(seed)
    d, limit = DedupConfig().max_distance, DedupConfig().max_pixel_distance
    result = {}
    originals = {old: fingerprints(blobs, old) for old in (True, False)}
    for kind in CHANGES:
        copies = [transform(Image.open(io.BytesIO(b)), rng, kind) for b in blobs]
        found = []
        for old in (True, False):
            pairs = zip(originals[old], fingerprints(copies, old), strict=True)
            found.append(np.mean([
                np.bitwise_count(np.uint64(int(a.phash, 16)) ^ np.uint64(int(b.phash, 16))) <= d
                and (old or distance(bytes.fromhex(a.thumb), bytes.fromhex(b.thumb)) <= limit)
                for a, b in pairs
            ]))  # fmt: skip
        result[kind] = (float(found[0]), float(found[1]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--copies", type=int, default=300, help="images sampled per kind for planted copies")
    args = parser.parse_args()
    groups = real_images(args.shared)
    total = {"n": 0, "before": 0, "after": 0}
    for name, blobs in groups.items():
        seen: dict[bytes, int] = {}
        distinct = [b for i, b in enumerate(blobs) if seen.setdefault(Image.open(io.BytesIO(b)).tobytes(), i) == i]
        (fb, tb), (fa, ta) = merges(distinct, True), merges(distinct, False)
        total["n"] += len(distinct)
        total["before"] += fb
        total["after"] += fa
        print(
            f"{name}: {len(distinct)} distinct images ({len(blobs) - len(distinct)} exact repeats dropped); "
            f"false merges before {fb}, after {fa}; same-picture merges before {tb}, after {ta}",
            flush=True,
        )
    n = total["n"]
    print(f"ALL {n} distinct images: false merges per 1,000 images before {1000 * total['before'] / n:.2f}, "
          f"after {1000 * total['after'] / n:.2f}", flush=True)  # fmt: skip
    rng = np.random.default_rng(0)
    large = [b for name, blobs in groups.items() if not name.startswith("MedMNIST") for b in blobs]
    tiny = [b for name, blobs in groups.items() if name.startswith("MedMNIST") for b in blobs]
    for label, pool in (("large images", large), ("MedMNIST 28 px", tiny)):
        sample = [pool[i] for i in rng.choice(len(pool), min(args.copies, len(pool)), replace=False)]
        found = recall(sample)
        print(f"recall on {len(sample)} planted copies of {label} (old rule / new rule): "
              + "; ".join(f"{k} {a:.3f}/{b:.3f}" for k, (a, b) in found.items()), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
