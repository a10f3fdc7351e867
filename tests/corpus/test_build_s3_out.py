"""A build whose OUT is ``s3://bucket/prefix`` on the loopback S3 server: workers write their batches there."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from biomedclip.corpus.build import BuildConfig, build
from biomedclip.corpus.sources import open_source

TARBALLS = "pmc/packages/oa_package_tarballs"


def test_build_into_s3_matches_a_local_build_and_resumes(
    shared_fixtures: Path, s3_endpoint: str, s3_client, empty_bucket: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("BIOMEDCLIP_S3_ENDPOINT", s3_endpoint)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("PMC7112410.tar.gz", "PMC7135076.tar.gz"):
        shutil.copy(shared_fixtures / TARBALLS / name, corpus)
    shutil.copytree(shared_fixtures / "pmc/packages/extracted/PMC10802347", corpus / "PMC10802347")
    config = BuildConfig(shard_size=3, batch_articles=1)
    local = build([open_source(str(corpus))], tmp_path / "local", config, workers=2)
    remote = build([open_source(str(corpus))], f"s3://{empty_bucket}/corpus", config, workers=2)
    assert (remote.accepted, remote.shards) == (local.accepted, local.shards) == (9, 5)

    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=empty_bucket)["Contents"]}
    assert sum(k.startswith("corpus/work/") and k.endswith(".parquet") for k in keys) == 3  # one per batch
    for path in sorted((tmp_path / "local" / "shards").glob("*.tar")) + sorted(
        (tmp_path / "local" / "catalog").glob("*")
    ):
        name = f"corpus/{path.parent.name}/{path.name}"
        assert s3_client.get_object(Bucket=empty_bucket, Key=name)["Body"].read() == path.read_bytes(), name
    catalog = pq.read_table(
        io.BytesIO(s3_client.get_object(Bucket=empty_bucket, Key="corpus/catalog.parquet")["Body"].read())
    )
    assert catalog.num_rows == pq.read_table(tmp_path / "local" / "catalog.parquet").num_rows

    again = build([open_source(str(corpus))], f"s3://{empty_bucket}/corpus", config, workers=0)
    assert (again.articles_processed, again.articles_skipped) == (0, 3)


def _s3_env(monkeypatch, endpoint: str) -> None:
    monkeypatch.setenv("BIOMEDCLIP_S3_ENDPOINT", endpoint)
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
        monkeypatch.setenv(name, value)


def _package(shared_fixtures: Path, tmp_path: Path) -> str:
    corpus = tmp_path / "corpus"
    shutil.copytree(shared_fixtures / "pmc/packages/extracted/PMC10802347", corpus / "PMC10802347")
    return str(corpus)


def _keys(client, bucket: str) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_an_s3_out_is_locked_by_a_conditional_put(shared_fixtures, s3_endpoint, s3_client, empty_bucket, tmp_path,
                                                  monkeypatch) -> None:  # fmt: skip
    import os
    import socket
    import subprocess
    import sys

    import pytest

    from biomedclip.errors import InputError

    _s3_env(monkeypatch, s3_endpoint)
    out = f"s3://{empty_bucket}/corpus"
    source = _package(shared_fixtures, tmp_path)
    live = f"pid {os.getpid()} on {socket.gethostname()}"
    s3_client.put_object(Bucket=empty_bucket, Key="corpus/build.lock", Body=live.encode())
    with pytest.raises(InputError, match=rf"another build is writing to {out} \({live}\).*delete {out}/build.lock"):
        build([open_source(source)], out)
    assert "corpus/shards/sizes.json" not in _keys(s3_client, empty_bucket)  # the refused build wrote nothing

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"pid {dead.pid} on {socket.gethostname()}"
    s3_client.put_object(Bucket=empty_bucket, Key="corpus/build.lock", Body=stale.encode())
    summary = build([open_source(source)], out)
    assert summary.accepted > 0 and any(stale in w and "taken over" in w for w in summary.warnings)
    assert "corpus/build.lock" not in _keys(s3_client, empty_bucket)  # released at the end


def test_the_conditional_put_lets_one_of_two_writers_win(s3_endpoint, empty_bucket, monkeypatch) -> None:
    from biomedclip.corpus.outdir import OutDir

    _s3_env(monkeypatch, s3_endpoint)
    first, second = OutDir(f"s3://{empty_bucket}/x"), OutDir(f"s3://{empty_bucket}/x")
    assert first.create_object("build.lock", b"one") is True
    assert second.create_object("build.lock", b"two") is False
    assert second.read_bytes("build.lock") == b"one"


def test_an_s3_release_is_marked_by_a_manifest_written_last(shared_fixtures, s3_endpoint, s3_client, empty_bucket,
                                                            tmp_path, monkeypatch) -> None:  # fmt: skip
    import hashlib
    import json

    import pytest

    from biomedclip.corpus.outdir import OutDir

    _s3_env(monkeypatch, s3_endpoint)
    out = f"s3://{empty_bucket}/corpus"
    source = _package(shared_fixtures, tmp_path)
    build([open_source(source)], out)

    def manifest_agrees() -> None:
        manifest = json.loads(s3_client.get_object(Bucket=empty_bucket, Key="corpus/RELEASE.json")["Body"].read())
        released = {k.removeprefix("corpus/") for k in _keys(s3_client, empty_bucket)
                    if k.startswith(("corpus/shards/", "corpus/catalog"))}  # fmt: skip
        assert released <= set(manifest)
        for name in released:
            data = s3_client.get_object(Bucket=empty_bucket, Key=f"corpus/{name}")["Body"].read()
            assert manifest[name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name

    manifest_agrees()
    uploads: list[str] = []
    real = OutDir.put_file

    def cut(self, name, source_path):
        if name.startswith(("shards/", "catalog")):
            uploads.append(name)
            if len(uploads) == 2:
                raise KeyboardInterrupt  # killed in the middle of the release
        real(self, name, source_path)

    monkeypatch.setattr(OutDir, "put_file", cut)
    with pytest.raises(KeyboardInterrupt):
        build([open_source(source)], out, BuildConfig(shard_size=1))  # another shard layout: every file changes
    assert "corpus/RELEASE.json" not in _keys(s3_client, empty_bucket)  # a reader sees the release is incomplete
    monkeypatch.setattr(OutDir, "put_file", real)
    build([open_source(source)], out, BuildConfig(shard_size=1))
    manifest_agrees()
