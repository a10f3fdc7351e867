"""The shard contract module: spec grammar, the writer, the sample iterator, offsets, sizes.json, S3 and HTTP."""

from __future__ import annotations

import functools
import http.server
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from biomedclip.errors import InputError, RunError
from biomedclip.shards import (
    CATALOG_FIELDS,
    INDEX_FIELDS,
    SHARD_RECORD_FIELDS,
    ShardError,
    ShardSpecError,
    ShardWriter,
    arrow_schema,
    count_samples,
    expand_shards,
    iter_samples,
    read_member,
    read_sizes,
    shard_sizes,
    split_name,
    write_sizes,
)


def _jpeg(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="JPEG")
    return buf.getvalue()


def _write(directory: Path, n: int, max_samples: int, split: str = "train") -> ShardWriter:
    with ShardWriter(directory, split, max_samples=max_samples) as writer:
        for i in range(n):
            key = f"PMC{i}_fig{i}_with_a_rather_long_identifier_{'x' * 90}"
            writer.write(key, _jpeg("red"), f"caption {i} µm", {"pmcid": f"PMC{i}", "caption": f"caption {i} µm"})
    return writer


def _raw_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# --- writer -----------------------------------------------------------------------------------------------


def test_shards_roll_over_and_are_readable_by_webdataset(tmp_path: Path) -> None:
    paths = _write(tmp_path, 5, max_samples=2).paths
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


def test_shards_are_byte_identical_with_fixed_headers(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", 3, max_samples=10).paths
    second = _write(tmp_path / "b", 3, max_samples=10).paths
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    with tarfile.open(first[0]) as tar:
        members = tar.getmembers()
    assert len(members) == 9 and members[0].name.endswith(".jpg") and members[1].name.endswith(".txt")
    for member in members:
        owner = (member.uid, member.gid, member.uname, member.gname)
        assert (member.mtime, member.mode, *owner) == (0, 0o644, 0, 0, "", "")


def test_writer_counts_samples_per_shard_and_refuses_bad_keys(tmp_path: Path) -> None:
    writer = _write(tmp_path, 5, max_samples=2)
    assert writer.sizes == {"train-000000.tar": 2, "train-000001.tar": 2, "train-000002.tar": 1}
    with ShardWriter(tmp_path / "k", "val") as bad, pytest.raises(InputError, match=r"without '\.'"):
        bad.write("PMC1_fig.1", b"x", "c", {})
    with pytest.raises(InputError, match="at least 1"):
        ShardWriter(tmp_path, "train", max_samples=0)


def test_a_failed_write_leaves_only_finished_shards(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="source failed"), ShardWriter(tmp_path, "train", max_samples=2) as writer:
        for i in range(3):
            writer.write(f"k{i}", b"jpeg", "caption", {})
        raise RuntimeError("source failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar"]
    assert writer.paths == [tmp_path / "train-000000.tar"] and writer.sizes == {"train-000000.tar": 2}


# --- spec grammar -----------------------------------------------------------------------------------------


def test_spec_grammar_braces_globs_folders_lists_urls(tmp_path: Path) -> None:
    _write(tmp_path, 6, max_samples=2)
    _write(tmp_path, 2, max_samples=1, split="val")
    train = [str(tmp_path / f"train-00000{i}.tar") for i in range(3)]
    val = [str(tmp_path / f"val-00000{i}.tar") for i in range(2)]
    assert expand_shards(str(tmp_path / "train-{000000..000002}.tar")) == train
    assert expand_shards(str(tmp_path / "train-*.tar")) == train
    assert expand_shards(str(tmp_path)) == train + val  # a folder: its *.tar, sorted
    assert expand_shards(f"{train[1]}::{tmp_path}/val-*.tar") == [train[1], *val]
    assert expand_shards([train[0], str(tmp_path / "train-*.tar")]) == train  # duplicates dropped, order kept
    assert expand_shards(f"file://{train[0]}") == [train[0]]
    urls = ["s3://bucket/train-0.tar", "s3://bucket/train-1.tar"]
    assert expand_shards("s3://bucket/train-{0..1}.tar") == urls
    assert expand_shards("https://host/a-{0..1}.tar::s3://b/x.tar") == [
        "https://host/a-0.tar",
        "https://host/a-1.tar",
        "s3://b/x.tar",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("train-{000000..000009}.tar", "7 shard.s. not found"), ("nothing-*.tar", "no shards match"), ("", "no shards")],
)
def test_spec_that_names_missing_shards_is_an_input_error(tmp_path: Path, spec: str, message: str) -> None:
    _write(tmp_path, 6, max_samples=2)
    with pytest.raises(ShardSpecError, match=message) as caught:
        expand_shards(str(tmp_path / spec) if spec else "")
    assert isinstance(caught.value, InputError) and caught.value.exit_code == 2


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ShardSpecError, match=r"no \*\.tar shards in folder"):
        expand_shards(str(tmp_path))


