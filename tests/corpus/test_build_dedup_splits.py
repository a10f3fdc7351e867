"""A labelled-folder build with a hashed split: copies of one picture end in one split, look-alikes both stay.

Issue 20: in a labelled brain MRI folder a "no tumor" slice was dropped as a near duplicate of a meningioma
slice, and 74 of 262 test images had a near duplicate in train. Here real 28 px PneumoniaMNIST chest X-rays
(the build's minimum side lowered to 16 px) are written to class folders, with resized and re-compressed copies
of some under names that the hash split sends to the other split, and with look-alike pairs (perceptual hashes
within 4 bits, different pictures). Ground truth is independent of the pixel check: the mean absolute grey
difference of two pictures at 64 x 64 (copies below 10 grey levels, different pictures above 12).
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from biomedclip.corpus.articles import WorkConfig
from biomedclip.corpus.build import BuildConfig, build
from biomedclip.corpus.filters import FilterConfig
from biomedclip.corpus.images import process_image
from biomedclip.corpus.sources import open_source
from biomedclip.labelled_folders import HashSplit

SPLIT = HashSplit(0.5, 0.0, 0.5)
SAME_PICTURE = 10.0


def _grey64(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L").resize((64, 64), Image.Resampling.BOX), float)


def _name_in(split: str, folder: str, stem: str) -> str:
    """A file name below ``folder`` whose key the hash split sends to ``split``."""
    return next(f"{folder}/{stem}-{i}.jpg" for i in range(1000) if SPLIT.of(f"{folder}/{stem}-{i}.jpg") == split)


@pytest.fixture(scope="module")
def xrays(shared_fixtures) -> np.ndarray:
    data = np.load(shared_fixtures / "labeled" / "pneumoniamnist_28_trainval.npz")
    return data["train_images"]


def _look_alikes(xrays: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Pairs of different X-rays whose perceptual hashes lie within 4 bits (what the old rule merged)."""
    hashes = np.array([int(process_image(_encode(Image.fromarray(a), "PNG")).phash, 16) for a in xrays[:1200]])
    hashes = hashes.astype(np.uint64)
    close = np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= 4
    pairs = []
    for i, j in zip(*np.nonzero(np.triu(close, 1)), strict=True):
        if np.abs(xrays[i].astype(float) - xrays[j]).mean() > 12 and not {i, j} & {k for p in pairs for k in p}:
            pairs.append((int(i), int(j)))
    return pairs[:count]


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format=fmt, **kwargs)
    return out.getvalue()


def test_copies_land_in_one_split_and_look_alikes_both_stay(tmp_path, xrays) -> None:
    root = tmp_path / "xrays"
    look_alikes = _look_alikes(xrays, 4)
    assert len(look_alikes) == 4
    originals = sorted({i for pair in look_alikes for i in pair} | set(range(20)))
    written: dict[str, int] = {}  # file key -> X-ray index
    for i in originals:
        key = f"{'normal' if i % 2 else 'pneumonia'}/x{i:04d}.png"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(xrays[i]).save(root / key)
        written[key] = i
    copies = {}
    for i in range(10):  # a copy of X-ray i, 1.5x larger, JPEG 90, in the other class folder and other split
        original = f"{'normal' if i % 2 else 'pneumonia'}/x{i:04d}.png"
        other = "test" if SPLIT.of(original) == "train" else "train"
        key = _name_in(other, "pneumonia" if i % 2 else "normal", f"copy{i:04d}")
        big = Image.fromarray(xrays[i]).resize((42, 42), Image.Resampling.BICUBIC)
        (root / key).write_bytes(_encode(big, "JPEG", quality=90))
        written[key] = i
        copies[key] = original
    source = open_source(f"imagefolder:{root}", caption_template="a chest X-ray: {label}", imagefolder_split=SPLIT)
    out = tmp_path / "out"
    config = BuildConfig(work=WorkConfig(filters=FilterConfig(min_side=16)), shard_size=16)
    build([source], out, config, workers=0)
    rows = pq.read_table(out / "catalog.parquet").to_pylist()
    by_key = {r["pmcid"]: r for r in rows}
    assert len(rows) == len(written)

    def row(key: str) -> dict:
        return by_key[f"{SPLIT.of(key)}/{key.rsplit('.', 1)[0]}"]

    split_of = {r["key"]: r["split"] for r in rows}
    for r in rows:  # a cluster never spans splits: each duplicate takes its kept figure's split
        if r["duplicate_of"] is not None:
            assert r["split"] == split_of[r["duplicate_of"]]
    for copy, original in copies.items():
        a, b = row(copy), row(original)
        assert {a["status"], b["status"]} == {"accepted", "rejected"}, (copy, original)
        assert a["split"] == b["split"]
    for i, j in look_alikes:
        for k in (i, j):
            key = f"{'normal' if k % 2 else 'pneumonia'}/x{k:04d}.png"
            assert row(key)["status"] == "accepted", key
    accepted = {key: row(key) for key in written if row(key)["status"] == "accepted"}
    train = [k for k, r in accepted.items() if r["split"] == "train"]
    test = [k for k, r in accepted.items() if r["split"] == "test"]
    assert train and test
    for t in test:  # after the build no test image has a copy of its picture in train
        assert all(np.abs(_grey64(root / t) - _grey64(root / k)).mean() > SAME_PICTURE for k in train), t
