"""Corpus shards as an evaluation dataset: the whole spec grammar, and labelled shards from ``imagefolder:``."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomedclip.evaluate.datasets import DatasetError, ImageTextPairs, LabeledImages, load_dataset
from biomedclip.shards import ShardWriter

COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def _png(rgb: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), rgb).save(buffer, format="PNG")  # lossless: decoded pixels are exact
    return buffer.getvalue()


def _shards(folder: Path, classes: list[str | None], split: str = "test", per_shard: int = 2) -> list[Path]:
    with ShardWriter(folder, split, max_samples=per_shard) as writer:
        for i, name in enumerate(classes):
            color = name or list(COLORS)[i % 3]
            writer.write(f"k{i}", _png(COLORS[color]), f"a {color} square", {"class_name": name, "pmcid": f"P{i}"})
    return writer.paths


def test_brace_and_glob_specs_select_shards(tmp_path: Path) -> None:
    _shards(tmp_path, [None] * 5)
    _shards(tmp_path, [None] * 2, split="train")
    whole = load_dataset(f"shards:{tmp_path}", "test")
    assert isinstance(whole, ImageTextPairs) and len(whole) == 5
    first = load_dataset(f"shards:{tmp_path}/test-{{000000..000000}}.tar", "test")
    assert first.keys == ["test-000000.tar/k0", "test-000000.tar/k1"] and first.captions == whole.captions[:2]
    assert load_dataset(f"{tmp_path}/test-{{000000..000000}}.tar", "test").keys == first.keys  # detected
    both = load_dataset(f"shards:{tmp_path}/test-000002.tar::{tmp_path}/train-*.tar", "all")
    assert [k.split("/")[1] for k in both.keys] == ["k4", "k0", "k1"]
    only_test = load_dataset(f"shards:{tmp_path}/test-000002.tar::{tmp_path}/train-*.tar", "test")
    assert [k.split("/")[1] for k in only_test.keys] == ["k4"]  # the train shards' samples are not test
    assert np.asarray(whole[4]).reshape(-1, 3).tolist()[0] == list(COLORS["green"])  # read by offset
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(f"shards:{tmp_path}/test-{{000000..000009}}.tar", "test")
    with pytest.raises(DatasetError, match=r"no val-NNNNNN\.tar shards"):
        load_dataset(f"shards:{tmp_path}", "val")


def test_shards_with_a_class_in_every_record_are_labelled(tmp_path: Path) -> None:
    names = ["red", "blue", "red", "green", "blue"]
    _shards(tmp_path, names)
    data = load_dataset(f"shards:{tmp_path}", "test")
    assert isinstance(data, LabeledImages) and data.classnames == ("blue", "green", "red")
    assert isinstance(data, ImageTextPairs) and data.captions[1] == "a blue square"  # retrieval works too
    part = data.subset([4, 0])
    assert isinstance(part, LabeledImages) and [part.classnames[i] for i in part.labels] == ["blue", "red"]
    assert np.asarray(part[0])[0, 0].tolist() == list(COLORS["blue"]) and part.identity != data.identity
    assert [data.classnames[i] for i in data.labels] == names
    for i, name in enumerate(names):
        assert np.asarray(data[i])[0, 0].tolist() == list(COLORS[name])


def test_shards_where_some_records_lack_a_class_are_pairs(tmp_path: Path) -> None:
    _shards(tmp_path, ["red", None, "blue"])
    assert isinstance(load_dataset(f"shards:{tmp_path}", "test"), ImageTextPairs)


def test_compressed_shards_are_refused_with_a_reason(tmp_path: Path) -> None:
    (plain,) = _shards(tmp_path / "plain", [None, None])
    with tarfile.open(tmp_path / "test-000000.tar.gz", "w:gz") as out, tarfile.open(plain) as tar:
        for member in tar:
            out.addfile(member, tar.extractfile(member))
    with pytest.raises(DatasetError, match="compressed"):
        load_dataset(f"shards:{tmp_path}/test-000000.tar.gz", "test")


def _shards_with_records(folder: Path, name: str, splits: list[str | None]) -> None:
    """One shard file called ``name`` whose records say ``splits`` (None: no split field)."""
    with ShardWriter(folder, name, max_samples=100) as writer:
        for i, split in enumerate(splits):
            record = {"pmcid": f"P{i}"} | ({"split": split} if split else {})
            writer.write(f"{name}{i}", _png(COLORS["red"]), f"caption {name} {i}", record)


def test_a_shard_specs_split_is_read_from_the_records_never_from_the_command(tmp_path: Path) -> None:
    """The issue's glob: 448 pairs labelled [test], 350 of them from train/val shards. Here records disagree
    with shard names too: a record's split wins."""
    _shards_with_records(tmp_path, "test", ["test", "test", "train"])  # a mislabelled record in a test shard
    _shards_with_records(tmp_path, "train", ["train"] * 4)
    _shards_with_records(tmp_path, "val", ["val", "val"])
    spec = f"shards:{tmp_path}/*.tar"
    test = load_dataset(spec, "test")
    assert len(test) == 2 and test.found == 9 and all(k.startswith("test-000000.tar/test") for k in test.keys)
    assert test.rule == "split test read from the records: 2 of 9 samples (2 test, 5 train, 2 val)"
    train = load_dataset(spec, "train")
    assert sorted(k.split("/")[1] for k in train.keys) == ["test2", "train0", "train1", "train2", "train3"]
    every = load_dataset(f"shards:{tmp_path}", "all")  # a folder: every split's shards
    assert len(every) == 9 and every.rule == "all splits, read from the records (2 test, 5 train, 2 val)"
    with pytest.raises(DatasetError, match=r"no val samples .*2 test, 5 train"):
        load_dataset(f"shards:{tmp_path}/test-*.tar::{tmp_path}/train-*.tar", "val")


