"""The streaming vector index at scale: build cost, memory, disk, latency and recall at 1M, 3M, 10M vectors.

    .venv/bin/python benchmarks/index_scale.py --sizes 20k            # smoke test: proves it runs (a minute)
    .venv/bin/python benchmarks/index_scale.py --sizes 1M,3M,10M      # the issue's sizes (10M: 32 GB of disk)
    .venv/bin/python benchmarks/index_scale.py --sizes 10M --workdir W --keep --reuse-index   # search again

Per size, synthetic clustered 512-d vectors (as ``benchmarks/index_search.py``: unit vectors around 10k random
centres, or one per 100 vectors at small sizes; queries from the same centres with more noise) are written as a
vector folder in the format of ``biomedclip embed`` (float16 ``.npy`` + Parquet records + done markers,
``--shard-size`` rows per shard), with records whose filter values select 10% (``split=test``) and 1%
(``journal=J07``) of the vectors independently of
the clusters. Then:

- ``biomedclip index build --vectors`` runs as a child process: its CPU seconds per vector and peak RSS;
- the index's size on disk (the float16 vectors stay in the vector folder, listed apart);
- exact top-10 of every query (unfiltered, 10%, 1%) by a streaming brute force over the shards (float32 dot
  products with the float16 vectors, one shard at a time);
- a separate search process opens the index and runs the queries one at a time: its p50/p95 latency, recall@10
  against the brute force, and its peak RSS (with the anonymous / file-backed split); then runs them again, to
  show the latency once the vectors they read are in the page cache (the first pass meets the page cache the
  build and the brute force left: mostly cold for the float16 vectors at 10M; with ``--drop-caches``, run as
  root, an empty one).

Targets: p50 < 10 ms, recall@10 >= 0.95 unfiltered and filtered at every size; build CPU per vector at the
largest size within 1.3x of 1M; search RSS at 10M <= 8 GB. The machine is shared: figures are indicative.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np
import pyarrow as pa

from biomedclip.serve.index import RECORD_COLUMNS, normalize

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `biomedclip serve` does (see biomedclip.serve.cli)

K = 10
FILTERS = {"unfiltered": {}, "10%": {"split": "test"}, "1%": {"journal": "J07"}}


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def synthetic(n: int, centres: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors around random picks of ``centres`` (as benchmarks/index_search.py)."""
    labels = rng.integers(0, len(centres), n)
    noise = rng.standard_normal((n, centres.shape[1]), dtype=np.float32) * (spread / np.sqrt(centres.shape[1]))
    return normalize(centres[labels] + noise)


def records(start: int, count: int) -> pa.Table:
    """Index records for ids ``start .. start + count``: 10% split=test, 1% journal J07, panels every 20th."""
    ids = np.arange(start, start + count)
    mixed = (ids * 2654435761) % 2**32  # filter values independent of the clusters and of each other
    keys = [f"PMC{i}_F1" for i in ids]
    panel = ids % 20 == 19
    parents = [f"PMC{i - 1}_F1" if p else "" for i, p in zip(ids, panel, strict=True)]
    columns = {
        "key": keys,
        "pmcid": [f"PMC{i}" for i in ids],
        "caption": [f"synthetic figure {i}" for i in ids],
        "license": np.where(mixed % 3 == 0, "CC0", "CC BY").tolist(),
        "journal": [f"J{j:02d}" for j in (mixed >> 8) % 100],
        "year": 2000 + (mixed >> 16) % 25,
        "split": np.where((mixed >> 4) % 10 == 0, "test", "train").tolist(),
        "parent": parents,
        "shard": ["corpus/train-000000.tar"] * count,
        "offset": ids * 1000,
        "size": np.full(count, 1000),
    }
    arrays = {}
    for name, dtype in RECORD_COLUMNS.items():
        if name in columns:
            arrays[name] = pa.array(columns[name], type=dtype)
        else:
            arrays[name] = pa.nulls(count, dtype) if not pa.types.is_string(dtype) else pa.array([""] * count, dtype)
    return pa.table(arrays)


