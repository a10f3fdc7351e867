"""A build whose OUT is ``s3://bucket/prefix`` on the loopback S3 server: workers write their batches there."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from biomedclip.corpus.build import BuildConfig, build
from biomedclip.corpus.sources import open_source
from biomedclip.shards import expand_shards, iter_samples

TARBALLS = "pmc/packages/oa_package_tarballs"


def test_build_into_s3_matches_a_local_build_and_resumes(
    shared_fixtures: Path, s3_env: str, s3_client, empty_bucket: str, tmp_path: Path
) -> None:
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
    release = _pointer(s3_client, empty_bucket)["release"]
    for path in sorted((tmp_path / "local" / "shards").glob("*.tar")) + sorted(
        (tmp_path / "local" / "catalog").glob("*")
    ):
        name = f"corpus/{release}/{path.parent.name}/{path.name}"
        assert s3_client.get_object(Bucket=empty_bucket, Key=name)["Body"].read() == path.read_bytes(), name
    catalog = pq.read_table(
        io.BytesIO(s3_client.get_object(Bucket=empty_bucket, Key=f"corpus/{release}/catalog.parquet")["Body"].read())
    )
    assert catalog.num_rows == pq.read_table(tmp_path / "local" / "catalog.parquet").num_rows

    again = build([open_source(str(corpus))], f"s3://{empty_bucket}/corpus", config, workers=0)
    assert (again.articles_processed, again.articles_skipped) == (0, 3)


def _package(shared_fixtures: Path, tmp_path: Path) -> str:
    corpus = tmp_path / "corpus"
    shutil.copytree(shared_fixtures / "pmc/packages/extracted/PMC10802347", corpus / "PMC10802347")
    return str(corpus)


def _keys(client, bucket: str) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_an_s3_out_is_locked_by_a_conditional_put(shared_fixtures, s3_env, s3_client, empty_bucket, tmp_path) -> None:
    import os
    import socket
    import subprocess
    import sys

    import pytest

    from biomedclip.errors import InputError

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


def test_the_conditional_put_lets_one_of_two_writers_win(s3_env, empty_bucket) -> None:
    from biomedclip.corpus.outdir import OutDir

    first, second = OutDir(f"s3://{empty_bucket}/x"), OutDir(f"s3://{empty_bucket}/x")
    assert first.create_object("build.lock", b"one") is True
    assert second.create_object("build.lock", b"two") is False
    assert second.read_bytes("build.lock") == b"one"


def _pointer(client, bucket: str, out: str = "corpus") -> dict:
    return json.loads(client.get_object(Bucket=bucket, Key=f"{out}/RELEASE.json")["Body"].read())


def _release_agrees(client, bucket: str, urls: list[str]) -> str:
    """The release the pointer names: every file it lists is there with its size and SHA-256; the shards a reader
    resolves (``expand_shards``) are that release's, and hold exactly the catalog's accepted figures. Returns it."""
    pointer = _pointer(client, bucket)
    release, files = pointer["release"], pointer["files"]
    for name, expected in files.items():
        data = client.get_object(Bucket=bucket, Key=f"corpus/{release}/{name}")["Body"].read()
        assert expected == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    assert all(url.startswith(f"s3://{bucket}/corpus/{release}/shards/") for url in urls)
    catalog = pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=f"corpus/{release}/catalog.parquet")
                                       ["Body"].read()))  # fmt: skip
    accepted = {r["key"] for r in catalog.to_pylist() if r["status"] == "accepted"}
    assert {s.key for url in urls for s in iter_samples(url)} == accepted and accepted
    return release


def _shard_urls(client, bucket: str) -> list[str]:
    """A reader's shard list: the shard names of the current release, asked for as ``OUT/shards/NAME``."""
    names = [n.removeprefix("shards/") for n in _pointer(client, bucket)["files"] if n.endswith(".tar")]
    return expand_shards("::".join(f"s3://{bucket}/corpus/shards/{name}" for name in names))


def test_s3_readers_see_the_previous_release_until_a_new_one_is_complete(
    shared_fixtures, s3_env, s3_client, empty_bucket, tmp_path, monkeypatch
) -> None:
    import pytest

    from biomedclip.corpus.outdir import OutDir

    out = f"s3://{empty_bucket}/corpus"
    source = _package(shared_fixtures, tmp_path)
    build([open_source(source)], out)
    before = _shard_urls(s3_client, empty_bucket)
    first = _release_agrees(s3_client, empty_bucket, before)

    uploads: list[str] = []
    real = OutDir.put_file

    def cut(self, name, source_path):
        uploads.append(name)
        if len(uploads) == 3:
            raise KeyboardInterrupt  # killed in the middle of the upload
        real(self, name, source_path)

    monkeypatch.setattr(OutDir, "put_file", cut)
    with pytest.raises(KeyboardInterrupt):
        build([open_source(source)], out, BuildConfig(shard_size=1))  # another shard layout: every file changes
    assert len(uploads) == 3 and uploads[0].startswith("releases/") and not uploads[0].startswith(first)
    assert _shard_urls(s3_client, empty_bucket) == before  # readers still see the first release, whole
    assert _release_agrees(s3_client, empty_bucket, before) == first

    monkeypatch.setattr(OutDir, "put_file", real)
    build([open_source(source)], out, BuildConfig(shard_size=1))
    after = _shard_urls(s3_client, empty_bucket)
    second = _release_agrees(s3_client, empty_bucket, after)
    assert second != first and len(after) > len(before)
    kept = {k.removeprefix("corpus/").split("/")[1] for k in _keys(s3_client, empty_bucket)
            if k.startswith("corpus/releases/")}  # fmt: skip
    assert kept == {first.split("/")[1], second.split("/")[1]}  # the cut upload is gone; the previous one stays
    assert [s.key for s in iter_samples(before[0])]  # a reader that resolved the first release still reads it


def test_an_s3_out_of_the_flat_layout_is_still_read_then_replaced(
    shared_fixtures, s3_env, s3_client, empty_bucket, tmp_path
) -> None:
    local = tmp_path / "local"
    build([open_source(_package(shared_fixtures, tmp_path))], local)
    flat = {str(p.relative_to(local)): p for p in sorted(local.rglob("*"))
            if p.is_file() and p.relative_to(local).parts[0] in ("shards", "catalog")}  # fmt: skip
    for name, path in flat.items():  # what a build before releases left: files under OUT, a flat manifest
        s3_client.put_object(Bucket=empty_bucket, Key=f"corpus/{name}", Body=path.read_bytes())
    s3_client.put_object(Bucket=empty_bucket, Key="corpus/RELEASE.json", Body=json.dumps(
        {name: {"bytes": p.stat().st_size} for name, p in flat.items()}).encode())  # fmt: skip
    tar = next(name for name in flat if name.endswith(".tar"))
    assert expand_shards(f"s3://{empty_bucket}/corpus/{tar}") == [f"s3://{empty_bucket}/corpus/{tar}"]

    out = f"s3://{empty_bucket}/corpus"
    build([open_source(str(tmp_path / "corpus"))], out)
    assert f"corpus/{tar}" in _keys(s3_client, empty_bucket)  # the flat layout is now the previous release
    _release_agrees(s3_client, empty_bucket, _shard_urls(s3_client, empty_bucket))
    build([open_source(str(tmp_path / "corpus"))], out)
    assert not {k for k in _keys(s3_client, empty_bucket) if k.startswith(("corpus/shards/", "corpus/catalog"))}
    _release_agrees(s3_client, empty_bucket, _shard_urls(s3_client, empty_bucket))
