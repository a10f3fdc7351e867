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
