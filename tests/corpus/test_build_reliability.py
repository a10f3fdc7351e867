"""Faults during a build: listing failures, transient reads, crashing decoders, a killed driver, two builds at
once, articles without a PMCID, hostile captions (issue 15); storage (issue 11): after a build every processed
image is on disk once, in a shard or in a pack of the images no shard holds, the next build reads the images of
earlier batches from there (copy-forward), and a kill during the release loses nothing."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil
import pyarrow.parquet as pq
import pytest

from biomedclip.corpus import articles as articles_module
from biomedclip.corpus.articles import WorkConfig, unique_keys
from biomedclip.corpus.build import BuildConfig, build
from biomedclip.corpus.images import ImageConfig
from biomedclip.corpus.records import Article, ArticleMeta, FigureRecord, SourceListingError, TransientMediaError
from biomedclip.errors import InputError

PACKAGE = "pmc/packages/extracted/PMC10802347/PMC10802347"
NIHPP = "nihpp-2023.12.31.573776v1"


@dataclass
class MediaFiles:
    """A picklable media opener over a folder; ``transient`` names fail with a TransientMediaError, ``crash``
    names kill the process that opens them outside the test's own process (a segfaulting decoder)."""

    folder: str
    transient: frozenset[str] = frozenset()
    crash: frozenset[str] = frozenset()
    test_pid: int = 0

    def __call__(self, name: str) -> IO[bytes]:
        if name in self.crash and os.getpid() != self.test_pid:
            os._exit(139)
        if name in self.transient:
            raise TransientMediaError(f"SlowDown: {name}")
        return open(Path(self.folder) / name, "rb")


@dataclass
class Articles:
    """A source over prepared articles, optionally failing after ``fail_after`` of them."""

    items: list[Article]
    fail_after: int | None = None
    name: str = "test-source"

    def articles(self) -> Iterator[Article]:
        for i, article in enumerate(self.items):
            if self.fail_after is not None and i >= self.fail_after:
                raise ConnectionError("endpoint unreachable")
            yield article


def _article(fixtures: Path, pmcid: str, opener: MediaFiles | None = None, xml_pmcid: str | None = None) -> Article:
    folder = fixtures / PACKAGE
    xml = (folder / f"{NIHPP}.nxml").read_bytes()
    if xml_pmcid is not None:
        xml = re.sub(rb'<article-id pub-id-type="pmc">[^<]*</article-id>', xml_pmcid.encode(), xml)
    media = sorted(p.name for p in folder.iterdir() if p.suffix in (".jpg", ".gif"))
    return Article(f"{folder}#{pmcid}", ArticleMeta(pmcid=pmcid), xml, media, opener or MediaFiles(str(folder)))


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not str(p.relative_to(out)).startswith(("work", "build.lock", ".next"))
    }


def test_a_listing_failure_fails_the_build_and_keeps_the_previous_output(shared_fixtures: Path, tmp_path) -> None:
    items = [_article(shared_fixtures, f"PMC{i}") for i in (1, 2, 3)]
    out = tmp_path / "out"
    first = build([Articles(items)], out)
    before = _outputs(out)
    assert first.accepted > 0 and list((out / "shards").glob("*.tar"))
    with pytest.raises(SourceListingError, match=r"test-source.*endpoint unreachable"):
        build([Articles(items, fail_after=1)], out)
    assert _outputs(out) == before

    class Refusing(Articles):
        def articles(self) -> Iterator[Article]:
            yield items[0]
            raise SourceListingError("s3://bucket: 503 SlowDown on prefix PMC2")

    with pytest.raises(SourceListingError, match="SlowDown"):
        build([Refusing(items)], out)
    assert _outputs(out) == before


