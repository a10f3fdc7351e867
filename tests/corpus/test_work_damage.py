"""Damaged work files (issue 23): a damaged work tar, released shard or pack is found before its images are copied
into new shards, the batches whose images it held are processed again with a warning; a damaged work Parquet is
treated as not done; never an empty or undecodable JPEG in a shard, never a traceback."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from biomedclip.corpus import assemble
from biomedclip.corpus.build import BuildConfig, build

from .test_build_reliability import Articles, _article, _outputs

SMALL = BuildConfig(shard_size=3, batch_articles=1)
IDS = ["PMC1", "PMC2", "PMC3"]


def _build(fixtures: Path, out: Path, ids: list[str]):
    return build([Articles([_article(fixtures, pmcid) for pmcid in ids])], out, SMALL)


@pytest.fixture(scope="module")
def reference(shared_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The released files of an undisturbed build of the three articles (the same package: duplicates)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    _build(shared_fixtures, out, IDS)
    return _outputs(out)


def _phase_1_only(fixtures: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build killed after phase 1: the work batches (tars and Parquet rows) are in OUT, nothing released."""

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(assemble, "assemble", killed)
        with pytest.raises(KeyboardInterrupt):
            _build(fixtures, out, IDS)


def _jpeg_members(tar_path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        return [member for member in tar if member.name.endswith(".jpg")]


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def _every_shard_image_decodes(out: Path) -> None:
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    Image.open(io.BytesIO(tar.extractfile(member).read())).load()


@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_a_damaged_work_tar_is_processed_again(shared_fixtures, tmp_path, monkeypatch, reference, damage) -> None:
    out = tmp_path / "out"
    _phase_1_only(shared_fixtures, out, monkeypatch)
    tars = sorted(out.glob("work/*/batches/*/*.tar"))
    assert len(tars) == 3
    member = _jpeg_members(tars[1])[0]
    if damage == "zeroed":
        _overwrite(tars[1], member.offset_data + 100, b"\0" * 200)
    else:
        tars[1].write_bytes(tars[1].read_bytes()[: member.offset_data + 50])
    summary = _build(shared_fixtures, out, IDS)
    assert len(summary.warnings) == 1 and tars[1].stem in summary.warnings[0], summary.warnings
    assert "differ from what was stored" in summary.warnings[0]
    assert summary.articles_processed == 1  # the damaged batch's article, processed again
    assert _outputs(out) == reference
    _every_shard_image_decodes(out)


def test_a_damaged_released_shard_is_not_copied_forward(shared_fixtures, tmp_path, reference) -> None:
    out = tmp_path / "out"
    _build(shared_fixtures, out, ["PMC1", "PMC2"])
    assert not list(out.glob("work/*/batches/*/*.tar"))  # released: the next build reads the shards
    shard = sorted((out / "shards").glob("*.tar"))[0]
    member = _jpeg_members(shard)[1]
    _overwrite(shard, member.offset_data + 64, bytes(range(256)))
    summary = _build(shared_fixtures, out, IDS)
    assert summary.warnings and all("shards/" in warning for warning in summary.warnings), summary.warnings
    assert _outputs(out) == reference
    _every_shard_image_decodes(out)


def test_a_damaged_pack_is_not_copied_forward(shared_fixtures, tmp_path, reference) -> None:
    out = tmp_path / "out"
    _build(shared_fixtures, out, IDS)
    (pack,) = out.glob("work/*/images/pack-*.tar")  # the duplicates no shard holds
    member = _jpeg_members(pack)[0]
    _overwrite(pack, member.offset_data, b"\0" * member.size)
    summary = _build(shared_fixtures, out, ["PMC4", *IDS])  # a new article: phase 2 runs and copies the pack
    assert summary.warnings and "pack-" in summary.warnings[0], summary.warnings
    _every_shard_image_decodes(out)
    for pack in out.glob("work/*/images/pack-*.tar"):
        with tarfile.open(pack) as tar:
            for jpeg in _jpeg_members(pack):
                Image.open(io.BytesIO(tar.extractfile(jpeg.name).read())).load()


@pytest.mark.parametrize("damage", ["truncated", "garbled page"])
def test_a_damaged_work_parquet_is_not_done(shared_fixtures, tmp_path, monkeypatch, reference, damage) -> None:
    out = tmp_path / "out"
    _phase_1_only(shared_fixtures, out, monkeypatch)
    rows = sorted(out.glob("work/*/batches/*/*.parquet"))[0]
    data = rows.read_bytes()
    if damage == "truncated":
        rows.write_bytes(data[: len(data) // 2])
    else:  # inside the first column chunk's data: the footer still reads, a page's checksum does not match
        start = pq.ParquetFile(rows).metadata.row_group(0).column(1).data_page_offset
        garbled = bytes(b ^ 0x5A for b in data[start + 20 : start + 40])
        rows.write_bytes(data[: start + 20] + garbled + data[start + 40 :])
    summary = _build(shared_fixtures, out, IDS)
    assert len(summary.warnings) == 1 and rows.stem in summary.warnings[0], summary.warnings
    assert "cannot be read" in summary.warnings[0]
    assert summary.articles_processed == 1
    assert _outputs(out) == reference


def test_the_cli_prints_one_warning_line_and_succeeds(shared_fixtures, tmp_path, monkeypatch) -> None:
    from biomedclip.cli import main

    out = tmp_path / "out"
    package = shared_fixtures / "pmc/packages/extracted/PMC10802347"
    command = ["corpus", "build", "--source", str(package), "--out", str(out), "--workers", "0"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(assemble, "assemble", killed)
        CliRunner().invoke(main, command)
    (rows,) = out.glob("work/*/batches/*/*.parquet")
    rows.write_bytes(b"PAR1 not a parquet file")
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    (warning,) = [line for line in result.output.splitlines() if "warning: " in line]  # tqdm's bar may precede it
    assert rows.stem in warning and "processed again" in warning