# --- reading ----------------------------------------------------------------------------------------------


def test_key_extension_rule_and_grouping_match_webdataset(tmp_path: Path) -> None:
    members = [
        ("dir.v1/a.jpg", b"A"), ("dir.v1/a.txt", b"caption a"), ("dir.v1/a.seg.png", b"S"),
        ("b.JPG", b"B"), ("b.json", b'{"class_name": "x"}'), ("__meta__", b"m"), ("noext", b"n"),
        ("c.txt", b"only text"),
    ]  # fmt: skip
    shard = _raw_tar(tmp_path / "t.tar", members)
    ours = [(s.key, dict(s.data)) for s in iter_samples(str(shard))]
    reference = [
        ({k: v for k, v in sample.items() if not k.startswith("__")}, sample["__key__"])
        for sample in wds.DataPipeline(wds.SimpleShardList([str(shard)]), wds.tarfile_to_samples())
    ]
    assert ours == [(key, data) for data, key in reference]
    assert ours[0] == ("dir.v1/a", {"jpg": b"A", "txt": b"caption a", "seg.png": b"S"})
    assert split_name("x/y.tar.gz") == ("x/y", "tar.gz") and split_name("noext") is None


def test_offsets_address_each_member_and_read_selects_members(tmp_path: Path) -> None:
    (path,) = _write(tmp_path, 3, max_samples=10).paths
    samples = list(iter_samples(str(path), read=lambda ext: ext == "txt"))
    assert [s.text() for s in samples] == ["caption 0 µm", "caption 1 µm", "caption 2 µm"]
    assert all(set(s.data) == {"txt"} and set(s.spans) == {"jpg", "txt", "json"} for s in samples)
    with tarfile.open(path) as tar:  # tarfile's own member table is the reference
        for sample in samples:
            for ext, (offset, size) in sample.spans.items():
                member = tar.getmember(f"{sample.key}.{ext}")
                assert (offset, size) == (member.offset_data, member.size)
                assert read_member(str(path), offset, size) == tar.extractfile(member).read()
    assert samples[1].image_extension() == "jpg"
    with pytest.raises(ShardError, match="shorter than expected"):
        read_member(str(path), path.stat().st_size - 10, 100)


def test_compressed_shards_stream_without_offsets(tmp_path: Path) -> None:
    (path,) = _write(tmp_path, 2, max_samples=10).paths
    gz = tmp_path / "train.tar.gz"
    with tarfile.open(gz, "w:gz") as out, tarfile.open(path) as tar:
        for member in tar:
            out.addfile(member, tar.extractfile(member))
    samples = list(iter_samples(str(gz)))
    assert [s.text() for s in samples] == ["caption 0 µm", "caption 1 µm"] and all(not s.spans for s in samples)
    assert samples[0].image_extension() == "jpg"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"this is not a tar archive" * 40, "cannot read shard"), (None, "unexpected end")],
)
def test_bad_shards_raise_an_error_naming_the_shard(tmp_path: Path, content: bytes | None, message: str) -> None:
    bad = tmp_path / "bad-000000.tar"
    if content is None:  # a real shard cut in the middle of its second image
        (good,) = _write(tmp_path / "w", 3, max_samples=10).paths
        offset, _ = next(s for i, s in enumerate(iter_samples(str(good))) if i == 1).spans["jpg"]
        bad.write_bytes(good.read_bytes()[: offset + 100])
    else:
        bad.write_bytes(content)
    with pytest.raises(ShardError, match=message) as caught:
        list(iter_samples(str(bad)))
    assert str(bad) in str(caught.value) and isinstance(caught.value, RunError)
    with pytest.raises(ShardError, match=r"bad-000000\.tar"):
        count_samples(str(bad))
    with pytest.raises(ShardError, match="cannot open"):
        list(iter_samples(str(tmp_path / "missing.tar")))


def test_a_member_repeated_within_a_sample_is_an_error(tmp_path: Path) -> None:
    shard = _raw_tar(tmp_path / "dup.tar", [("a.jpg", b"1"), ("a.jpg", b"2")])
    with pytest.raises(ShardError, match=r"a\.jpg appears twice"):
        list(iter_samples(str(shard)))


# --- sizes.json and the record schema ---------------------------------------------------------------------


