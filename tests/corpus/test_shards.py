"""Shards: readable by webdataset (as open_clip's trainer reads them), rolled over by size, byte-deterministic."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import webdataset as wds
from PIL import Image

from biomedclip.corpus.shards import ShardWriter


def _jpeg(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="JPEG")
    return buf.getvalue()


def _write(directory: Path, n: int, max_samples: int) -> list[Path]:
    with ShardWriter(directory, "train", max_samples=max_samples) as writer:
        for i in range(n):
            key = f"PMC{i}_fig{i}_with_a_rather_long_identifier_{'x' * 90}"
            writer.write(key, _jpeg("red"), f"caption {i} µm", {"pmcid": f"PMC{i}", "caption": f"caption {i} µm"})
    return writer.paths


def test_shards_roll_over_and_are_readable_by_webdataset(tmp_path: Path) -> None:
    paths = _write(tmp_path, 5, max_samples=2)
    assert [p.name for p in paths] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert not list(tmp_path.glob("*.tmp"))
    dataset = wds.DataPipeline(  # the stages open_clip's --dataset-type webdataset uses
        wds.SimpleShardList([str(p) for p in paths]),
        wds.tarfile_to_samples(),
        wds.decode("pilrgb"),
        wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.to_tuple("image", "text", "json"),
    )
    samples = list(dataset)
    assert len(samples) == 5
    image, text, record = samples[3]
    assert image.size == (40, 30) and text == "caption 3 µm" and record["pmcid"] == "PMC3"


def test_shards_are_byte_identical_across_runs(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", 3, max_samples=10)
    second = _write(tmp_path / "b", 3, max_samples=10)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    with tarfile.open(first[0]) as tar:
        names = tar.getnames()
    assert len(names) == 9 and names[0].endswith(".jpg") and names[1].endswith(".txt")
