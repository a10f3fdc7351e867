"""The Ray Data engine (a local Ray) runs the same per-article work and gives the same corpus as local workers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from biomedclip.corpus.build import build
from biomedclip.corpus.sources import open_source

SKIP = ("work", "report", "build.lock")


@pytest.mark.slow
def test_ray_engine_matches_local_workers(shared_fixtures: Path, tmp_path: Path) -> None:
    import ray

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("PMC7112410.tar.gz", "PMC7135076.tar.gz"):
        shutil.copy(shared_fixtures / "pmc/packages/oa_package_tarballs" / name, corpus)
    shutil.copytree(shared_fixtures / "pmc/packages/extracted/PMC10802347", corpus / "PMC10802347")
    local = build([open_source(str(corpus))], tmp_path / "local", workers=2)
    try:
        on_ray = build([open_source(str(corpus))], tmp_path / "ray", engine="ray", workers=2)
    finally:
        ray.shutdown()
    assert (on_ray.articles_processed, on_ray.accepted) == (local.articles_processed, local.accepted) == (3, 9)

    def outputs(out: Path) -> dict[str, bytes]:  # shards, catalog parts, catalog.parquet, clusters, stats
        files = sorted(p for p in out.rglob("*") if p.is_file() and p.relative_to(out).parts[0] not in SKIP)
        return {str(p.relative_to(out)): p.read_bytes() for p in files}

    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    assert len(outputs(tmp_path / "local")) > 8
