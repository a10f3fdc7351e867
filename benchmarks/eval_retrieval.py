"""Benchmark: exact tiled retrieval (biomedclip.evaluate.retrieval) vs a naive full-matrix numpy computation.

    .venv/bin/python benchmarks/eval_retrieval.py            # 200k x 200k, 512-d; about 2-4 minutes on 2 cores

Every measurement runs in its own subprocess (peak RSS = that process's ru_maxrss; the naive one under an
address-space limit, so running out of memory is a result, not a crash). Three measurements:
  1. naive at N x N: the full similarity matrix (N^2 float32) - at 200k that is 160 GB, so it fails;
  2. tiled at N x N: all N images against ``--queries`` texts (the same tiles and flops as that many rows of the
     full problem), time scaled by N / queries - the tile loop is uniform, so this is a linear extrapolation;
     ``--queries 0`` runs the whole N x N problem;
  3. both at ``--small`` x ``--small`` where the naive version fits: same-run wall time, peak memory and a count
     of the ranks that agree (they can differ only on float near-ties).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil


def synthetic(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit image vectors and matching texts = image + noise (so recall is neither 0 nor 1)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, dim), dtype=np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts = rng.standard_normal((n, dim), dtype=np.float32)
    texts *= np.float32(0.2)
    texts += images
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    return images, texts


def naive_ranks(images: np.ndarray, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The textbook version: the whole N x N similarity matrix, then counts against the diagonal."""
    scores = images @ texts.T
    positive = np.diag(scores).copy()
    return (scores > positive[:, None]).sum(1), (scores > positive[None, :]).sum(0)


def worker(kind: str, n: int, dim: int, queries: int, ranks_out: str | None) -> dict:
    images, texts = synthetic(n, dim)
    data_rss = psutil.Process().memory_info().rss / 2**30
    start = time.perf_counter()
    if kind == "naive":
        image_ranks, text_ranks = naive_ranks(images, texts)
    else:
        from biomedclip.evaluate.retrieval import retrieval_ranks

        if queries:  # same tiles and flops as `queries` rows of the full problem: all n images x `queries` texts
            image_ranks, text_ranks = retrieval_ranks(images, texts[:queries], np.arange(n) % queries)
        else:
            image_ranks, text_ranks = retrieval_ranks(images, texts, np.arange(n))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if ranks_out:
        np.savez(ranks_out, image=image_ranks, text=text_ranks)
    return {
        "seconds": seconds,
        "peak_gib": peak,
        "data_gib": data_rss,
        "i2t_R@1": float(np.mean(image_ranks < 1)),
    }


def run(kind: str, n: int, dim: int, queries: int = 0, mem_gib: float | None = None, ranks_out: str = "") -> dict:
    """Run one measurement in a fresh interpreter, optionally under an address-space limit."""

    def limit() -> None:
        if mem_gib:
            size = int(mem_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    args = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--dim", str(dim), "--queries", str(queries)]
    args += ["--ranks-out", ranks_out] if ranks_out else []
    proc = subprocess.run(args, capture_output=True, text=True, preexec_fn=limit)
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        return {"failed": reason, "limit_gib": mem_gib}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=8192, help="image rows timed at full size (0 = all)")
    parser.add_argument("--small", type=int, default=20_000, help="size where the naive version fits")
    parser.add_argument("--mem-gib", type=float, default=16.0, help="address-space limit of the naive run")
    parser.add_argument("--worker", choices=["naive", "tiled"], help=argparse.SUPPRESS)
    parser.add_argument("--ranks-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.dim, args.queries, args.ranks_out)))
        return
    print(f"retrieval benchmark: {args.n} x {args.n}, {args.dim}-d float32")
    naive_full = run("naive", args.n, args.dim, mem_gib=args.mem_gib)
    matrix_gib = args.n**2 * 4 / 2**30
    if "failed" in naive_full:
        failure = naive_full["failed"]
        print(f"  naive full matrix ({matrix_gib:.0f} GiB needed): FAILED under {args.mem_gib:g} GiB: {failure}")
    else:
        print(f"  naive full matrix: {naive_full['seconds']:.1f}s, peak {naive_full['peak_gib']:.2f} GiB")
    tiled_full = run("tiled", args.n, args.dim, queries=args.queries)
    rows = args.queries or args.n
    estimate = tiled_full["seconds"] * args.n / rows
    label = "measured" if rows == args.n else f"extrapolated from {rows} rows in {tiled_full['seconds']:.1f}s"
    recall = f", i2t R@1 {tiled_full['i2t_R@1']:.3f}" if rows == args.n else ""
    print(
        f"  tiled: {estimate:.0f}s ({label}), peak {tiled_full['peak_gib']:.2f} GiB "
        f"(of which embeddings {tiled_full['data_gib']:.2f} GiB){recall}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        naive_small = run("naive", args.small, args.dim, mem_gib=args.mem_gib, ranks_out=f"{tmp}/naive.npz")
        tiled_small = run("tiled", args.small, args.dim, ranks_out=f"{tmp}/tiled.npz")
        naive_ranks_, tiled_ranks_ = np.load(f"{tmp}/naive.npz"), np.load(f"{tmp}/tiled.npz")
        differ = sum(int(np.sum(naive_ranks_[k] != tiled_ranks_[k])) for k in ("image", "text"))
        largest = max(int(np.abs(naive_ranks_[k] - tiled_ranks_[k]).max()) for k in ("image", "text"))
    print(f"same run at {args.small} x {args.small} (naive fits):")
    for name, result in (("naive", naive_small), ("tiled", tiled_small)):
        print(f"  {name}: {result['seconds']:.1f}s, peak {result['peak_gib']:.2f} GiB, i2t R@1 {result['i2t_R@1']:.4f}")
    print(
        f"  ranks identical for {2 * args.small - differ} of {2 * args.small} queries (others: float near-ties, "
        f"largest rank difference {largest})"
    )
    extra = (naive_small["peak_gib"] - naive_small["data_gib"]) / max(
        tiled_small["peak_gib"] - tiled_small["data_gib"], 1e-3
    )
    print(
        f"ratio tiled/naive at {args.small}: time {tiled_small['seconds'] / naive_small['seconds']:.2f}x, "
        f"peak memory {tiled_small['peak_gib'] / naive_small['peak_gib']:.2f}x "
        f"(working memory beyond the embeddings: naive uses {extra:.1f}x more)"
    )
    if "failed" in naive_full:
        peak = tiled_full["peak_gib"]
        print(f"ratio at {args.n}: naive cannot run ({matrix_gib:.0f} GiB matrix); tiled peak {peak:.2f} GiB")


if __name__ == "__main__":
    main()
