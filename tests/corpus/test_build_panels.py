"""``corpus build --unit figure|panel|both``: panel samples beside the figures, on the bundled sample's and the
fixtures' real PMC packages, with the splitter the workers use (``biomedclip.panels.pipeline.split_figure``)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from biomedclip.corpus.build import BuildConfig, build
from biomedclip.corpus.filters import FilterConfig
from biomedclip.corpus.images import ImageConfig
from biomedclip.corpus.panel_rows import figure_panels
from biomedclip.corpus.rows import FigureRow
from biomedclip.corpus.sources import open_source
from biomedclip.errors import InputError
from biomedclip.panels.types import FigurePanels, Panel
from biomedclip.shards import expand_shards, iter_samples

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(__file__).parent / "data" / "figure_unit_reference.json"
FIGURE_OUTPUTS = ("shards", "catalog", "catalog.parquet", "clusters.parquet")


def _sources(fixtures: Path) -> list:
    """The sample's and the fixtures' packages, named as the reference build named them (the records keep the
    path a source was opened with): ``sample`` and ``packages`` in a folder of links, made the working folder."""
    links = Path.cwd()
    if not (links / "sample").is_symlink():
        raise RuntimeError("call _sources from the folder of links (fixture in_links)")
    return [open_source("sample"), open_source("packages")]


@pytest.fixture(scope="module")
def links(shared_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("links")
    (folder / "sample").symlink_to(REPO / "data/sample/pmc")
    (folder / "packages").symlink_to(shared_fixtures / "pmc/packages")
    return folder


@pytest.fixture
def in_links(links: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(links)
    return links


def _digests(out: Path, skip: tuple[str, ...] = ("work", "report", "build.lock", "build_config.json", "panels")):
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.relative_to(out).parts[0] not in skip)
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def both(shared_fixtures: Path, links: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("both") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(links)
        build(_sources(shared_fixtures), out, BuildConfig(unit="both"), workers=2)
    return out


def test_unit_figure_gives_the_outputs_made_before_units_existed(
    shared_fixtures: Path, in_links: Path, tmp_path: Path
) -> None:
    """The reference digests were made on the code before ``--unit`` (see the file's ``about``)."""
    build(_sources(shared_fixtures), tmp_path / "out", workers=0)
    assert _digests(tmp_path / "out") == json.loads(REFERENCE.read_text())["files"]
    assert not (tmp_path / "out" / "panels").exists()


def test_unit_both_keeps_the_figure_outputs_and_adds_the_panels(both: Path) -> None:
    reference = json.loads(REFERENCE.read_text())["files"]
    mine = _digests(both)
    figure_files = {k: v for k, v in reference.items() if k.split("/")[0] in FIGURE_OUTPUTS}
    assert {k: mine[k] for k in figure_files} == figure_files
    stats = json.loads((both / "stats.json").read_text())
    figure_stats = json.dumps({k: v for k, v in stats.items() if k != "panels"}, indent=2, sort_keys=True) + "\n"
    assert hashlib.sha256(figure_stats.encode()).hexdigest() == reference["stats.json"]  # plus the panels block
    assert (both / "panels/shards/sizes.json").is_file() and (both / "panels/catalog.parquet").is_file()


def test_every_panel_points_to_its_parent_inside_its_image(both: Path) -> None:
    figures = {r["key"]: r for r in _rows(both / "catalog.parquet")}
    panels = _rows(both / "panels/catalog.parquet")
    assert panels, "the sample has compound figures"
    for row in panels:
        parent = figures[row["parent"]]
        assert parent["status"] == "accepted" or parent["reason"].endswith("_duplicate")
        assert row["key"].startswith(row["parent"] + "_p") and len(row["key"]) == len(row["parent"]) + 4
        assert (row["article"], row["pmcid"], row["fig_id"]) == (parent["article"], parent["pmcid"], parent["fig_id"])
        if row["box"] is not None:
            x0, y0, x1, y1 = row["box"]
            assert 0 <= x0 < x1 <= parent["orig_width"] and 0 <= y0 < y1 <= parent["orig_height"]
    by_parent: dict[str, list[str]] = {}
    for row in panels:
        by_parent.setdefault(row["parent"], []).append(row["key"])
    for parent, keys in by_parent.items():  # numbered 01, 02... in reading order, no gap
        assert sorted(keys) == [f"{parent}_p{i:02d}" for i in range(1, len(keys) + 1)]


def test_panels_share_their_articles_split(both: Path) -> None:
    figures = {r["key"]: r for r in _rows(both / "catalog.parquet")}
    split_of_article = {r["article"]: r["split"] for r in figures.values() if r["status"] == "accepted"}
    accepted = [r for r in _rows(both / "panels/catalog.parquet") if r["status"] == "accepted"]
    assert accepted
    assert all(r["split"] == split_of_article[r["article"]] for r in accepted)
    for path in (both / "panels/shards").glob("*.tar"):
        for sample in iter_samples(str(path)):
            assert sample.record()["split"] == path.name.split("-")[0]


def test_panel_shards_hold_the_accepted_panels(both: Path) -> None:
    accepted = {r["key"]: r for r in _rows(both / "panels/catalog.parquet") if r["status"] == "accepted"}
    shards = expand_shards(str(both / "panels/shards"))
    sizes = json.loads((both / "panels/shards/sizes.json").read_text())
    assert sum(sizes.values()) == len(accepted) and sorted(sizes) == sorted(Path(s).name for s in shards)
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil"))
    assert sorted(s["__key__"] for s in samples) == sorted(accepted)
    for sample in samples:
        row = accepted[sample["__key__"]]
        record = sample["json"]
        assert sample["txt"] == row["caption"]
        assert (record["parent"], record["box"], record["panel_label"]) == (
            row["parent"],
            row["box"],
            row["panel_label"],
        )
        assert (sample["jpg"].width, sample["jpg"].height) == (row["width"], row["height"])
        if row["subcaption"]:
            assert row["caption"].endswith(row["subcaption"])


def test_panel_crops_are_the_parent_pixels(both: Path) -> None:
    """A panel's image is its box of the parent's normalised JPEG (the box scaled from original pixels)."""
    figures = {s.key: s for p in expand_shards(str(both / "shards")) for s in iter_samples(p)}
    checked = 0
    for path in expand_shards(str(both / "panels/shards")):
        for sample in iter_samples(path):
            record = sample.record()
            if record["parent"] not in figures or record["alignment"] == "figure":
                continue
            parent = Image.open(io.BytesIO(figures[record["parent"]].data["jpg"])).convert("RGB")
            crop = Image.open(io.BytesIO(sample.data["jpg"])).convert("L")
            row = next(r for r in _rows(both / "catalog.parquet") if r["key"] == record["parent"])
            sx, sy = parent.width / row["orig_width"], parent.height / row["orig_height"]
            x0, y0, x1, y1 = record["box"]
            box = (round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy))
            expected = parent.crop(box).convert("L")
            assert abs(expected.width - crop.width) <= 1 and abs(expected.height - crop.height) <= 1
            expected = expected.resize(crop.size)
            diff = sum(abs(a - b) for a, b in zip(expected.getdata(), crop.getdata(), strict=True)) / len(
                crop.getdata()
            )
            assert diff < 12, (sample.key, diff)  # JPEG re-encoding noise only
            checked += 1
    assert checked