def test_a_transient_media_error_is_retried_by_the_next_run(shared_fixtures: Path, tmp_path) -> None:
    folder = str(shared_fixtures / PACKAGE)
    flaky = MediaFiles(folder, transient=frozenset({f"{NIHPP}-f0002.jpg"}))
    out = tmp_path / "out"
    first = build([Articles([_article(shared_fixtures, "PMC1", flaky)])], out)
    rows = {r["fig_id"]: r for r in pq.read_table(out / "catalog.parquet").to_pylist()}
    assert rows["F2"]["reason"] == "transient_error" and "SlowDown" in rows["F2"]["detail"]
    second = build([Articles([_article(shared_fixtures, "PMC1")])], out)  # the fault has cleared
    assert (second.articles_processed, second.articles_skipped) == (1, 0)
    assert second.accepted == first.accepted + 1
    third = build([Articles([_article(shared_fixtures, "PMC1")])], out)
    assert (third.articles_processed, third.articles_skipped) == (0, 1)


def test_a_crashing_decoder_costs_one_article_not_the_pool(shared_fixtures: Path, tmp_path) -> None:
    folder = str(shared_fixtures / PACKAGE)
    crash = MediaFiles(folder, crash=frozenset({f"{NIHPP}-f0002.jpg"}), test_pid=os.getpid())
    items = [_article(shared_fixtures, f"PMC{i}") for i in (1, 2, 4)]
    items.insert(1, _article(shared_fixtures, "PMC3", crash))
    summary = build([Articles(items)], tmp_path / "out", BuildConfig(batch_articles=2), workers=2)
    rows = pq.read_table(tmp_path / "out" / "catalog.parquet").to_pylist()
    crashed = [r for r in rows if r["article"] == "PMC3"]
    assert [(r["status"], r["reason"]) for r in crashed] == [("rejected", "worker_crashed")]
    assert {r["article"] for r in rows if r["status"] == "accepted"} == {"PMC1"}  # the others are its duplicates
    assert summary.rejected["exact_duplicate"] == 8


def test_a_pool_found_broken_when_sending_a_batch_loses_nothing(shared_fixtures: Path, tmp_path, monkeypatch) -> None:
    """A worker killed while the driver sends the next batch: ``submit`` itself raises ``BrokenProcessPool``."""
    from concurrent.futures.process import BrokenProcessPool

    from biomedclip.corpus import distributed

    items = [_article(shared_fixtures, f"PMC{i}") for i in range(1, 6)]
    reference = build([Articles(items)], tmp_path / "reference", BuildConfig(batch_articles=1), workers=1)
    submit, calls = distributed._Local.submit, []

    def breaks_once(self, fn, *args):
        calls.append(fn)
        if len(calls) == 3:
            raise BrokenProcessPool("a worker died")
        return submit(self, fn, *args)

    monkeypatch.setattr(distributed._Local, "submit", breaks_once)
    summary = build([Articles(items)], tmp_path / "out", BuildConfig(batch_articles=1), workers=1)
    assert len(calls) > 5 and summary.accepted == reference.accepted and summary.rejected == reference.rejected
    assert pq.read_table(tmp_path / "out" / "catalog.parquet") == pq.read_table(
        tmp_path / "reference" / "catalog.parquet"
    )


