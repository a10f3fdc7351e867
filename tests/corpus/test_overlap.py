"""``corpus overlap``: benchmark images found in a built corpus, exactly or as changed copies, and nothing else."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from biomedclip.corpus.overlap import (
    EvalPrints,
    OverlapConfig,
    VariantIndex,
    catalog_batches,
    eval_prints,
    find_overlap,
)


@pytest.mark.parametrize("max_distance", [6, OverlapConfig().max_distance])
def test_variant_index_finds_every_pair_within_the_distance_and_no_other(max_distance: int) -> None:
    """Against brute force, with pairs exactly at the distance and one bit beyond it."""
    rng = np.random.default_rng(0)
    index_hashes = rng.integers(0, 2**63, 400, dtype=np.uint64)
    queries = rng.integers(0, 2**63, 300, dtype=np.uint64)
    for q, (source, bits) in enumerate([(5, max_distance), (9, max_distance + 1), (11, 0), (13, 3)]):
        flip = rng.choice(64, bits, replace=False).astype(np.uint64)
        queries[q] = index_hashes[source] ^ np.bitwise_or.reduce(np.uint64(1) << flip) if bits else index_hashes[source]
    a, b = VariantIndex(index_hashes, max_distance).candidates(queries)
    brute = np.argwhere(np.bitwise_count(queries[:, None] ^ index_hashes[None, :]) <= max_distance)
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == sorted(map(tuple, brute.tolist()))
    assert {(0, 5), (2, 11), (3, 13)} <= set(zip(a.tolist(), b.tolist(), strict=True))
    assert (1, 9) not in set(zip(a.tolist(), b.tolist(), strict=True))


def _prints(thumb: np.ndarray, phash: int = 0x0123456789ABCDEF) -> EvalPrints:
    return EvalPrints(["e"], ["d" * 64], np.array([0]), np.array([phash], np.uint64), thumb[None, :].astype(np.uint8))


def _rows(thumbs: list[np.ndarray], phash: int = 0x0123456789ABCDEF) -> dict[str, list]:
    n = len(thumbs)
    return {"key": [f"k{i}" for i in range(n)], "status": ["accepted"] * n, "split": ["train"] * n,
            "pixel_sha256": ["c" * 64] * n, "phash": [f"{phash:016x}"] * n,
            "thumb": [t.astype(np.uint8).tobytes().hex() for t in thumbs]}  # fmt: skip


def _core_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Hand-written: RMS difference of the inner 6 x 6 pixels, each centred and divided by max(its RMS, 4)."""

    def norm(t: np.ndarray) -> np.ndarray:
        core = t.reshape(8, 8)[1:7, 1:7].astype(np.float64).ravel()
        core -= core.mean()
        return core / max(np.sqrt(np.mean(core**2)), 4.0)

    return float(np.sqrt(np.mean((norm(a) - norm(b)) ** 2)))


def test_a_border_remnant_in_the_outer_ring_is_ignored_and_the_pixel_threshold_is_inclusive() -> None:
    rng = np.random.default_rng(3)
    original = rng.integers(40, 200, 64)
    remnant = original.copy().reshape(8, 8)
    remnant[0, :] = remnant[-1, :] = remnant[:, 0] = remnant[:, -1] = 255  # a white border left by the trim
    changed = original.copy()
    changed[[18, 27, 36]] += 60  # three core pixels brighter
    expected = _core_distance(original, changed)
    assert 0.2 < expected < 0.5
    found = find_overlap(_prints(original), [_rows([remnant.ravel(), changed])],
                         OverlapConfig(max_pixel_distance=expected + 1e-6))  # fmt: skip
    assert [(r["key"], r["kind"]) for r in found.rows] == [("k0", "near"), ("k1", "near")]
    assert found.rows[0]["distance"] == 0.0 and found.rows[1]["distance"] == pytest.approx(expected, abs=1e-4)
    below = find_overlap(_prints(original), [_rows([changed])], OverlapConfig(max_pixel_distance=expected - 1e-6))
    assert below.rows == []


def test_hash_candidates_stop_at_the_bit_distance() -> None:
    thumb = np.random.default_rng(4).integers(40, 200, 64)
    base = 0x0123456789ABCDEF
    limit = OverlapConfig().max_distance
    at, beyond = base ^ ((1 << limit) - 1), base ^ ((1 << (limit + 1)) - 1)  # the lowest limit / limit + 1 bits flipped
    rows = {k: a + b for (k, a), b in zip(_rows([thumb], at).items(), _rows([thumb], beyond).values(), strict=True)}
    rows["key"] = ["at", "beyond"]
    assert [r["key"] for r in find_overlap(_prints(thumb, base), [rows]).rows] == ["at"]


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _changed(image: Image.Image, change: str) -> bytes:
    w, h = image.size
    if change == "resize 60%":
        return _jpeg(image.resize((round(w * 0.6), round(h * 0.6)), Image.Resampling.BICUBIC))
    if change == "jpeg 60":
        return _jpeg(image, 60)
    if change == "crop 5%":
        return _jpeg(image.crop((round(0.03 * w), round(0.02 * h), w - round(0.02 * w), h - round(0.03 * h))))
    if change == "grey + border":
        framed = Image.new("L", (w + 20, h + 20), 255)
        framed.paste(image.convert("L"), (10, 10))
        return _jpeg(framed)
    raise ValueError(change)


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared_fixtures):
    """A corpus built from a labelled folder of BCCD smears (distinct pictures) and changed copies of chest
    X-rays; an evaluation folder of the X-rays."""
    from biomedclip.corpus.build import BuildConfig, build
    from biomedclip.corpus.sources import open_source
    from biomedclip.labelled_folders import HashSplit

    root = tmp_path_factory.mktemp("overlap")
    xrays = sorted((shared_fixtures / "images" / "chest_xray").rglob("*.png"))[:5]
    evaluation = root / "eval"
    for i, path in enumerate(xrays):
        target = evaluation / ("normal" if i % 2 else "sick") / f"x{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("L").resize((320, 320), Image.Resampling.BICUBIC).save(target)
    corpus = root / "corpus"
    planted = {}
    changes = ["resize 60%", "jpeg 60", "crop 5%", "grey + border"]
    for i, change in enumerate(changes):
        source = next(evaluation.rglob(f"x{i}.png"))
        name = f"copies/c{i}.jpg"
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_bytes(_changed(Image.open(source), change))
        planted[f"copies/c{i}"] = (source.relative_to(evaluation).as_posix(), "near")
    same = next(evaluation.rglob("x4.png"))
    Image.open(same).save(corpus / "copies" / "same.png", compress_level=1)  # same pixels, other bytes
    planted["copies/same"] = (same.relative_to(evaluation).as_posix(), "exact")
    for path in sorted((shared_fixtures / "images" / "bccd" / "JPEGImages").glob("*.jpg"))[:12]:
        (corpus / "smears" / path.name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / "smears" / path.name).write_bytes(path.read_bytes())
    out = root / "out"
    source = open_source(f"imagefolder:{corpus}", caption_template="an image of {label}",
                         imagefolder_split=HashSplit(1, 0, 0))  # fmt: skip
    build([source], out, BuildConfig(shard_size=64), workers=0)
    return out, evaluation, planted


