"""The build over the other sources (S3, labelled image folders) and the build's settings on the command line."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from biomedclip.corpus.build import build
from biomedclip.corpus.sources import open_source

TARBALL_DIR = "pmc/packages/oa_package_tarballs"


def test_build_from_s3_with_an_md5_mismatch(
    shared_fixtures: Path, s3_endpoint, s3_client, empty_bucket, tmp_path, write_article
) -> None:
    article = next(open_source(str(shared_fixtures / TARBALL_DIR / "PMC7112410.tar.gz")).articles())
    media = {name: article.open_media(name).read() for name in article.media if name.endswith(".jpg")}
    write_article(s3_client, empty_bucket, "PMC7112410", 1, article.xml, media)
    s3_client.put_object(Bucket=empty_bucket, Key="PMC7112410.1/gr2_lrg.jpg", Body=media["gr2_lrg.jpg"][:1000])
    source = open_source(f"s3://{empty_bucket}", endpoint_url=s3_endpoint)
    summary = build([source], tmp_path / "out", workers=0)
    rows = {r["fig_id"]: r for r in pq.read_table(tmp_path / "out" / "catalog.parquet").to_pylist()}
    assert summary.accepted == 3
    assert rows["fig2"]["reason"] == "md5_mismatch"  # transient: the article is tried again on the next run
    assert all(rows[f]["status"] == "accepted" and rows[f]["version"] == 1 for f in ("fig1", "fig3", "fig4"))


def test_cli_builds_an_image_folder_with_a_caption_template(shared_fixtures: Path, tmp_path: Path, run_cli) -> None:
    images = sorted((shared_fixtures / "images/bccd/JPEGImages").glob("*.jpg"))[:4]
    for i, path in enumerate(images):
        folder = tmp_path / "cells" / ("white_blood_cell" if i % 2 else "red-blood-cell")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder)
    out = tmp_path / "out"
    result = run_cli("corpus", "build", "--source", f"imagefolder:{tmp_path / 'cells'}", "--out", out,
                     "--workers", "1", "--caption-template", "a blood smear showing a {label}")  # fmt: skip
    assert "figures: 4, accepted:" in result.stdout and "figures/s" in result.stdout
    captions = {r["caption"] for r in pq.read_table(out / "catalog.parquet").to_pylist()}
    assert captions == {"a blood smear showing a white blood cell", "a blood smear showing a red blood cell"}
    assert list((out / "shards").glob("*.tar"))


def _leaf_paths(value: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf field of a dataclass tree, walked here independently of the CLI (less the fields the program
    sets from another setting, marked ``metadata={"setting": False}``: ``WorkConfig.unit`` is ``BuildConfig.unit``)."""
    paths = []
    for field in dataclasses.fields(value):
        if field.metadata.get("setting") is False:
            continue
        child = getattr(value, field.name)
        paths += _leaf_paths(child, (*path, field.name)) if dataclasses.is_dataclass(child) else [(*path, field.name)]
    return paths


def test_every_build_setting_is_an_option(run_cli) -> None:
    from biomedclip.corpus.build import BuildConfig
    from biomedclip.corpus.sources import SourceLimits

    help_text = run_cli("corpus", "build", "--help").stdout
    paths = _leaf_paths(BuildConfig()) + [("source", *p) for p in _leaf_paths(SourceLimits())]
    assert len(paths) >= 15
    for path in paths:
        assert f"--{'.'.join(path[-2:]).replace('_', '-')}" in help_text, path
    assert "--config" in help_text and "-c," in help_text and "-w," in help_text and "-o," in help_text


def test_config_file_and_options_reach_the_build(shared_fixtures: Path, tmp_path: Path, run_cli) -> None:
    images = sorted((shared_fixtures / "images/bccd/JPEGImages").glob("*.jpg"))[:4]
    for i, path in enumerate(images):
        folder = tmp_path / "cells" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder)
    config = tmp_path / "corpus.yaml"
    config.write_text(
        "split: {train: 0.5, val: 0.25, test: 0.25, salt: from-file}\n"
        "work: {image: {jpeg_quality: 70}, filters: {min_side: 64}}\n"
        "source: {max_member_bytes: 10000000}\n"
    )
    out = tmp_path / "out"
    run_cli("corpus", "build", "--source", f"imagefolder:{tmp_path / 'cells'}", "-o", out, "-w", "0",
            "-c", config, "--split.salt", "from-option", "--no-filters.reject-placeholder-captions",
            "--caption-template", "a blood smear of {label}")  # fmt: skip
    written = json.loads((out / "build_config.json").read_text())
    assert (written["split"]["train"], written["split"]["val"], written["split"]["test"]) == (0.5, 0.25, 0.25)
    assert written["split"]["salt"] == "from-option"  # the option overrides the file
    assert written["work"]["image"]["jpeg_quality"] == 70 and written["work"]["filters"]["min_side"] == 64
    assert written["work"]["filters"]["reject_placeholder_captions"] is False
    assert written["work"]["image"]["max_short_side"] == 512  # defaults fill the rest
    assert written["dedup"] == {"max_distance": 4, "max_pixel_distance": 0.25}


@pytest.mark.parametrize(
    ("text", "message"),
    [("split: {trian: 0.5}\n", "unknown setting 'split.trian'"), ("shard_size: many\n", "shard_size must be int")],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, run_cli, text: str, message: str) -> None:
    config = tmp_path / "corpus.yaml"
    config.write_text(text)
    proc = run_cli("corpus", "build", "--source", tmp_path, "-o", tmp_path / "out", "-c", config, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_workers_default_is_computed_when_the_command_runs(monkeypatch) -> None:
    from biomedclip.corpus import cli_options
    from biomedclip.corpus.build_cli import build as command

    (workers,) = [p for p in command.params if p.name == "workers"]
    assert workers.default is None  # not os.cpu_count() frozen at import
    monkeypatch.setattr(cli_options.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert cli_options.default_workers() == 3
