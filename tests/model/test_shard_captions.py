"""Captions for the vocabulary come from the shards' ``.txt`` members, through the one shard reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from biomedclip.model.shards import iter_captions
from biomedclip.shards import ShardError, ShardWriter


def test_captions_stream_from_shards_and_a_bad_shard_is_named(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "train", max_samples=2) as writer:
        for i, caption in enumerate(["Cells under a microscope.", "  ", "A chest X-ray."]):
            writer.write(f"k{i}", b"\xff\xd8", caption, {"caption": caption})
    assert list(iter_captions(writer.paths)) == ["Cells under a microscope.", "A chest X-ray."]
    bad = tmp_path / "train-000009.tar"
    bad.write_bytes(writer.paths[0].read_bytes()[:700])
    with pytest.raises(ShardError, match=r"train-000009\.tar"):
        list(iter_captions([*writer.paths, bad]))
