"""Load test of ``/search``: N concurrent clients on loopback for a bounded time against ``biomedclip serve``.

    .venv/bin/python benchmarks/serve_load.py                       # 8 clients, 20 s, tiny model, 100k figures
    .venv/bin/python benchmarks/serve_load.py --clients 32 --seconds 60 --figures 1000000

The server is the real CLI (``python -m biomedclip serve``) in its own process, over a synthetic index (random
unit vectors with records) and the ``tiny`` model with random weights saved as a checkpoint. Every response is
checked (status 200 and k results). The baseline is the same work done in-process without HTTP, one query at a
time (text embedding + index search), measured in the same run: the ratio is served req/s over in-process req/s.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import httpx
import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `biomedclip serve` does (see biomedclip.serve.cli)
WORDS = ("chest", "x-ray", "ct", "mri", "brain", "lung", "liver", "tumor", "lesion", "histology", "cell", "stent")


def _queries(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=4)) for _ in range(count)]


def _prepare(folder: Path, figures: int) -> tuple[str, Path]:
    import torch

    from biomedclip.model import create_model_and_transforms, get_tokenizer, save_pretrained
    from biomedclip.serve.index import FigureIndex

    torch.manual_seed(0)
    model, _, _ = create_model_and_transforms("tiny")
    name = f"local-dir:{save_pretrained(model, get_tokenizer('tiny'), folder / 'model')}"
    index = FigureIndex(model.embed_dim)
    index.model = name
    rng = np.random.default_rng(0)
    for start in range(0, figures, 100_000):
        count = min(100_000, figures - start)
        records = [{"pmcid": f"PMC{start + i}", "caption": f"synthetic figure {start + i}"} for i in range(count)]
        index.add(rng.standard_normal((count, model.embed_dim), dtype=np.float32), records)
    index.save(folder / "index")
    return name, folder / "index"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load(base_url: str, clients: int, seconds: float, k: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(number: int) -> None:
        queries = _queries(200, number)
        with httpx.Client(base_url=base_url, timeout=30) as http:
            count = 0
            while time.monotonic() < stop:
                start = time.perf_counter()
                try:
                    response = http.get("/search", params={"q": queries[count % len(queries)], "k": k})
                    good = response.status_code == 200 and len(response.json()["results"]) == k
                except httpx.HTTPError:
                    good = False
                elapsed = time.perf_counter() - start
                with lock:
                    if good:
                        latencies.append(elapsed * 1e3)
                    else:
                        errors[0] += 1
                count += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.perf_counter() - started


@click.command()
@click.option("--clients", default=8, show_default=True)
@click.option("--seconds", default=20.0, show_default=True)
@click.option("--figures", default=100_000, show_default=True, help="Synthetic figures in the index.")
@click.option("-k", default=10, show_default=True)
def main(clients: int, seconds: float, figures: int, k: int) -> None:
    """Run the load test and print req/s, p50/p95 latency, errors and the ratio to in-process search."""
    from biomedclip.api import load
    from biomedclip.serve.index import FigureIndex

    with tempfile.TemporaryDirectory() as tmp:
        name, index_dir = _prepare(Path(tmp), figures)
        port = _free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "biomedclip",
                "serve",
                "--model",
                name,
                "--index",
                str(index_dir),
                "--port",
                str(port),
                "--device",
                "cpu",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    httpx.get(base_url + "/healthz", timeout=2).raise_for_status()
                    break
                except httpx.HTTPError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        message = server.stderr.read().decode() if server.poll() is not None else "timeout"
                        raise click.ClickException(f"server did not start: {message}") from None
                    time.sleep(0.5)
            latencies, errors, elapsed = _load(base_url, clients, seconds, k)
        finally:
            server.terminate()
            server.wait(timeout=30)

        embedder, index = load(name, device="cpu"), FigureIndex.load(index_dir)
        queries, done, stop = _queries(200, 0), 0, time.monotonic() + min(seconds, 10)
        baseline_start = time.perf_counter()
        while time.monotonic() < stop:
            index.search(embedder.embed_texts([queries[done % len(queries)]]), k)
            done += 1
        baseline_rps = done / (time.perf_counter() - baseline_start)

    served_rps = len(latencies) / elapsed
    click.echo(f"{clients} clients x {seconds:g} s against /search, {figures:,} figures ({index.kind}), k={k}")
    click.echo(f"requests ok {len(latencies)}, errors {errors}")
    click.echo(
        f"served: {served_rps:.1f} req/s, p50 {np.percentile(latencies, 50):.1f} ms, "
        f"p95 {np.percentile(latencies, 95):.1f} ms"
    )
    click.echo(f"baseline (in-process, sequential, no HTTP): {baseline_rps:.1f} req/s")
    click.echo(f"ratio served / in-process: {served_rps / baseline_rps:.2f}x")
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
