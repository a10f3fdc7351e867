"""The build over the other sources: S3 (new PMC layout, md5 checks) and labelled image folders via the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq

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
