"""Corpus build throughput vs the paper's pipeline, on a generated corpus of real PMC articles.

    .venv/bin/python benchmarks/corpus_build.py            # 2,000 articles, ~5 min on 2 idle cores
    .venv/bin/python benchmarks/corpus_build.py --articles 300 --keep /tmp/bench

The generator writes ``--articles`` legacy ``oa_package`` tarballs (``PMC<id>.tar.gz``: ``main.nxml``, full-size
``.jpg`` figures and ``.gif`` thumbnails, as PMC ships them) from the real fixture articles in ../shared, each
figure cropped and rescaled so sizes vary (short side ~250 to ~2,400 px).

Baseline (same run, one process): ``pubmed_parser==0.5.1`` ``parse_pubmed_caption`` on each XML, image =
``graphic_ref + ".jpg"`` in the tarball, PIL full decode, RGB, resize (short side 512), JPEG save, written to
one tar; as in the paper's notebook, an exception on one figure drops the article. Ours: ``biomedclip corpus
build`` (all stages: dedup, split, shards, catalog, report) with 1 and 2 workers. Also printed: how many
figures each approach gets from the real fixture articles, and peak RSS per worker.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import psutil
from lxml import etree
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOMEDCLIP_SHARED", REPO.parent / "shared")) / "fixtures"
PACKAGES = SHARED / "pmc/packages"
MAX_SHORT_SIDE = 512


def _templates() -> list[tuple[bytes, dict[str, bytes]]]:
    """Real articles with their figure images: (XML, {href: JPEG bytes})."""
    found = []
    for path in sorted((PACKAGES / "oa_package_tarballs").glob("*.tar.gz")):
        with tarfile.open(path) as tar:
            files = {Path(m.name).name: tar.extractfile(m).read() for m in tar if m.isfile()}
        images = {n.removesuffix(".jpg"): d for n, d in files.items() if n.endswith(".jpg")}
        found.append((files["main.nxml"], images))
    folder = PACKAGES / "extracted/PMC10802347/PMC10802347"
    xml = next(folder.glob("*.nxml")).read_bytes()
    images = {p.stem: p.read_bytes() for p in folder.glob("*.jpg")}
    images |= {p.stem: p.read_bytes() for p in folder.glob("*.gif") if p.stem not in images}
    found.append((xml, images))
    return found


def _variants(data: bytes, rng: random.Random, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` (full-size JPEG, GIF thumbnail) pairs: random crops, rescaled to varied sizes."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    out = []
    for _ in range(count):
        w, h = img.size
        box = (
            rng.randint(0, w // 10),
            rng.randint(0, h // 10),
            w - rng.randint(0, w // 10),
            h - rng.randint(0, h // 10),
        )
        crop = img.crop(box)
        short = rng.choice([250, 400, 600, 900, 1200, 1600, 2400])
        scale = short / min(crop.size)
        big = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.BICUBIC)
        jpg, gif = io.BytesIO(), io.BytesIO()
        big.save(jpg, format="JPEG", quality=90)
        crop.resize((200, max(1, round(200 * crop.height / crop.width)))).save(gif, format="GIF")
        out.append((jpg.getvalue(), gif.getvalue()))
    return out


def with_pmcid(xml: bytes, pmcid: str) -> bytes:
    """The article XML with its PMC article-id set to ``pmcid``."""
    return re.sub(rb'(pub-id-type="pmc"[^>]*>)\s*(PMC)?\d+', rb"\g<1>" + pmcid[3:].encode(), xml, count=1)


def generate(root: Path, articles: int, seed: int = 0) -> list[Path]:
    """Write ``articles`` tarballs under ``root``; returns their paths."""
    rng = random.Random(seed)
    templates = _templates()
    pools = [{href: _variants(data, rng, 6) for href, data in images.items()} for _, images in templates]
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(articles):
        t = i % len(templates)
        xml, _ = templates[t]
        pmcid = f"PMC{90_000_000 + i}"
        xml = with_pmcid(xml, pmcid)
        path = root / f"{pmcid}.tar.gz"
        with tarfile.open(path, "w:gz", compresslevel=0) as tar:
            members = [(f"{pmcid}/main.nxml", xml)]
            for href, pool in pools[t].items():
                jpg, gif = rng.choice(pool)
                members += [(f"{pmcid}/{href}.jpg", jpg), (f"{pmcid}/{href}.gif", gif)]
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def baseline_article(path: Path, writer: tarfile.TarFile) -> int:
    """The paper's approach for one tarball; returns the figures written (0 when any figure fails)."""
    from pubmed_parser import parse_pubmed_caption

    with tarfile.open(path) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    xml_name = next(n for n in files if n.endswith(".nxml"))
    folder = xml_name.rsplit("/", 1)[0]
    samples = []
    try:
        for fig in parse_pubmed_caption(io.BytesIO(files[xml_name])) or []:
            img = Image.open(io.BytesIO(files[f"{folder}/{fig['graphic_ref']}.jpg"])).convert("RGB")
            scale = MAX_SHORT_SIDE / min(img.size)
            if scale < 1:
                img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            samples.append((f"{fig['pmc']}_{fig['fig_id']}", buf.getvalue(), fig["fig_caption"].encode()))
    except Exception:  # the paper's notebook drops the whole article
        return 0
    for key, jpg, txt in samples:
        for ext, data in (("jpg", jpg), ("txt", txt)):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            writer.addfile(info, io.BytesIO(data))
    return len(samples)


def run_baseline(paths: list[Path], out: Path) -> tuple[int, float, float]:
    """The baseline over ``paths`` in this process; returns (figures written, wall seconds, CPU seconds)."""
    start, cpu = time.perf_counter(), time.process_time()
    with tarfile.open(out, "w") as writer:
        figures = sum(baseline_article(p, writer) for p in paths)
    return figures, time.perf_counter() - start, time.process_time() - cpu