def test_samples_with_no_known_split_are_scored_only_with_split_all(tmp_path: Path) -> None:
    _shards_with_records(tmp_path, "figures", [None, None])  # no split in the records nor the names
    with pytest.raises(DatasetError, match=r"2 sample.* name no split .* --split all"):
        load_dataset(f"shards:{tmp_path}/figures-*.tar", "test")
    assert len(load_dataset(f"shards:{tmp_path}/figures-*.tar", "all")) == 2


def test_eval_retrieval_on_a_glob_labels_its_pairs_by_their_records(tmp_path: Path) -> None:
    """Issue 21: ``eval retrieval`` with a glob over train/val/test shards said ``[test]`` for every pair. The
    command scores the records' test pairs only and says so; ``--split all`` names each split's share."""
    from click.testing import CliRunner

    from biomedclip.cli import main

    shards = tmp_path / "shards"
    _shards_with_records(shards, "test", ["test", "test", "train"])
    _shards_with_records(shards, "train", ["train"] * 4)
    _shards_with_records(shards, "val", ["val", "val"])
    results = {}
    for split in ("test", "all"):
        out = tmp_path / split
        args = ["eval", "retrieval", "-m", "tiny", "--device", "cpu", "-d", f"shards:{shards}/*.tar", "--split", split]
        printed = CliRunner().invoke(main, [*args, "-o", str(out)], catch_exceptions=False)
        assert printed.exit_code == 0, printed.output
        (path,) = out.glob("retrieval__*.result.json")
        results[split] = (printed.output.replace("\n", " "), json.loads(path.read_text()))
    output, result = results["test"]
    assert result["split"] == "test" and result["counts"]["n"] == 2 and result["counts"]["found"] == 9
    assert "split test read from the records: 2 of 9 samples (2 test, 5 train, 2 val)" in output
    output, result = results["all"]
    assert result["split"] == "all" and result["counts"]["n"] == 9
    assert "all splits, read from the records (2 test, 5 train, 2 val)" in output and "[test]" not in output
