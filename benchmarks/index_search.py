"""Text-to-figure search latency and recall@10 over 1M synthetic 512-d embeddings on CPU.

    .venv/bin/python benchmarks/index_search.py            # 1M vectors, 1000 queries
    .venv/bin/python benchmarks/index_search.py --n 200000  # quicker
    .venv/bin/python benchmarks/index_search.py --quick     # 20k vectors, 100 queries: proves it runs

The corpus is clustered like real CLIP embeddings (figures of one kind sit together): unit vectors drawn around
random cluster centres; queries come from the same clusters with more noise (a caption is near, never on, its
figures). The baseline is exact search (faiss ``IndexFlatL2``, what a ``flat`` index does) measured in the same
run; the approximate index is what ``kind=auto`` builds at this size. Latency is per single query, as the
service issues them. Target: p50 < 10 ms with recall@10 >= 0.95.

A filtered search (the page's year/journal/license/split filters) is measured too: 10% of the figures pass, faiss
skips the rest while it searches, and recall@10 is against exact search over the passing figures.
"""

from __future__ import annotations

import time

import click
import faiss
import numpy as np

from biomedclip.serve.index import FigureFilter, FigureIndex, IndexConfig, normalize


def synthetic(n: int, centres: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors scattered around random picks of ``centres`` (chunked to bound memory)."""
    clusters, dim = centres.shape
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        labels = rng.integers(0, clusters, stop - start)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * (spread / np.sqrt(dim))
        out[start:stop] = normalize(centres[labels] + noise)
    return out


def latencies(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query latencies (ms) and the ids found, one query at a time."""
    times, found = [], []
    for query in queries:
        start = time.perf_counter()
        _, ids = search(query[None, :], k)
        times.append((time.perf_counter() - start) * 1e3)
        found.append(ids[0])
    return np.array(times), np.array(found)


@click.command()
@click.option("--n", default=1_000_000, show_default=True, help="Figures in the index.")
@click.option("--dim", default=512, show_default=True)
@click.option("--queries", default=1000, show_default=True)
@click.option("--baseline-queries", default=100, show_default=True, help="Queries timed on the exact baseline.")
@click.option("--k", default=10, show_default=True)
@click.option("--clusters", default=10_000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--quick", is_flag=True, help="20k vectors, 100 queries, 200 clusters: proves the benchmark runs.")
def main(n: int, dim: int, queries: int, baseline_queries: int, k: int, clusters: int, seed: int, quick: bool) -> None:
    """Run the benchmark and print latency, recall and the speed-up over exact search."""
    if quick:
        n, queries, baseline_queries, clusters = 20_000, 100, 50, 200
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    centres = normalize(rng.standard_normal((clusters, dim), dtype=np.float32))
    data = synthetic(n, centres, spread=1.0, rng=rng)
    query_vectors = synthetic(queries, centres, spread=1.5, rng=rng)
    click.echo(f"data: {n:,} x {dim} ({time.perf_counter() - start:.1f} s), {faiss.omp_get_max_threads()} threads")

    exact = faiss.IndexFlatL2(dim)
    exact.add(data)
    start = time.perf_counter()
    _, truth = exact.search(query_vectors, k)
    click.echo(f"ground truth for {queries} queries: {time.perf_counter() - start:.1f} s (batched exact search)")
    exact_ms, _ = latencies(exact.search, query_vectors[:baseline_queries], k)

    start = time.perf_counter()
    index = FigureIndex(dim, IndexConfig(exact_max=min(200_000, n // 2)))  # --quick still builds the ivfpq kind
    index.add(data, [{"split": "test" if i % 10 == 0 else "train"} for i in range(n)])
    build_s = time.perf_counter() - start
    del exact
    click.echo(f"index: {index.kind}, {len(index):,} vectors; build (train + add): {build_s:.1f} s")
    click.echo(f"exact  p50 {np.percentile(exact_ms, 50):8.2f} ms  p95 {np.percentile(exact_ms, 95):8.2f} ms")
    ivf = faiss.extract_index_ivf(index.faiss_index)
    for nprobe, k_factor in [(128, 64), (256, 64), (512, 64)]:  # the default (256, 64) in the middle
        ivf.nprobe, index.faiss_index.k_factor = nprobe, k_factor
        approx_ms, found = latencies(index.faiss_index.search, query_vectors, k)
        recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)])
        click.echo(
            f"approx nprobe {nprobe:3d} k_factor {k_factor}: p50 {np.percentile(approx_ms, 50):6.2f} ms  "
            f"p95 {np.percentile(approx_ms, 95):6.2f} ms  recall@{k} {recall:.4f}"
        )
        if (nprobe, k_factor) == (index.config.nprobe, index.config.k_factor):
            default_p50 = np.percentile(approx_ms, 50)
    ratio = np.percentile(exact_ms, 50) / default_p50
    click.echo(f"speed-up p50 (default settings) vs exact baseline: {ratio:.1f}x")

    ivf.nprobe, index.faiss_index.k_factor = index.config.nprobe, index.config.k_factor
    where = FigureFilter(split="test")
    passing = np.flatnonzero(np.arange(n) % 10 == 0)
    subset = faiss.IndexFlatL2(dim)
    subset.add(data[passing])
    _, subset_truth = subset.search(query_vectors, k)
    times, found = [], []
    for query in query_vectors:
        start = time.perf_counter()
        _, ids = index.search_vectors(query[None, :], k, where)
        times.append((time.perf_counter() - start) * 1e3)
        found.append(ids[0])
    recall = np.mean([len(set(f) & set(passing[t])) / k for f, t in zip(found, subset_truth, strict=True)])
    click.echo(
        f"filtered (10% pass): p50 {np.percentile(times, 50):6.2f} ms  p95 {np.percentile(times, 95):6.2f} ms  "
        f"recall@{k} {recall:.4f} (exact over the passing figures)"
    )


if __name__ == "__main__":
    main()