def test_sizes_manifest_round_trip_and_lookup(tmp_path: Path) -> None:
    writer = _write(tmp_path, 5, max_samples=2)
    path = write_sizes(tmp_path, writer.sizes)
    assert json.loads(path.read_text()) == {"train-000000.tar": 2, "train-000001.tar": 2, "train-000002.tar": 1}
    assert read_sizes(str(tmp_path)) == writer.sizes
    assert {Path(p).name: count_samples(p) for p in expand_shards(str(tmp_path))} == writer.sizes
    other = _write(tmp_path / "other", 1, max_samples=2).paths[0]
    assert shard_sizes([str(writer.paths[1]), str(other)]) == {str(writer.paths[1]): 2, str(other): None}
    (tmp_path / "sizes.json").write_text("not json")
    assert read_sizes(str(tmp_path)) == {}


def test_every_view_of_the_record_comes_from_one_field_list() -> None:
    import pyarrow as pa

    from biomedclip.corpus.rows import CATALOG_SCHEMA as SCHEMA
    from biomedclip.serve.index import RECORD_COLUMNS

    assert arrow_schema(CATALOG_FIELDS) == SCHEMA and SCHEMA.field("graphics").type == pa.list_(pa.string())
    assert list(RECORD_COLUMNS) == list(INDEX_FIELDS) and RECORD_COLUMNS["offset"] == pa.int64()
    design = {"pmcid", "version", "fig_id", "label", "caption", "graphic", "image_path", "license", "journal", "year"}
    assert design | {"split"} <= set(SHARD_RECORD_FIELDS) <= set(CATALOG_FIELDS)


def test_importing_the_module_loads_no_heavy_dependency() -> None:
    code = "import json, sys, biomedclip.shards; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not {"braceexpand", "pyarrow", "boto3", "PIL", "torch"} & set(json.loads(loaded))


# --- remote shards: S3 (moto on loopback) and HTTP --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s3_shards_read_like_local_ones(tmp_path: Path, moto_endpoint: str, s3_credentials: None, monkeypatch) -> None:
    import boto3

    writer = _write(tmp_path, 4, max_samples=2)
    write_sizes(tmp_path, writer.sizes)
    monkeypatch.setenv("BIOMEDCLIP_S3_ENDPOINT", moto_endpoint)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="corpus")
    for path in [*writer.paths, tmp_path / "sizes.json"]:
        client.upload_file(str(path), "corpus", f"shards/{path.name}")

    urls = expand_shards("s3://corpus/shards/train-{000000..000001}.tar")
    remote = [(s.key, s.data, s.spans) for url in urls for s in iter_samples(url)]
    local = [(s.key, s.data, s.spans) for p in writer.paths for s in iter_samples(str(p))]
    assert remote == local and len(remote) == 4
    offset, size = remote[3][2]["jpg"]
    assert read_member(urls[1], offset, size) == remote[3][1]["jpg"]  # a ranged GET
    assert read_sizes("s3://corpus/shards") == writer.sizes
    assert shard_sizes(urls) == {urls[0]: 2, urls[1]: 2}
    with pytest.raises(ShardError, match=r"s3://corpus/shards/train-000009\.tar"):
        list(iter_samples("s3://corpus/shards/train-000009.tar"))


@pytest.mark.parametrize("ranges", [True, False])
def test_http_shards_and_ranged_reads(tmp_path: Path, ranges: bool) -> None:
    writer = _write(tmp_path, 3, max_samples=10)
    write_sizes(tmp_path, writer.sizes)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            wanted = self.headers.get("Range")
            if not ranges or not wanted:
                return super().do_GET()
            start, end = (int(v) for v in wanted.removeprefix("bytes=").split("-"))
            data = (tmp_path / self.path.lstrip("/")).read_bytes()[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        samples = list(iter_samples(f"{base}/train-000000.tar"))
        assert [s.text() for s in samples] == ["caption 0 µm", "caption 1 µm", "caption 2 µm"]
        offset, size = samples[2].spans["jpg"]
        assert read_member(f"{base}/train-000000.tar", offset, size) == samples[2].data["jpg"]
        assert read_sizes(base) == writer.sizes
        with pytest.raises(ShardError, match=r"train-000007\.tar"):
            list(iter_samples(f"{base}/train-000007.tar"))
    finally:
        server.shutdown()


def test_an_unreachable_s3_endpoint_is_a_shard_error_naming_the_release_pointer(
    s3_credentials: None, monkeypatch
) -> None:
    monkeypatch.setenv("BIOMEDCLIP_S3_ENDPOINT", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    with pytest.raises(ShardError, match=r"s3://corpus/out/RELEASE\.json"):
        expand_shards("s3://corpus/out/shards/train-000000.tar")
    assert expand_shards("s3://corpus/out/train-000000.tar") == ["s3://corpus/out/train-000000.tar"]  # not a corpus