def write_folder(folder: Path, n: int, shard_size: int, centres: np.ndarray, seed: int) -> None:
    from biomedclip.serve.vector_folder import write_vector_shard

    rng = np.random.default_rng(seed)
    for number, start in enumerate(range(0, n, shard_size)):
        count = min(shard_size, n - start)
        vectors = synthetic(count, centres, 1.0, rng)
        write_vector_shard(folder, f"train-{number:06d}", vectors, records(start, count), model="synthetic")


def brute_force(folder: Path, queries: np.ndarray) -> dict[str, np.ndarray]:
    """Exact top-K ids per query and filter, streaming one shard at a time."""
    from biomedclip.serve.vector_folder import VectorFolder

    vectors = VectorFolder(folder)
    best = {name: (np.full((len(queries), 0), -np.inf), np.zeros((len(queries), 0), np.int64)) for name in FILTERS}
    for shard, start in zip(vectors.shards, vectors.starts[:-1].tolist(), strict=True):
        table = records(start, shard.rows)
        scores = queries @ np.asarray(vectors.vectors(shard), np.float32).T
        ids = np.arange(start, start + shard.rows)
        masks = {"unfiltered": np.ones(shard.rows, bool), "10%": np.asarray(table["split"]) == "test",
                 "1%": np.asarray(table["journal"]) == "J07"}  # fmt: skip
        for name, mask in masks.items():
            old_scores, old_ids = best[name]
            all_scores = np.concatenate([old_scores, scores[:, mask]], axis=1)
            all_ids = np.concatenate([old_ids, np.broadcast_to(ids[mask], (len(queries), mask.sum()))], axis=1)
            top = np.argsort(-all_scores, axis=1)[:, :K]
            best[name] = (np.take_along_axis(all_scores, top, 1), np.take_along_axis(all_ids, top, 1))
    return {name: ids for name, (_, ids) in best.items()}


def peak_memory() -> dict[str, int]:
    """This process's peak RSS and current anonymous / file-backed RSS, bytes (Linux /proc)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def search_worker(index_dir: str, queries_path: str, out_path: str) -> None:
    """Run in its own process: open the index, search every query one at a time, write ids, times and RSS."""
    from biomedclip.serve.index import FigureFilter
    from biomedclip.serve.vector_index import VectorIndex

    start = time.perf_counter()
    index = VectorIndex.load(index_dir)
    opened = time.perf_counter() - start
    after_open = peak_memory()
    queries = np.load(queries_path)
    result: dict[str, object] = {"open_s": opened, "after_open": after_open}

    def timed(where: dict[str, str]) -> tuple[list[np.ndarray], list[float]]:
        ids, times = [], []
        for query in queries:
            begin = time.perf_counter()
            ids.append(index.search_vectors(query[None, :], K, FigureFilter(**where) if where else None)[1][0])
            times.append((time.perf_counter() - begin) * 1e3)
        return ids, times

    for name, where in FILTERS.items():
        ids, times = timed(where)
        result[name] = {"ids": np.array(ids).tolist(), "ms": times}
    for name, where in FILTERS.items():  # again: the vectors each query reads are now in the page cache
        result[name]["ms_warm"] = timed(where)[1]
    result["memory"] = peak_memory()
    Path(out_path).write_text(json.dumps(result))


def empty_page_cache() -> None:
    """Write dirty pages out and drop the clean ones (root only), so the next reads come from the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as error:
        raise click.ClickException(f"--drop-caches needs root: {error}") from error