def test_stats_count_the_panel_catalog(both: Path) -> None:
    stats = json.loads((both / "stats.json").read_text())["panels"]
    rows = _rows(both / "panels/catalog.parquet")
    found = [r for r in rows if r["alignment"] in ("label", "order", "position", "none")]
    accepted = [r for r in rows if r["status"] == "accepted"]
    assert stats["compound_figures"] == len({r["parent"] for r in found}) > 0
    assert stats["panels"] == len(found)
    assert stats["labelled_panels"] == sum(r["panel_label"] is not None for r in found)
    assert stats["aligned_subcaptions"] == sum(r["subcaption"] is not None for r in found)
    assert stats["accepted"] == len(accepted) == sum(stats["splits"].values())
    assert stats["rejected_by_reason"] == dict(Counter(r["reason"] for r in rows if r["status"] == "rejected"))
    assert sum(stats["by_alignment"].values()) == stats["panels"]
    panel_stats = json.loads((both / "panels/stats.json").read_text())
    assert panel_stats["accepted"] == stats["accepted"]
    report = (both / "report.md").read_text()
    assert f"compound figures: {stats['compound_figures']}; panels: {stats['panels']}" in report


def test_unit_panel_keeps_single_figures_whole(
    shared_fixtures: Path, both: Path, in_links: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    build(_sources(shared_fixtures), out, BuildConfig(unit="panel"), workers=0)
    figures = [
        r for r in _rows(out / "catalog.parquet") if r["status"] == "accepted" or r["reason"].endswith("_duplicate")
    ]
    rows = _rows(out / "panels/catalog.parquet")
    compound = {r["parent"] for r in rows if r["alignment"] not in ("figure", None)}
    whole = {r["parent"]: r for r in rows if r["alignment"] == "figure"}
    assert set(whole) == {r["key"] for r in figures} - compound
    assert all(r["key"] == r["parent"] + "_p01" and r["panel_label"] is None for r in whole.values())
    panels = {r["key"] for r in rows} - {r["key"] for r in whole.values()}
    assert panels == {r["key"] for r in _rows(both / "panels/catalog.parquet")}
    assert _digests(
        out, ("work", "report", "build.lock", "build_config.json", "panels", "stats.json", "report.md")
    ) == {k: v for k, v in _digests(both).items() if k not in ("stats.json", "report.md")}


def test_a_splitter_failure_keeps_the_figure(
    shared_fixtures: Path, in_links: Path, tmp_path: Path, monkeypatch
) -> None:
    from biomedclip.corpus import panel_rows

    def broken(image, caption):
        raise RuntimeError("detector exploded")

    monkeypatch.setattr(panel_rows, "default_splitter", lambda keep_single=True: broken)
    out = tmp_path / "out"
    build(_sources(shared_fixtures), out, BuildConfig(unit="both"), workers=0)
    reference = json.loads(REFERENCE.read_text())["files"]
    assert {k: v for k, v in _digests(out).items() if k.split("/")[0] in FIGURE_OUTPUTS} == {
        k: v for k, v in reference.items() if k.split("/")[0] in FIGURE_OUTPUTS
    }
    figures = [
        r for r in _rows(out / "catalog.parquet") if r["status"] == "accepted" or r["reason"].endswith("_duplicate")
    ]
    rows = _rows(out / "panels/catalog.parquet")
    assert sorted(r["key"] for r in rows) == sorted(f"{f['key']}_p00" for f in figures)
    assert {(r["status"], r["reason"]) for r in rows} == {("rejected", "panel_split_failed")}
    assert all("detector exploded" in r["detail"] for r in rows)
    assert json.loads((out / "stats.json").read_text())["panels"]["split_failures"] == len(figures)


def _figure(width: int, height: int, orig: tuple[int, int]) -> tuple[FigureRow, bytes]:
    image = Image.new("RGB", (width, height), "white")
    for x in range(width // 2, width):  # right half dark: the crops can be told apart
        for y in range(height):
            image.putpixel((x, y), (20, 20, 20))
    data = io.BytesIO()
    image.save(data, "JPEG", quality=95)
    row = FigureRow(key="PMC1_F1", article="PMC1", pmcid="PMC1", fig_id="F1", label="Figure 1",
                    caption="Two panels. (A) Left, white. (B) Right, dark.", graphic="f1", source="s",
                    width=width, height=height, orig_width=orig[0], orig_height=orig[1])  # fmt: skip
    return row, data.getvalue()


def test_boxes_are_scaled_to_original_pixels_and_small_panels_rejected_at_the_threshold() -> None:
    row, jpeg = _figure(200, 100, orig=(800, 400))  # normalised at 1/4 of the original

    def split(image, caption):
        assert image.size == (200, 100)
        return FigurePanels(True, "Two panels.", [
            Panel((0, 0, 100, 100), "A", "Left, white."), Panel((100, 0, 200, 100), "B", "Right, dark."),
            Panel((0, 0, 8, 8), None, None),  # 32 x 32 original pixels: exactly min_side, kept
            Panel((0, 0, 8, 7), None, "Tiny."),  # 32 x 28: below min_side
            Panel((300, 0, 400, 10), None, None),  # outside the image
        ])  # fmt: skip

    rows, crops = figure_panels(row, jpeg, ImageConfig(), FilterConfig(), keep_single=False, splitter=split)
    by_key = {r.key: r for r in rows}
    assert list(by_key) == [f"PMC1_F1_p0{i}" for i in range(1, 6)]
    first, second, threshold, small, outside = rows
    assert (first.box, second.box, threshold.box, small.box) == ([0, 0, 400, 400], [400, 0, 800, 400],
                                                                 [0, 0, 32, 32], [0, 0, 32, 28])  # fmt: skip
    assert (first.caption, first.alignment, first.panel_label) == ("Two panels. Left, white.", "label", "A")
    assert (threshold.caption, threshold.alignment, threshold.status) == ("Two panels.", "none", "accepted")
    assert (small.status, small.reason, small.detail) == ("rejected", "image_too_small", "32x28")
    assert (outside.status, outside.reason) == ("rejected", "empty_panel")
    assert set(crops) == {first.key, second.key, threshold.key}
    left = Image.open(io.BytesIO(crops[first.key])).convert("L")
    right = Image.open(io.BytesIO(crops[second.key])).convert("L")
    assert left.size == right.size == (100, 100) and (first.width, first.orig_width) == (100, 400)
    assert left.getpixel((50, 50)) > 240 and right.getpixel((50, 50)) < 40
    assert first.parent == "PMC1_F1" and first.sha256 == hashlib.sha256(crops[first.key]).hexdigest()


def test_order_alignment_and_single_figures() -> None:
    row, jpeg = _figure(200, 100, orig=(200, 100))

    def ordered(image, caption):
        return FigurePanels(True, None, [Panel((0, 0, 100, 100), None, "Left, white."),
                                         Panel((100, 0, 200, 100), None, None)])  # fmt: skip

    rows, _ = figure_panels(row, jpeg, ImageConfig(), FilterConfig(), keep_single=False, splitter=ordered)
    assert [(r.alignment, r.caption) for r in rows] == [("order", "Left, white."), ("none", row.caption)]

    def single(image, caption):
        return FigurePanels(False, None, [Panel((0, 0, 200, 100))])

    assert figure_panels(row, jpeg, ImageConfig(), FilterConfig(), keep_single=False, splitter=single) == ([], {})
    rows, crops = figure_panels(row, jpeg, ImageConfig(), FilterConfig(), keep_single=True, splitter=single)
    assert [(r.key, r.alignment, r.box, r.caption) for r in rows] == [("PMC1_F1_p01", "figure", [0, 0, 200, 100],
                                                                       row.caption)]  # fmt: skip
    assert crops == {"PMC1_F1_p01": jpeg}


def test_unit_is_a_checked_setting(run_cli, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unit must be one of figure, panel, both"):
        BuildConfig(unit="subfigure")
    assert BuildConfig(unit="both").work.unit == "both"
    assert (
        BuildConfig().work.digest() != BuildConfig(unit="both").work.digest() != BuildConfig(unit="panel").work.digest()
    )
    bad = run_cli("corpus", "build", "--source", str(REPO / "data/sample/pmc"), "-o", str(tmp_path / "o"),
                  "--unit", "subfigure", check=False)  # fmt: skip
    assert bad.returncode == 2 and "subfigure" in bad.stderr
    config = tmp_path / "c.yaml"
    config.write_text("unit: pannel\n")
    bad = run_cli("corpus", "build", "--source", str(REPO / "data/sample/pmc"), "-o", str(tmp_path / "o"),
                  "-c", str(config), check=False)  # fmt: skip
    assert bad.returncode == 2 and "unit must be one of" in bad.stderr
    reused = tmp_path / "build_config.json"  # an earlier build's resolved config, as a config file
    reused.write_text(json.dumps(dataclasses.asdict(BuildConfig(unit="panel"))))
    (tmp_path / "empty").mkdir()
    ran = run_cli("corpus", "build", "--source", tmp_path / "empty", "-o", tmp_path / "o", "-c", reused, check=False)
    assert ran.returncode == 1 and "no article selected" in ran.stderr  # the config was read: work.unit ignored
    help_text = run_cli("corpus", "build", "--help").stdout
    assert "--unit [figure|panel|both]" in help_text


@pytest.mark.slow
def test_cli_unit_both(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_cli("corpus", "build", "--source", str(REPO / "data/sample/pmc"), "-o", str(out), "--unit", "both",
                   "--workers", "0")  # fmt: skip
    assert "panels" in done.stdout
    config = json.loads((out / "build_config.json").read_text())
    assert config["unit"] == "both" and (out / "panels/shards/sizes.json").is_file()
    again = run_cli("corpus", "build", "--source", str(REPO / "data/sample/pmc"), "-o", str(out), "--workers", "0")
    assert again.returncode == 0 and not (out / "panels").exists()  # --unit figure drops the stale panels


BUILD_SCRIPT = """
import sys
from biomedclip.corpus.build import BuildConfig, build
from biomedclip.corpus.sources import open_source
build([open_source(sys.argv[1])], sys.argv[2], BuildConfig(shard_size=7, batch_articles=2, unit="both"), workers=1)
"""


def _outputs(out: Path) -> dict[str, bytes]:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    skip = ("work", "report/", "build.lock", "panels/work", "panels/report/")
    return {str(p.relative_to(out)): p.read_bytes() for p in files if not str(p.relative_to(out)).startswith(skip)}


@pytest.mark.slow
def test_resume_after_kill_9_gives_the_same_panels(shared_fixtures: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(REPO / "data/sample/pmc", corpus)
    for i in range(10):
        shutil.copy(
            shared_fixtures / "pmc/packages/oa_package_tarballs/PMC7135076.tar.gz", corpus / f"PMC8{i:07d}.tar.gz"
        )

    def run(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(corpus), str(out)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip

    reference = run(tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    out = tmp_path / "killed"
    victim = run(out)
    deadline = time.monotonic() + 120
    while len(list(out.glob("panels/work/*/batches/*/*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the build ended before it could be killed"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (out / "panels/shards").exists()
    resumed = run(out)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    outputs = _outputs(out)
    assert outputs == _outputs(tmp_path / "reference")
    assert any(name.startswith("panels/shards/train-") for name in outputs)


@pytest.mark.slow
def test_ray_engine_gives_the_same_panels(shared_fixtures: Path, both: Path, in_links: Path, tmp_path: Path) -> None:
    import ray

    try:
        build(_sources(shared_fixtures), tmp_path / "ray", BuildConfig(unit="both"), engine="ray", workers=2)
    finally:
        ray.shutdown()
    assert _outputs(tmp_path / "ray") == _outputs(both)


@pytest.mark.slow
def test_a_grown_source_processes_only_the_new_articles(shared_fixtures: Path, both: Path, tmp_path: Path) -> None:
    """Incremental: the panels of earlier batches come from the released panel shards and packs (their work tars
    are deleted once released); the result equals a build of everything at once."""
    folder = tmp_path / "links"
    folder.mkdir()
    (folder / "sample").symlink_to(REPO / "data/sample/pmc")
    os.chdir(folder)
    try:
        out = tmp_path / "out"
        first = build([open_source("sample")], out, BuildConfig(unit="both"), workers=0)
        assert not list(out.glob("panels/work/*/batches/*/*.tar"))  # released: the panel crops live in the shards
        (folder / "packages").symlink_to(shared_fixtures / "pmc/packages")
        second = build(_sources(shared_fixtures), out, BuildConfig(unit="both"), workers=0)
        again = build(_sources(shared_fixtures), out, BuildConfig(unit="both"), workers=0)
    finally:
        os.chdir(REPO)
    assert second.articles_skipped == first.articles_processed > 0
    assert again.articles_processed == again.rejected["no_xml"] == 3  # tried again by figure builds too
    assert _outputs(out) == _outputs(both)


@pytest.mark.slow
def test_training_mixes_figure_and_panel_shards(both: Path, tmp_path: Path, run_cli) -> None:
    """``train -s 'OUT/shards/train-*.tar::OUT/panels/shards/train-*.tar'``: one epoch sees every sample of both."""
    spec = f"{both}/shards/train-*.tar::{both}/panels/shards/train-*.tar"
    run = tmp_path / "run"
    run_cli("train", "-m", "tiny", "-s", spec, "--model.patch_dropout", "0.0", "--model.grad_checkpointing", "False",
            "--data.workers", "1", "--optim.batch_size", "4", "--optim.epochs", "1", "--optim.warmup_steps", "1",
            "--run.output_dir", run, "--run.precision", "fp32", "--run.device", "cpu", "--run.log_every", "1",
            "--run.tensorboard", "False")  # fmt: skip
    sizes = [json.loads((both / folder / "sizes.json").read_text()) for folder in ("shards", "panels/shards")]
    samples = sum(n for manifest in sizes for name, n in manifest.items() if name.startswith("train-"))
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in steps if m["kind"] == "train"][-1]
    assert (last["step"], last["epoch"]) == (samples // 4, 1.0) and last["skipped_samples"] == 0
    assert (run / "final" / "open_clip_config.json").is_file()


@pytest.mark.slow
def test_panels_into_s3_match_a_local_build(s3_env: str, s3_client, empty_bucket: str, tmp_path: Path) -> None:
    corpus = REPO / "data/sample/pmc"
    config = BuildConfig(unit="both", shard_size=3)
    build([open_source(str(corpus))], tmp_path / "local", config, workers=0)
    build([open_source(str(corpus))], f"s3://{empty_bucket}/c", config, workers=0)
    local = {str(p.relative_to(tmp_path / "local")): p.read_bytes() for p in (tmp_path / "local/panels").rglob("*")
             if p.is_file() and p.parent.name in ("shards", "catalog")}  # fmt: skip
    assert any(name.endswith(".tar") for name in local)
    pointer = s3_client.get_object(Bucket=empty_bucket, Key="c/panels/RELEASE.json")["Body"].read()
    release = json.loads(pointer)["release"]  # the panel corpus's files lie in the release its pointer names
    for name, data in local.items():
        key = f"c/panels/{release}/{name.removeprefix('panels/')}"
        assert s3_client.get_object(Bucket=empty_bucket, Key=key)["Body"].read() == data, name
    again = build([open_source(str(corpus))], f"s3://{empty_bucket}/c", config, workers=0)
    assert (
        again.articles_processed == 0
        and again.panels == json.loads((tmp_path / "local/stats.json").read_text())["panels"]
    )