def test_the_cli_finds_exact_and_changed_copies_and_nothing_else(built, run_cli, tmp_path) -> None:
    out, evaluation, planted = built
    catalog = pq.read_table(out / "catalog.parquet").to_pylist()
    key_of = {r["pmcid"]: r["key"] for r in catalog}  # train/<class>/<file stem>
    rows_path = tmp_path / "overlap.jsonl"
    result = run_cli("corpus", "overlap", "--corpus", out, "--dataset", f"imagefolder:{evaluation}", "-o", rows_path)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    found = {(r["key"], r["eval"], r["kind"]) for r in rows}
    assert found == {(key_of[f"train/{name}"], e, kind) for name, (e, kind) in planted.items()}
    assert all(r["distance"] == 0.0 for r in rows if r["kind"] == "exact")
    assert all(0.0 <= r["distance"] <= OverlapConfig().max_pixel_distance for r in rows if r["kind"] == "near")
    assert "overlap: 5 of 5 evaluation images found in the corpus (exact 1, near 4)" in result.stdout


def test_rows_without_fingerprints_are_counted_unchecked(tmp_path) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    prints = eval_prints([("a", image)])
    table = pa.table({"key": ["k1", "k2"], "status": ["accepted", "accepted"], "split": ["train", "train"],
                      "phash": ["0" * 16, None]})  # fmt: skip
    pq.write_table(table, tmp_path / "old.parquet")
    result = find_overlap(prints, catalog_batches(tmp_path / "old.parquet"))
    assert (result.corpus_figures, result.unchecked, result.rows) == (2, 2, [])


def _published(image: Image.Image, crop: int, colour: int, scale: float, quality: int) -> bytes:
    """A small image as a figure may reach the corpus: ``crop`` px cut left and top, a 1 px border of ``colour``,
    resized by ``scale``, JPEG at ``quality``."""
    inner = image.convert("RGB").crop((crop, crop, image.width, image.height))
    framed = Image.new("RGB", (inner.width + 2, inner.height + 2), (colour,) * 3)
    framed.paste(inner, (1, 1))
    size = (round(framed.width * scale), round(framed.height * scale))
    return _jpeg(framed.resize(size, Image.Resampling.BICUBIC), quality)


def test_small_images_padded_resized_and_recompressed_are_found_and_other_small_images_are_not(
    shared_fixtures,
) -> None:
    """Real 28 px PneumoniaMNIST X-rays as the evaluation set; in the corpus, changed copies (a 1 px border
    blurred by resizing and JPEG, which the trim of a uniform border leaves partly) and real BreastMNIST images."""
    from biomedclip.corpus.images import process_image

    labelled = shared_fixtures / "labeled"
    xrays = [Image.fromarray(a) for a in np.load(labelled / "pneumoniamnist_28_trainval.npz")["train_images"][:30]]
    others = np.load(labelled / "breastmnist_28_trainval.npz")["train_images"][:200]
    prints = eval_prints((f"x{i}", image) for i, image in enumerate(xrays))
    settings = [(0, 255, 0.6, 70), (1, 0, 0.9, 65), (1, 255, 1.3, 80), (0, 0, 1.45, 90)]
    named = {f"copy {s} x{i}": _published(image, *s) for i, image in enumerate(xrays) for s in settings}
    named |= {f"breast {j}": _jpeg(Image.fromarray(a), 95) for j, a in enumerate(others)}
    processed = {key: process_image(blob) for key, blob in named.items()}
    rows = {"key": list(processed), "status": ["accepted"] * len(processed), "split": ["train"] * len(processed),
            "pixel_sha256": [p.pixel_sha256 for p in processed.values()],
            "phash": [p.phash for p in processed.values()], "thumb": [p.thumb for p in processed.values()]}  # fmt: skip
    found = {(r["key"], r["eval"]) for r in find_overlap(prints, [rows]).rows}
    copies = [key for key in named if key.startswith("copy")]
    recall = sum((key, key.rsplit(" ", 1)[1]) in found for key in copies) / len(copies)
    assert recall >= 0.95, recall
    assert not [pair for pair in found if pair[0].startswith("breast")]
