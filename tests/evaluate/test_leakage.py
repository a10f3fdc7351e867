"""``--train-catalog``: evaluated images compared with a corpus catalog by SHA-256 of the source bytes."""

from __future__ import annotations

import hashlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biomedclip.corpus.images import process_image
from biomedclip.corpus.rows import CATALOG_SCHEMA
from biomedclip.errors import InputError
from biomedclip.evaluate.datasets import load_dataset
from biomedclip.evaluate.leakage import check_overlap, leakage_line, training_hashes
from biomedclip.evaluate.results import make_result


def test_the_catalog_hashes_source_bytes_not_the_shard_jpeg(image_paths) -> None:
    """What check_overlap relies on: corpus/images.py's sha256 is of the bytes read from the source."""
    data = image_paths[0].read_bytes()
    processed = process_image(data)
    assert processed.sha256 == hashlib.sha256(data).hexdigest() != hashlib.sha256(processed.jpeg).hexdigest()


def test_overlap_counts_accepted_training_images_only(tmp_path, image_paths, shared_fixtures) -> None:
    for i, path in enumerate(image_paths[:8]):
        (tmp_path / "data" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "data" / f"c{i % 2}" / path.name)
    data = load_dataset(f"imagefolder:{tmp_path / 'data'}", "all")
    digest = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in image_paths[:8]}
    names = sorted(digest)
    rows = [
        {"key": "a", "sha256": digest[names[0]], "split": "train", "status": "accepted"},
        {"key": "b", "sha256": digest[names[1]], "split": "train", "status": "accepted"},
        {"key": "c", "sha256": digest[names[2]], "split": "train", "status": "rejected"},  # not in the shards
        {"key": "d", "sha256": digest[names[3]], "split": "test", "status": "accepted"},  # not trained on
        {"key": "e", "sha256": None, "split": "train", "status": "rejected"},
        {"key": "f", "sha256": "0" * 64, "split": "train", "status": "accepted"},
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA), tmp_path / "catalog.parquet")
    assert training_hashes(tmp_path) == {digest[names[0]], digest[names[1]], "0" * 64}
    report = check_overlap(data, tmp_path)
    assert report["checked"] == 8 and report["unchecked"] == 0 and report["overlap"] == 2
    assert sorted(key.split("/")[-1] for key in report["examples"]) == names[:2]
    assert report["catalog"] == str(tmp_path / "catalog.parquet") and "source image file bytes" in report["compared"]
    arrays = load_dataset(str(shared_fixtures / "labeled" / "breastmnist_28_trainval.npz"), "val")
    assert check_overlap(arrays, tmp_path / "catalog.parquet") | {"training_images": 0} == {
        "catalog": str(tmp_path / "catalog.parquet"),
        "compared": report["compared"],
        "training_images": 0,
        "catalog_digest": report["catalog_digest"],
        "checked": 0,
        "unchecked": len(arrays),
        "unchecked_reason": "images inside shards or arrays have no source file to hash",
        "overlap": 0,
        "examples": [],
        "known_overlap": None,
    }
    three = sorted([digest[names[0]], digest[names[1]], "0" * 64])
    assert report["catalog_digest"] == hashlib.sha256("\n".join(three).encode()).hexdigest()[:12]


def test_bad_catalogs_are_input_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="no corpus catalog"):
        training_hashes(tmp_path)
    (tmp_path / "catalog.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="is not a corpus catalog"):
        training_hashes(tmp_path / "catalog.parquet")


def test_the_leakage_line_says_what_was_and_was_not_checked() -> None:
    """The issue's "Leakage: 0 of 0" on shards, where 253 images were not checked."""
    base = {"catalog": "ft/catalog", "catalog_digest": "abc", "overlap": 0}
    assert leakage_line({}) == (
        "leakage: not checked (no --train-catalog: scored images were not compared with a training corpus)"
    )
    shards = {"leakage": base | {"checked": 0, "unchecked": 253}}
    assert leakage_line(shards) == (
        "leakage: NOT checked: none of the 253 scored images is a file "
        "(images inside shards or arrays have no source file to hash)"
    )
    clean = {"leakage": base | {"checked": 98, "unchecked": 2}}
    assert leakage_line(clean) == (
        "leakage: none of 98 checked images is among the training images of ft/catalog; 2 NOT checked "
        "(images inside shards or arrays have no source file to hash)"
    )
    leaked = {"leakage": base | {"checked": 1311, "unchecked": 0, "overlap": 766}}
    assert leakage_line(leaked) == "leakage: 766 of 1311 checked images are training images of ft/catalog"


def test_a_result_checked_against_a_catalog_has_its_own_identity() -> None:
    """A rerun without --train-catalog (or with another catalog) never replaces the flagged result's file."""
    args = ("zeroshot", "local-dir:run/final", "imagefolder:xray", "test", {"max_items": None})
    leak = {"catalog": "ft", "catalog_digest": "aaaaaaaaaaaa", "checked": 5, "unchecked": 0, "overlap": 3}
    unchecked = make_result(*args[:4], {}, args[4])
    flagged = make_result(*args[:4], {}, args[4] | {"train_catalog": "ft"}, leakage=leak)
    other = make_result(*args[:4], {}, args[4] | {"train_catalog": "ft2"}, leakage=leak | {"catalog_digest": "b" * 12})
    same = make_result(*args[:4], {}, args[4] | {"train_catalog": "elsewhere/ft"}, leakage=leak)
    assert len({unchecked["identity"], flagged["identity"], other["identity"]}) == 3
    assert same["identity"] == flagged["identity"]  # the same training images, wherever the catalog lies


def test_a_corpus_overlap_report_names_the_scored_images_with_copies_in_training(tmp_path) -> None:
    """``--train-overlap``: the scored items that a ``corpus overlap`` report found, per kind, and the warning."""
    import json
    from types import SimpleNamespace

    from biomedclip.evaluate.results import leakage_warning

    rows = [
        {"key": "PMC1_F1", "eval": "sick/a.png", "kind": "near", "distance": 0.1},
        {"key": "PMC2_F1", "eval": "sick/a.png", "kind": "exact", "distance": 0.0},  # both: counted as exact
        {"key": "PMC3_F2", "eval": "well/b.png", "kind": "near", "distance": 0.2},
        {"key": "PMC4_F1", "eval": "well/not-scored.png", "kind": "near", "distance": 0.2},
    ]
    report = tmp_path / "overlap.jsonl"
    report.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = SimpleNamespace(keys=["sick/a.png", "well/b.png", "well/c.png"], paths=None)
    leak = check_overlap(data, None, overlap_rows=report)
    assert leak["known_overlap"] == {"file": "overlap.jsonl", "scored": 3, "exact": 1, "near": 1,
                                     "examples": ["sick/a.png", "well/b.png"]}  # fmt: skip
    assert leak["overlap"] == 0 and leak["catalog"] is None
    assert leakage_warning({"leakage": leak}) == (
        "WARNING: LEAKAGE: 2 of 3 scored images have copies in the training corpus according to overlap.jsonl "
        "(exact 1, near 1); these numbers overstate the model"
    )
    clean = check_overlap(SimpleNamespace(keys=["well/c.png"], paths=None), None, overlap_rows=report)
    assert leakage_warning({"leakage": clean}) == ""
    report.write_text('{"key": "x"}\n')
    with pytest.raises(InputError, match=r"overlap\.jsonl:1: not a 'corpus overlap' row"):
        check_overlap(data, None, overlap_rows=report)
