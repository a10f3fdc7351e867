"""Phase 2 of the corpus build at growing N: CPU-seconds per figure, peak RSS of every process, recall of dedup.

    .venv/bin/python benchmarks/corpus_scale.py                 # N = 100k, 300k, 1M (about 2 GB of disk in --work)
    .venv/bin/python benchmarks/corpus_scale.py --quick         # N = 5k, 15k: proves it runs
    .venv/bin/python benchmarks/corpus_scale.py --sizes 100000 --workers 4 --keep /tmp/scale

For each N the script writes synthetic work results (the batches phase 1 writes: Parquet rows + an image
tar) of N figures in 10-figure articles: captions of realistic length (log-normal, median ~450 characters,
a few over 5,000), 10 % rejected by phase 1, planted near-duplicate pairs (0.5 % of figures, 1 to
``max_distance`` bits apart, one thumbnail), planted exact copies (0.5 %), and a heavy cluster of near-blank
panels (1 % of figures within 3 bits of the all-zero hash, flat thumbnails); other thumbnails are random. Every
near pair goes through the pixel check in the workers. Then it runs ``build()`` over a source listing those
articles (phase 1 finds every article done, so only phase 2 runs) in a subprocess, sampling the RSS of that process
and of each of its workers every 0.1 s. Checked: every planted pair ends in one cluster, and every pair within
``max_distance`` in a random sample of 3,000 accepted figures (numpy brute force) too.
Targets (issue 11): CPU-seconds per figure at 1M <= 1.3x those at 100k; peak RSS of every process <= 1 GB at
1M and <= 1.2x its value at 100k.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from corpus_build import RssMonitor, children_cpu  # this folder is on sys.path when a benchmark runs

FIGURES_PER_ARTICLE = 10
ARTICLES_PER_BATCH = 100
MAX_DISTANCE = 4
WORDS = tuple(
    [
        "the",
        "of",
        "and",
        "in",
        "a",
        "to",
        "with",
        "was",
        "were",
        "cells",
        "figure",
        "shows",
        "panel",
        "tumor",
        "expression",
        "patients",
        "control",
        "mean",
        "error",
        "bars",
        "significant",
        "protein",
        "images",
        "scale",
        "bar",
        "representative",
        "analysis",
        "group",
        "treated",
        "n",
    ]
)


def _tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 30, 200)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def generate(work: Path, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the work batches of ``n`` synthetic figures; returns the planted pairs (key indices)."""
    from biomedclip.corpus.articles import WorkConfig
    from biomedclip.corpus.rows import WORK_SCHEMA

    rng = np.random.default_rng(seed)
    text = " ".join(rng.choice(WORDS, 400_000))
    phash = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    sha = np.arange(n)
    accepted = rng.random(n) >= 0.10
    idx = np.flatnonzero(accepted)
    rng.shuffle(idx)
    k = len(idx) // 200
    near_a, near_b, exact_a, exact_b = idx[:k], idx[k : 2 * k], idx[2 * k : 3 * k], idx[3 * k : 4 * k]
    blank = idx[4 * k : 4 * k + len(idx) // 100]
    for a, b in zip(near_a, near_b, strict=True):
        bits = rng.choice(64, rng.integers(1, MAX_DISTANCE + 1), replace=False)
        phash[b] = phash[a] ^ np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64))
    sha[exact_b] = sha[exact_a]
    for i in blank:
        bits = rng.choice(64, rng.integers(0, 4), replace=False)
        phash[i] = np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64)) if len(bits) else np.uint64(0)
    thumbs = rng.integers(0, 256, (n, 64), dtype=np.uint8)  # random pictures: different, as their hashes
    thumbs[near_b] = thumbs[near_a]
    thumbs[exact_b] = thumbs[exact_a]
    thumbs[blank] = 255  # blank panels: flat, confirmed as copies of each other
    lengths = np.clip(rng.lognormal(6.1, 0.8, n).astype(int), 12, 15_000)
    starts = rng.integers(0, len(text) - 16_000, n)
    jpeg = _tiny_jpeg()
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    folder = work / "work" / WorkConfig().digest() / "batches"
    per_batch = FIGURES_PER_ARTICLE * ARTICLES_PER_BATCH
    for b, lo in enumerate(range(0, n, per_batch)):
        hi = min(n, lo + per_batch)
        batch = f"{b:020d}"
        rows: dict[str, list] = {name: [] for name in WORK_SCHEMA.names}
        path = folder / batch[:2] / f"{batch}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for i in range(lo, hi):
                article = f"PMC{i // FIGURES_PER_ARTICLE:08d}"
                key = f"{article}_F{i % FIGURES_PER_ARTICLE}"
                ok = bool(accepted[i])
                row = dict.fromkeys(WORK_SCHEMA.names)
                row.update(key=key, article=article, pmcid=article, version=0, fig_id=f"F{i % FIGURES_PER_ARTICLE}",
                           label="", caption=text[starts[i] : starts[i] + lengths[i]], graphic=f"f{i}.jpg",
                           source="synthetic", status="accepted" if ok else "rejected",
                           reason="" if ok else "image_too_small", detail="", graphics=[], image_path=f"f{i}.jpg",
                           license="CC BY", journal="J", year=2020, final=True, batch=batch)  # fmt: skip
                if ok:
                    row.update(width=16, height=16, orig_width=800, orig_height=600, sha256=digests[sha[i]],
                               phash=f"{int(phash[i]):016x}", caption_tokens=int(lengths[i] // 5),
                               thumb=thumbs[i].tobytes().hex())  # fmt: skip
                    info = tarfile.TarInfo(f"{key}.jpg")
                    info.size = len(jpeg)
                    tar.addfile(info, io.BytesIO(jpeg))
                    row.update(image_offset=tar.offset - 512 * -(-len(jpeg) // 512), image_size=len(jpeg))
                for name in WORK_SCHEMA.names:
                    rows[name].append(row[name])
        pq.write_table(pa.table(rows, schema=WORK_SCHEMA), folder / batch[:2] / f"{batch}.parquet")
    return {"near": np.stack([near_a, near_b]), "exact": np.stack([exact_a, exact_b]), "blank": blank,
            "accepted": np.flatnonzero(accepted), "phash": phash, "sha": sha}  # fmt: skip


class Listing:
    """A source listing the synthetic articles (all done, so the build goes straight to phase 2)."""

    name = "synthetic"

    def __init__(self, articles: int) -> None:
        self.count = articles

    def articles(self):
        from biomedclip.corpus.records import Article, ArticleMeta

        for a in range(self.count):
            yield Article("synthetic", ArticleMeta(pmcid=f"PMC{a:08d}"), None, [], open)


def phase2(work: Path, n: int, workers: int) -> None:
    """The measured subprocess: ``build()`` over the listing."""
    from biomedclip.corpus.build import BuildConfig, build

    summary = build([Listing(-(-n // FIGURES_PER_ARTICLE))], work, BuildConfig(), workers=workers)
    print(f"articles {summary.articles}, processed {summary.articles_processed}, accepted {summary.accepted}, "
          f"shards {summary.shards}")  # fmt: skip


def check(work: Path, planted: dict[str, np.ndarray], sha: np.ndarray | None = None) -> list[tuple[str, int, int]]:
    """Each check as (name, passed, total):

    * planted pairs: both figures of every planted near or exact pair end in one cluster;
    * sample pairs: every pair within ``MAX_DISTANCE`` among 3,000 sampled figures (numpy brute force) too;
    * sampled duplicates: each of 2,000 sampled duplicates has a figure of its cluster within ``MAX_DISTANCE``
      bits or with its SHA-256 (no unrelated figures merged).
    """
    clusters = pq.read_table(work / "clusters.parquet").to_pydict()
    root = dict(zip(clusters["key"], clusters["duplicate_of"], strict=True))

    def key(i: int) -> str:
        return f"PMC{i // FIGURES_PER_ARTICLE:08d}_F{i % FIGURES_PER_ARTICLE}"

    def index(k: str) -> int:
        article, fig = k.split("_F")
        return int(article[3:]) * FIGURES_PER_ARTICLE + int(fig)

    def same(i: int, j: int) -> bool:
        return root.get(key(i), key(i)) == root.get(key(j), key(j))

    pairs = np.concatenate([planted["near"], planted["exact"]], axis=1).T
    found = sum(same(int(a), int(b)) for a, b in pairs)
    rng = np.random.default_rng(1)
    sample = np.unique(np.concatenate([rng.choice(planted["accepted"], 2800, replace=False), planted["blank"][:200]]))
    values = planted["phash"][sample]
    ii, jj = np.nonzero(np.triu(np.bitwise_count(values[:, None] ^ values[None, :]) <= MAX_DISTANCE, 1))
    brute = sum(same(int(sample[i]), int(sample[j])) for i, j in zip(ii, jj, strict=True))
    members: dict[str, list[int]] = {}
    for dup, kept in root.items():
        members.setdefault(kept, [index(kept)]).append(index(dup))
    dups = list(root)
    chosen = [dups[i] for i in rng.choice(len(dups), min(2000, len(dups)), replace=False)] if dups else []
    linked = 0
    for dup in chosen:
        me, others = index(dup), np.array([m for m in members[root[dup]] if m != index(dup)])
        near = np.bitwise_count(planted["phash"][others] ^ planted["phash"][me]) <= MAX_DISTANCE
        linked += bool(near.any() or (planted["sha"][others] == planted["sha"][me]).any())
    return [("planted pairs found", found, len(pairs)), ("brute-force sample pairs found", brute, len(ii)),
            ("sampled duplicates with a near/exact partner in their cluster", linked, len(chosen))]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="N = 5k and 15k")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--phase2", nargs=2, metavar=("WORK", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase2:
        phase2(Path(args.phase2[0]), int(args.phase2[1]), args.workers)
        return
    sizes = [5_000, 15_000] if args.quick else args.sizes
    root = args.keep or Path(tempfile.mkdtemp(prefix="corpus-scale-"))
    results = {}
    for n in sizes:
        work = root / f"n{n}"
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        planted = generate(work, n)
        print(f"N={n:,}: generated in {time.perf_counter() - t0:.0f} s", flush=True)
        start, cpu = time.perf_counter(), children_cpu()
        proc = subprocess.Popen([sys.executable, __file__, "--phase2", str(work), str(n), "--workers",
                                 str(args.workers)], stdout=subprocess.PIPE, text=True)  # fmt: skip
        monitor = RssMonitor(proc.pid)
        monitor.start()
        output = proc.communicate()[0]
        wall, cpu = time.perf_counter() - start, children_cpu() - cpu
        monitor.done.set()
        if proc.returncode:
            raise SystemExit(f"phase 2 failed at N={n}:\n{output}")
        main_rss = monitor.peak.pop(proc.pid, 0)
        worker_rss = max(monitor.peak.values(), default=0)
        checks = check(work, planted)
        results[n] = (cpu / n, main_rss, worker_rss)
        expected = len(planted["accepted"]) - planted["near"].shape[1] - planted["exact"].shape[1]
        print(f"N={n:,}: {output.strip()} (at most {expected:,} expected: the planted duplicates and the near-blank "
              f"panels go); wall {wall:.1f} s, {cpu / n * 1e6:.1f} CPU-us per figure; peak RSS driver "
              f"{main_rss / 2**20:.0f} MB, worst worker {worker_rss / 2**20:.0f} MB; "
              + "; ".join(f"{name} {ok}/{total}" for name, ok, total in checks), flush=True)  # fmt: skip
        if any(ok != total for _, ok, total in checks):
            raise SystemExit("dedup check FAILED")
        if not args.keep:
            shutil.rmtree(work)
    first, last = sizes[0], sizes[-1]
    if len(sizes) > 1:
        cpu_ratio = results[last][0] / results[first][0]
        rss_ratio = max(results[last][1:]) / max(results[first][1:])
        print(f"RATIO CPU-seconds per figure N={last:,} / N={first:,}: {cpu_ratio:.2f}x (target <= 1.3x)")
        print(f"RATIO peak RSS (worst process) N={last:,} / N={first:,}: {rss_ratio:.2f}x (target <= 1.2x); "
              f"at N={last:,}: {max(results[last][1:]) / 2**30:.2f} GB (target <= 1 GB)")  # fmt: skip
    os.sync()


if __name__ == "__main__":
    main()
