"""Corpus shards as an evaluation dataset: the whole spec grammar, and labelled shards from ``imagefolder:``."""

from __future__ import annotations

import io
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
    both = load_dataset(f"shards:{tmp_path}/test-000002.tar::{tmp_path}/train-*.tar", "test")
    assert [k.split("/")[1] for k in both.keys] == ["k4", "k0", "k1"]
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
