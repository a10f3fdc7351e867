"""``corpus overlap``: benchmark images found in a built corpus, exactly or as changed copies, and nothing else."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from biomedclip.corpus.overlap import VariantIndex, catalog_batches, eval_prints, find_overlap


def test_variant_index_finds_every_pair_within_the_distance_and_no_other() -> None:
    """Against brute force, with pairs exactly at the distance and one bit beyond it."""
    rng = np.random.default_rng(0)
    index_hashes = rng.integers(0, 2**63, 400, dtype=np.uint64)
    queries = rng.integers(0, 2**63, 300, dtype=np.uint64)
    for q, (source, bits) in enumerate([(5, 6), (9, 7), (11, 0), (13, 3)]):  # 6 bits: in; 7 bits: out
        flip = rng.choice(64, bits, replace=False).astype(np.uint64)
        queries[q] = index_hashes[source] ^ np.bitwise_or.reduce(np.uint64(1) << flip) if bits else index_hashes[source]
    a, b = VariantIndex(index_hashes, 6).candidates(queries)
    brute = np.argwhere(np.bitwise_count(queries[:, None] ^ index_hashes[None, :]) <= 6)
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == sorted(map(tuple, brute.tolist()))
    assert {(0, 5), (2, 11), (3, 13)} <= set(zip(a.tolist(), b.tolist(), strict=True))
    assert (1, 9) not in set(zip(a.tolist(), b.tolist(), strict=True))


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
    assert all(0.0 <= r["distance"] <= 0.25 for r in rows if r["kind"] == "near")
    assert "overlap: 5 of 5 evaluation images found in the corpus (exact 1, near 4)" in result.stdout


def test_rows_without_fingerprints_are_counted_unchecked(tmp_path) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    prints = eval_prints([("a", image)])
    table = pa.table({"key": ["k1", "k2"], "status": ["accepted", "accepted"], "split": ["train", "train"],
                      "phash": ["0" * 16, None]})  # fmt: skip
    pq.write_table(table, tmp_path / "old.parquet")
    result = find_overlap(prints, catalog_batches(tmp_path / "old.parquet"))
    assert (result.corpus_figures, result.unchecked, result.rows) == (2, 2, [])