def test_workers_die_with_a_killed_driver(shared_fixtures: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    for i in range(30):
        shutil.copytree(shared_fixtures / PACKAGE, corpus / f"PMC8{i:07d}")
    script = ("import sys; from biomedclip.corpus.build import BuildConfig, build; "
              "from biomedclip.corpus.sources import open_source; "
              "build([open_source(sys.argv[1])], sys.argv[2], BuildConfig(batch_articles=1), workers=2)")  # fmt: skip
    driver = subprocess.Popen([sys.executable, "-c", script, str(corpus), str(tmp_path / "out")])
    deadline = time.monotonic() + 120
    children: list[psutil.Process] = []
    while len(children) < 2 and time.monotonic() < deadline and driver.poll() is None:
        children = psutil.Process(driver.pid).children(recursive=True)
        time.sleep(0.05)
    assert len(children) >= 2, "the pool never started"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"workers outlived the driver: {[p.pid for p in alive]}"


def test_a_second_build_into_the_same_out_is_refused(shared_fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with open(out / "build.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242\n")
        held.flush()
        with pytest.raises(InputError, match=r"another build is writing to .*pid 4242"):
            build([Articles([_article(shared_fixtures, "PMC1")])], out)
    assert build([Articles([_article(shared_fixtures, "PMC1")])], out).accepted > 0  # released: builds again


def test_an_article_without_a_pmcid_is_built(shared_fixtures: Path, tmp_path: Path) -> None:
    article = _article(shared_fixtures, "", xml_pmcid="")  # e.g. eLife XML: no PMCID anywhere
    summary = build([Articles([article, _article(shared_fixtures, "PMC5")])], tmp_path / "out")
    rows = pq.read_table(tmp_path / "out" / "catalog.parquet").to_pylist()
    orphan = [r for r in rows if r["article"].startswith("unknown-")]
    assert orphan and all(r["split"] in ("train", "val", "test") for r in orphan)
    assert summary.accepted >= 4


def test_a_huge_caption_is_never_tokenised(shared_fixtures: Path, tmp_path: Path, monkeypatch) -> None:
    seen: list[int] = []
    real = articles_module.count_tokens

    def spy(texts: list[str], tokenizer_file: str | None = None) -> list[int]:
        seen.extend(len(t) for t in texts)
        return real(texts, tokenizer_file)

    monkeypatch.setattr(articles_module, "count_tokens", spy)
    article = _article(shared_fixtures, "PMC1")
    figures = [
        FigureRecord(pmcid="PMC1", fig_id="F1", label="", caption="x " * 2_500_000, graphic=f"{NIHPP}-f0001.jpg"),
        FigureRecord(pmcid="PMC1", fig_id="F2", label="", caption="ok", graphic=f"{NIHPP}-f0002.jpg"),
        FigureRecord(pmcid="PMC1", fig_id="F3", label="", caption="a real caption of a figure", graphic="missing.jpg"),
        FigureRecord(
            pmcid="PMC1",
            fig_id="F4",
            label="",
            caption="a chest radiograph, frontal",
            graphic="x",
            status="rejected",
            reason="no_graphic",
        ),
        FigureRecord(
            pmcid="PMC1", fig_id="F5", label="", caption="a good caption of this figure", graphic=f"{NIHPP}-f0003.jpg"
        ),
    ]
    article.figures, article.xml = figures, None
    build([Articles([article])], tmp_path / "out")
    rows = {r["fig_id"]: r for r in pq.read_table(tmp_path / "out" / "catalog.parquet").to_pylist()}
    assert rows["F1"]["reason"] == "caption_too_long" and rows["F1"]["detail"] == "5000000 characters"
    assert len(rows["F1"]["caption"]) == 20_000
    assert [rows[f]["reason"] for f in ("F2", "F3", "F4")] == ["caption_too_short", "missing_image", "no_graphic"]
    assert seen == [len("a good caption of this figure")]  # only the figure that passed every filter


def test_figures_sharing_one_graphic_get_unique_keys_in_linear_time() -> None:
    figures = [FigureRecord(pmcid="PMC1", fig_id="", label="", caption="c", graphic="g.jpg") for _ in range(30_000)]
    keys = unique_keys("PMC1", figures)
    assert keys[:3] == ["PMC1_g_jpg", "PMC1_g_jpg-2", "PMC1_g_jpg-3"] and len(set(keys)) == 30_000


def test_a_failure_during_phase_2_keeps_the_previous_output(shared_fixtures: Path, tmp_path, monkeypatch) -> None:
    from biomedclip.corpus import assemble

    out = tmp_path / "out"
    build([Articles([_article(shared_fixtures, "PMC1")])], out)
    before = _outputs(out)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill would stop it: between two shards

    monkeypatch.setattr(assemble, "write_shard", killed)
    with pytest.raises(KeyboardInterrupt):
        build([Articles([_article(shared_fixtures, "PMC2")])], out)
    assert _outputs(out) == before


def test_a_release_cut_short_is_finished_by_the_next_run(shared_fixtures: Path, tmp_path, monkeypatch) -> None:
    from biomedclip.corpus import build as build_module

    reference = tmp_path / "reference"
    build([Articles([_article(shared_fixtures, "PMC2")])], reference)
    out = tmp_path / "out"
    build([Articles([_article(shared_fixtures, "PMC1")])], out)
    moves: list[str] = []
    real_replace = os.replace

    def cut(src, dst):
        if Path(src).parent == out / ".next" and Path(dst).parent == out:
            moves.append(str(dst))
        if len(moves) == 2:  # the new shards are in place, the old catalog is not replaced yet
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(build_module.os, "replace", cut)
    with pytest.raises(KeyboardInterrupt):
        build([Articles([_article(shared_fixtures, "PMC2")])], out)
    monkeypatch.setattr(build_module.os, "replace", real_replace)
    assert (out / ".next" / "COMPLETE").is_file(), (moves, sorted(p.name for p in out.iterdir()))
    build([Articles([_article(shared_fixtures, "PMC2")])], out)  # finishes the release, then builds the same
    assert _outputs(out) == _outputs(reference)


SMALL = BuildConfig(shard_size=3, batch_articles=1)


def _members(out: Path) -> list[tuple[str, str, int]]:
    """Every JPEG member in OUT's tars: (tar, member, size)."""
    found = []
    for path in sorted(out.rglob("*.tar")):
        with tarfile.open(path) as tar:
            found += [(str(path.relative_to(out)), m.name, m.size) for m in tar if m.name.endswith(".jpg")]
    return found


def _image_rows(out: Path) -> int:
    """Work rows that carry an image (what the workers produced), read from the batch Parquet files."""
    rows = [pq.read_table(p, columns=["image_size"]) for p in out.glob("work/*/batches/*/*.parquet")]
    return sum(t["image_size"].drop_null().__len__() for t in rows)


def _build(fixtures: Path, out: Path, ids: list[str], config: BuildConfig = SMALL):
    return build([Articles([_article(fixtures, pmcid) for pmcid in ids])], out, config)


def test_each_image_is_stored_once(shared_fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = _build(shared_fixtures, out, ["PMC1", "PMC2", "PMC3"])  # the same article three times: duplicates
    assert summary.rejected.get("exact_duplicate", 0) > 0
    assert not list(out.glob("work/*/batches/*/*.tar"))
    members = _members(out)
    in_shards = [m for m in members if m[0].startswith("shards/")]
    assert len(in_shards) == summary.accepted
    assert len(members) == _image_rows(out)  # duplicates once, in a pack; nothing twice
    assert len({(tar, name) for tar, name, _ in members}) == len(members)


def test_released_images_feed_the_next_builds(shared_fixtures: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    _build(shared_fixtures, reference, ["PMC1", "PMC2", "PMC3"])
    out = tmp_path / "out"
    _build(shared_fixtures, out, ["PMC1", "PMC2"])
    _build(shared_fixtures, out, ["PMC2"])  # PMC1 not listed: its images move to a pack
    assert not list(out.glob("work/*/batches/*/*.tar"))
    _build(shared_fixtures, out, ["PMC1", "PMC2", "PMC3"])  # PMC1 from the pack, PMC2 from the shards
    assert _outputs(out) == _outputs(reference)
    assert len(_members(out)) == _image_rows(out)


def test_a_kill_while_the_tars_are_deleted_loses_nothing(shared_fixtures: Path, tmp_path, monkeypatch) -> None:
    reference = tmp_path / "reference"
    _build(shared_fixtures, reference, ["PMC1", "PMC2", "PMC3"])
    out = tmp_path / "out"
    _build(shared_fixtures, out, ["PMC1"])
    real_unlink = Path.unlink
    deleted: list[Path] = []

    def cut(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".tar" and "batches" in self.parts:
            if deleted:
                raise KeyboardInterrupt  # kill -9 after the first tar of the release was deleted
            deleted.append(self)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", cut)
    with pytest.raises(KeyboardInterrupt):
        _build(shared_fixtures, out, ["PMC1", "PMC2", "PMC3"])
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert deleted and list(out.glob("work/*/batches/*/*.tar"))  # some tars gone, some still there
    _build(shared_fixtures, out, ["PMC1", "PMC2", "PMC3"])
    assert _outputs(out) == _outputs(reference)
    assert not list(out.glob("work/*/batches/*/*.tar"))


def test_another_configuration_releases_without_breaking_the_first(shared_fixtures: Path, tmp_path) -> None:
    reference = tmp_path / "reference"
    _build(shared_fixtures, reference, ["PMC1", "PMC2"])
    out = tmp_path / "out"
    _build(shared_fixtures, out, ["PMC1", "PMC2"])
    other = BuildConfig(WorkConfig(image=ImageConfig(max_short_side=64)), shard_size=3, batch_articles=1)
    _build(shared_fixtures, out, ["PMC1", "PMC2"], other)  # its shards replace those the first one's images were in
    again = _build(shared_fixtures, out, ["PMC1", "PMC2"])
    assert again.articles_processed == 2  # the first configuration's images were gone: processed again
    assert _outputs(out) == _outputs(reference)
    assert len(_members(out)) == _image_rows(out)


def test_an_image_named_by_many_figures_is_decoded_once_per_article(shared_fixtures: Path, tmp_path, monkeypatch):
    """One image named by 200 figures of a package (issue 23: 200 figures of one 100-Mpx image took 77 s)."""
    calls: list[int] = []
    real = articles_module.process_image

    def counting(data: bytes, config):
        calls.append(len(data))
        return real(data, config)

    monkeypatch.setattr(articles_module, "process_image", counting)
    article = _article(shared_fixtures, "PMC1")
    caption = "a chest radiograph, frontal view, showing the lungs"
    shared = [FigureRecord(pmcid="PMC1", fig_id=f"F{i}", label="", caption=caption, graphic=f"{NIHPP}-f0002.jpg")
              for i in range(200)]  # fmt: skip
    bad = [FigureRecord(pmcid="PMC1", fig_id=f"B{i}", label="", caption=caption, graphic=f"{NIHPP}-f0001.gif")
           for i in range(3)]  # fmt: skip
    article.figures, article.xml = shared + bad, None
    build([Articles([article])], tmp_path / "out")
    assert len(calls) == 2  # one decode per distinct image, not per figure
    rows = pq.read_table(tmp_path / "out" / "catalog.parquet").to_pylist()
    by_fig = {row["fig_id"]: row for row in rows}
    assert len(by_fig) == 203
    for group, count in (("F", 200), ("B", 3)):  # every figure gets what the one decode of its image gave
        outcomes = {(by_fig[f"{group}{i}"]["sha256"], by_fig[f"{group}{i}"]["width"]) for i in range(count)}
        assert len(outcomes) == 1, outcomes
    assert by_fig["F0"]["status"] == "accepted" and by_fig["F0"]["sha256"] != by_fig["B0"]["sha256"]


def test_a_killed_phase_2_worker_is_one_line_not_a_traceback() -> None:
    from biomedclip.corpus.distributed import map_units, stop_fork_server
    from biomedclip.errors import RunError

    try:
        with pytest.raises(RunError, match=r"a worker process of phase 2 \(_exit\) died .* rerun the build"):
            map_units(os._exit, [0, 1, 2], workers=2)  # each unit kills the worker that runs it
    finally:
        stop_fork_server()


@pytest.mark.parametrize("phase", [1, 2])
def test_a_full_disk_is_one_line_and_keeps_the_release(shared_fixtures: Path, tmp_path, monkeypatch, phase) -> None:
    import errno

    from click.testing import CliRunner

    from biomedclip.cli import main
    from biomedclip.corpus import assemble
    from biomedclip.corpus.batches import WorkStore

    out = tmp_path / "out"
    package = shared_fixtures / "pmc/packages/extracted/PMC10802347"
    command = ["corpus", "build", "--source", str(package), "--out", str(out), "--workers", "0"]
    assert CliRunner().invoke(main, command).exit_code == 0
    before = _outputs(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "some-file"))

    shutil.rmtree(out / "work")  # so that phase 1 has an article to write
    if phase == 1:
        monkeypatch.setattr(WorkStore, "write", full)
    else:
        monkeypatch.setattr(assemble, "fsync_file", full)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if "Error:" in line]
    assert "No space left on device" in line and str(out / "some-file") in line
    assert _outputs(out) == before