def _rss(pid: int) -> tuple[int, int, int]:
    """(anonymous, file-backed, peak) resident bytes of a process; zeros once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0, 0, 0
    pairs = (line.partition(":") for line in lines)
    names = ("RssAnon", "RssFile", "VmHWM")
    fields = {name: int(value.split()[0]) * 1024 for name, _, value in pairs if name in names}
    return fields.get("RssAnon", 0), fields.get("RssFile", 0), fields.get("VmHWM", 0)


def run_child(command: list[str]) -> dict[str, float]:
    """Run a child process: its CPU seconds, wall seconds, peak RSS (bytes; the kernel's high-water mark of the
    program itself, ``VmHWM``: ``ru_maxrss`` would also count this process's pages the child had between fork and
    exec) and the peaks of its anonymous and file-backed parts (sampled every 50 ms: file-backed pages are
    memory-mapped files, page cache the kernel can drop)."""
    start = time.perf_counter()
    child = subprocess.Popen(command)
    peaks = [0, 0, 0]

    def sample() -> None:
        while child.poll() is None:
            anon, file, high = _rss(child.pid)
            peaks[0], peaks[1], peaks[2] = max(peaks[0], anon), max(peaks[1], file), max(peaks[2], high)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    if child.returncode != 0:
        raise click.ClickException(f"{' '.join(command)} failed")
    return {"cpu": usage.ru_utime + usage.ru_stime, "wall": time.perf_counter() - start,
            "rss": peaks[2] or usage.ru_maxrss * 1024, "anon": peaks[0], "file": peaks[1]}  # fmt: skip


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


@click.command()
@click.option("--sizes", default="1M", show_default=True, help="Comma-separated sizes, e.g. 20k,1M,3M,10M.")
@click.option("--dim", default=512, show_default=True)
@click.option("--clusters", default=10_000, show_default=True)
@click.option("--queries", default=200, show_default=True)
@click.option("--shard-size", default=100_000, show_default=True, help="Vectors per vector shard.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Where the data goes (default: a temporary folder).")
@click.option("--keep", is_flag=True, help="Keep the vector folders and indexes (for serve_load.py --index).")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--reuse-index",
    is_flag=True,
    help="Measure search again on the index a --keep run left in --workdir (its build figures are kept).",
)
@click.option(
    "--drop-caches",
    is_flag=True,
    help="Empty the kernel's page cache before each search process (needs root): its first pass is truly cold.",
)
@click.option("--search-worker", "worker", nargs=3, hidden=True, help="internal: INDEX QUERIES OUT")
def main(sizes, dim, clusters, queries, shard_size, workdir, keep, seed, reuse_index, drop_caches, worker) -> None:
    """Build and measure the vector index at each size; print the table, the build-cost ratio and the 30M estimate."""
    if worker:
        return search_worker(*worker)
    root = Path(workdir or tempfile.mkdtemp(prefix="index_scale-"))
    root.mkdir(parents=True, exist_ok=True)
    click.echo(f"{os.cpu_count()} CPUs (shared with other work: figures are indicative); data in {root}")
    saved = root / "results.json"  # sizes measured by earlier runs in the same --workdir are kept
    results = {int(size): row for size, row in json.loads(saved.read_text()).items()} if saved.is_file() else {}
    for size in [parse_size(s) for s in sizes.split(",")]:
        folder, index_dir = root / f"vectors-{size}", root / f"index-{size}"
        rng = np.random.default_rng(seed)  # at most one cluster per 100 vectors (a smoke-test size stays clustered)
        centres = normalize(rng.standard_normal((min(clusters, max(1, size // 100)), dim), dtype=np.float32))
        query_vectors = synthetic(queries, centres, 1.5, rng)
        np.save(root / f"queries-{size}.npy", query_vectors)
        start = time.perf_counter()
        if not (folder / "vectors.json").is_file():
            write_folder(folder, size, shard_size, centres, seed + 1)
        made = time.perf_counter() - start
        click.echo(f"\n== {size:,} vectors: vector folder {gb(disk_bytes(folder))} ({made:.0f} s to write)")
        if reuse_index and size in results and (index_dir / "meta.json").is_file():
            build = results[size]["build"]
            click.echo("  reusing the index of an earlier run (its build figures below)")
        else:
            shutil.rmtree(index_dir, ignore_errors=True)
            build = run_child([sys.executable, "-m", "biomedclip", "index", "build", "--vectors", str(folder), "-o",
                               str(index_dir)])  # fmt: skip
        start = time.perf_counter()
        truth = brute_force(folder, query_vectors)
        truth_s = time.perf_counter() - start
        out = root / f"search-{size}.json"
        queries_path = root / f"queries-{size}.npy"
        if drop_caches:
            empty_page_cache()
        search = run_child([sys.executable, __file__, "--search-worker", str(index_dir), str(queries_path), str(out)])
        found = json.loads(out.read_text())
        search["rss"] = max(search["rss"], found["memory"]["VmHWM"])  # its own high-water mark, at its very end
        row = {"cpu_per_vector_us": build["cpu"] / size * 1e6, "build": build, "search": search,
               "index_disk": disk_bytes(index_dir), "vectors_disk": disk_bytes(folder), "open_s": found["open_s"],
               "after_open": found["after_open"]}  # fmt: skip
        click.echo(
            f"build: {build['wall']:.0f} s wall, {build['cpu']:.0f} CPU-s = {row['cpu_per_vector_us']:.1f} "
            f"CPU-us/vector; peak RSS {gb(build['rss'])} (anonymous {gb(build['anon'])}, memory-mapped files "
            f"{gb(build['file'])}); index on disk {gb(row['index_disk'])} (+ the vector folder: float16 vectors "
            f"and records, {gb(row['vectors_disk'])})"
        )
        emptied = " (page cache emptied first)" if drop_caches else ""
        click.echo(
            f"search process{emptied}: opened in {found['open_s']:.1f} s; peak RSS {gb(search['rss'])} (anonymous "
            f"{gb(search['anon'])}, memory-mapped files {gb(search['file'])}); brute-force truth {truth_s:.0f} s"
        )
        for name in FILTERS:
            ms = np.array(found[name]["ms"])
            recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found[name]["ids"], truth[name], strict=True)])
            warm = np.array(found[name]["ms_warm"])
            row[name] = {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "recall": recall}
            row[name].update(p50_warm=float(np.percentile(warm, 50)), p95_warm=float(np.percentile(warm, 95)))
            click.echo(
                f"  {name:>10}: p50 {row[name]['p50']:6.2f} ms  p95 {row[name]['p95']:6.2f} ms  recall@{K} {recall:.4f}"
                f"   (again, page cache warm: p50 {row[name]['p50_warm']:6.2f} ms  p95 {row[name]['p95_warm']:6.2f} ms)"
            )
        results[size] = row
        saved.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))  # kept if a later size fails
        if not keep:
            shutil.rmtree(folder)
            shutil.rmtree(index_dir)
    largest = max(results)
    if len(results) > 1:
        click.echo("\n      size  build us/vec  build anon  index disk  p50 unf / 10% / 1% (ms)  recall unf / 10% / 1%")
        for size, row in sorted(results.items()):
            click.echo(
                f"{size:>10,}  {row['cpu_per_vector_us']:10.1f}  {gb(row['build']['anon']):>10}  "
                f"{gb(row['index_disk']):>10}  {row['unfiltered']['p50']:6.2f} / {row['10%']['p50']:6.2f} / "
                f"{row['1%']['p50']:6.2f}    {row['unfiltered']['recall']:.3f} / {row['10%']['recall']:.3f} / "
                f"{row['1%']['recall']:.3f}"
            )
    if 1_000_000 in results and largest != 1_000_000:
        ratio = results[largest]["cpu_per_vector_us"] / results[1_000_000]["cpu_per_vector_us"]
        click.echo(f"\nbuild CPU per vector, {largest:,} / 1M: {ratio:.2f}x (target <= 1.3x)")
    row = results[largest]
    anon = row["search"]["anon"]
    lists = largest * 104  # 32 B of 4-bit PQ codes + 8 B id in the IVF lists, 64 B of 8-bit refining codes
    fixed = anon - lists
    click.echo(
        f"search memory at {largest:,}: peak RSS {gb(row['search']['rss'])}; peak anonymous {gb(anon)} = "
        f"IVF lists and refining codes {gb(lists)} (104 B/vector) + {gb(fixed)} fixed (interpreter, libraries, "
        f"quantizers). Extrapolated to 30M: {gb(fixed + 30e6 * 104)} anonymous, plus the page cache of the "
        f"memory-mapped files actually touched (float16 vectors {gb(30e6 * dim * 2)} on disk, read candidate by "
        f"candidate; value lists: the listed values' float16 copies, read only by a filter on them; filter bitmaps "
        f"{gb(30e6 / 8)} per dense value)"
    )
    if not keep and workdir is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