class RssMonitor(threading.Thread):
    """Peak RSS per process of a process tree, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak: dict[int, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                for proc in [self.root, *self.root.children(recursive=True)]:
                    self.peak[proc.pid] = max(self.peak.get(proc.pid, 0), proc.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.1)


def children_cpu() -> float:
    """CPU seconds of the waited-for child processes (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ours(source: Path, out: Path, workers: int) -> tuple[int, float, float, int, int]:
    """``biomedclip corpus build`` in a subprocess: (figures processed, wall s, CPU s, main RSS, worker RSS)."""
    import pyarrow.parquet as pq

    start, cpu = time.perf_counter(), children_cpu()
    proc = subprocess.Popen(
        [sys.executable, "-m", "biomedclip", "corpus", "build", "--source", str(source), "--out", str(out),
         "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    monitor = RssMonitor(proc.pid)
    monitor.start()
    output = proc.communicate()[0].decode()
    seconds, cpu = time.perf_counter() - start, children_cpu() - cpu  # the CLI and its workers, all waited for
    monitor.done.set()
    if proc.returncode:
        raise SystemExit(f"corpus build failed:\n{output}")
    table = pq.read_table(out / "catalog.parquet", columns=["width", "status"]).to_pylist()
    processed = sum(1 for r in table if r["width"] is not None)  # decoded, resized and re-encoded
    main_rss = monitor.peak.pop(proc.pid, 0)
    return processed, seconds, cpu, main_rss, max(monitor.peak.values(), default=0)


def real_fixture_counts() -> dict[str, int]:
    """Over the real fixture articles: <fig> with a graphic, figures ours extracts, figures the baseline gets."""
    from pubmed_parser import parse_pubmed_caption

    from biomedclip.corpus.jats import extract_figures

    xmls = sorted((SHARED / "pmc/nxml").rglob("*.*xml")) + sorted(PACKAGES.rglob("*.nxml"))
    blobs = [p.read_bytes() for p in xmls]
    for path in sorted((PACKAGES / "oa_package_tarballs").glob("*.tar.gz")):
        with tarfile.open(path) as tar:
            blobs += [tar.extractfile(m).read() for m in tar if m.name.endswith(".nxml")]
    counts = {"articles": len(blobs), "figs_with_graphic": 0, "ours": 0, "baseline": 0}
    for blob in blobs:
        root = etree.fromstring(blob, etree.XMLParser(recover=True))
        counts["figs_with_graphic"] += sum(
            1 for fig in root.iter("{*}fig", "fig") if any(True for _ in fig.iter("{*}graphic", "graphic"))
        )
        counts["ours"] += sum(1 for f in extract_figures(blob) if f.status == "accepted")
        try:
            figs = parse_pubmed_caption(io.BytesIO(blob)) or []
            counts["baseline"] += sum(1 for f in figs if f["graphic_ref"] and f["fig_caption"])
        except Exception:
            pass
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--baseline-articles", type=int, default=300, help="random sample of articles for the baseline")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="corpus-bench-"))
    source = work / "source"
    t0 = time.perf_counter()
    paths = generate(source, args.articles) if not source.exists() else sorted(source.glob("*.tar.gz"))
    size = sum(p.stat().st_size for p in paths) / 2**20
    print(f"corpus: {len(paths)} tarballs, {size:.0f} MiB, generated in {time.perf_counter() - t0:.0f} s")

    sample = sorted(random.Random(1).sample(paths, min(args.baseline_articles, len(paths))))
    base_figs, base_wall, base_cpu = run_baseline(sample, work / "baseline.tar")
    base_rate = base_figs / base_cpu
    print(f"baseline (pubmed_parser 0.5.1 + PIL, 1 process) on {len(sample)} articles: {base_figs} figures, "
          f"{base_wall:.1f} s wall, {base_cpu:.1f} CPU s = {base_rate:.1f} figures per CPU-second")  # fmt: skip
    rates, walls = {}, {}
    for workers in (1, 2):
        figs, wall, cpu, main_rss, worker_rss = run_ours(source, work / f"ours-{workers}", workers)
        rates[workers], walls[workers] = figs / cpu, figs / wall
        print(f"ours, {workers} worker(s) on {len(paths)} articles: {figs} figures, {wall:.1f} s wall "
              f"({walls[workers]:.1f} figures/s), {cpu:.1f} CPU s ({rates[workers]:.1f} figures per CPU-second, "
              f"all stages and the reader included); peak RSS main {main_rss / 2**20:.0f} MB, "
              f"per worker {worker_rss / 2**20:.0f} MB")  # fmt: skip
    print(f"RATIO figures per CPU-second, ours (1 worker) / baseline: {rates[1] / base_rate:.2f}x (target >= 2x)")
    print(f"RATIO wall-clock throughput 2 workers / 1 worker: {walls[2] / walls[1]:.2f}x (target >= 1.8x; "
          f"{os.cpu_count()} CPUs, load average now {os.getloadavg()[0]:.1f})")  # fmt: skip
    counts = real_fixture_counts()
    print(f"real fixtures ({counts['articles']} XML articles): {counts['figs_with_graphic']} <fig> with a graphic; "
          f"ours extracts {counts['ours']}, baseline {counts['baseline']}")  # fmt: skip
    core_hours = 30_000_000 / rates[1] / 3600
    print(
        f"PMC OA estimate (~30M figures at {rates[1]:.1f} figures per CPU-second): {core_hours:,.0f} core-hours; "
        + ", ".join(f"{n} cores -> {core_hours / n:,.1f} h" for n in (16, 64, 256, 1024))
    )


if __name__ == "__main__":
    main()
