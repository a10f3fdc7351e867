"""Load test of ``biomedclip serve``: ``/search`` latency alone, beside hostile ``/classify`` traffic, and beside
slow-body clients.

    .venv/bin/python benchmarks/serve_load.py --quick                 # 2 search clients, 4 s per phase, 5k figures
    .venv/bin/python benchmarks/serve_load.py                         # 8 search + 2 hostile clients, 20 s, 100k
    .venv/bin/python benchmarks/serve_load.py --clients 32 --hostile 4 --seconds 60 --figures 1000000
    .venv/bin/python benchmarks/serve_load.py --index INDEX --hostile 0 --slow-body 0   # a built (vector) index

The server is the real CLI (``python -m biomedclip serve``) in its own process, over a synthetic index (random
unit vectors with records; or ``--index``, an index built elsewhere, e.g. the vector index of
``benchmarks/index_scale.py --keep``) and the ``tiny`` model with random weights saved as a checkpoint. Phase 1
runs only search clients; phase 2 runs the same search clients while hostile clients send, back to back: the heaviest
``/classify`` the limits allow (50 labels x 5 templates), one far over them (50 labels x 20,000 templates, the
issue's 243 KB request), malformed templates (``{} {x}``) and a chunked upload that never ends. Every search
response is checked (status 200 and k results). The printed ratio is search p95 with the hostile clients over
p95 without them (target <= 2x). Phase 3 runs the search clients beside ``--slow-body`` clients (255) from
another loopback address (127.0.0.2) that each open an upload, send its headers and then one body byte a second;
a client whose connection is answered (408 after the body timeout, 503 over the per-address cap) or closed opens
a new one. Its ratio is search p95 with them over p95 alone (target <= 2x). The in-process baseline (text
embedding + index search, sequential, no HTTP) is measured in the same run for the served / in-process throughput
ratio.
"""

from __future__ import annotations

import collections
import io
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import numpy as np
from PIL import Image

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `biomedclip serve` does (see biomedclip.serve.cli)
WORDS = ("chest", "x-ray", "ct", "mri", "brain", "lung", "liver", "tumor", "lesion", "histology", "cell", "stent")


def _queries(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=4)) for _ in range(count)]


def _tiny_model(folder: Path, dim: int | None = None) -> str:
    """The tiny model with random weights (embedding dimension ``dim`` when given), saved: ``local-dir:PATH``."""
    import torch

    from biomedclip.model import create_model_and_transforms, get_tokenizer, save_pretrained

    torch.manual_seed(0)
    model, _, _ = create_model_and_transforms("tiny", **({"embed_dim": dim} if dim else {}))
    return f"local-dir:{save_pretrained(model, get_tokenizer('tiny'), folder / 'model')}"


def _open_index(index_dir: Path):
    from biomedclip.serve.index import FigureIndex
    from biomedclip.serve.vector_index import VectorIndex, is_vector_index

    return VectorIndex.load(index_dir) if is_vector_index(index_dir) else FigureIndex.load(index_dir)


def _server_memory(pid: int) -> str:
    """The server's peak RSS and its anonymous / memory-mapped-file parts now (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) * 1024 / 1e9
    now = f"now anonymous {fields['RssAnon']:.2f} GB, memory-mapped files {fields['RssFile']:.2f} GB"
    return f"peak RSS {fields['VmHWM']:.2f} GB ({now})"


def _prepare(folder: Path, figures: int) -> tuple[str, Path]:
    from biomedclip.serve.index import FigureIndex

    name = _tiny_model(folder)
    model_dim = 128  # the tiny model's embedding dimension
    index = FigureIndex(model_dim)
    index.model = name
    rng = np.random.default_rng(0)
    for start in range(0, figures, 100_000):
        count = min(100_000, figures - start)
        records = [{"pmcid": f"PMC{start + i}", "caption": f"synthetic figure {start + i}"} for i in range(count)]
        index.add(rng.standard_normal((count, model_dim), dtype=np.float32), records)
    index.save(folder / "index")
    return name, folder / "index"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _endless_upload() -> Iterator[bytes]:
    """A multipart body that never ends, sent chunked (no Content-Length)."""
    yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
    while True:
        yield bytes(64 * 1024)


def _hostile_requests(http: httpx.Client, image: bytes) -> Iterator[tuple[str, object]]:
    """(kind, status or error name) of hostile /classify requests, round robin, forever."""
    labels = ",".join(f"finding number {i}" for i in range(50))
    heavy = {"labels": labels, "templates": "\n".join(f"a figure showing {{}}, view {i}" for i in range(5))}
    huge = {"labels": labels, "templates": "\n".join(f"{{}} template {i}" for i in range(20_000))}
    bad = {"labels": "a,b,c", "templates": "{} {x}\n{}{!r}"}
    files = {"image": ("x.png", image, "image/png")}
    while True:
        for kind, data in (("heavy 50x5", heavy), ("huge 50x20000", huge), ("bad template", bad)):
            yield kind, http.post("/classify", files=files, data=data).status_code
        try:
            response = http.post(
                "/classify", content=_endless_upload(), headers={"Content-Type": "multipart/form-data; boundary=b"}
            )
            yield "endless chunked upload", response.status_code
        except httpx.HTTPError as error:
            yield "endless chunked upload", type(error).__name__


def _phase(
    base_url: str, clients: int, hostile: int, seconds: float, k: int, where: dict[str, str] | None = None
) -> tuple[list[float], int, dict]:
    """Search latencies (ms), search errors and hostile outcomes over ``seconds`` of load."""
    latencies: list[float] = []
    errors = [0]
    outcomes: collections.Counter = collections.Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    image = _png()

    def search_client(number: int) -> None:
        queries = _queries(200, number)
        with httpx.Client(base_url=base_url, timeout=60) as http:
            count = 0
            while time.monotonic() < stop:
                start = time.perf_counter()
                try:
                    params = {"q": queries[count % len(queries)], "k": k, **(where or {})}
                    response = http.get("/search", params=params)
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

    def hostile_client(number: int) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            for kind, outcome in _hostile_requests(http, image):
                with lock:
                    outcomes[(kind, outcome)] += 1
                if time.monotonic() >= stop:
                    return

    threads = [threading.Thread(target=search_client, args=(n,)) for n in range(clients)]
    threads += [threading.Thread(target=hostile_client, args=(n,)) for n in range(hostile)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], dict(outcomes)


SLOW_BODY_HEAD = (
    b"POST /search HTTP/1.1\r\nHost: bench\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    b"Content-Length: 10000000\r\n\r\n--b\r\n"
)


def _slow_body_clients(base_url: str, count: int, stop: float, source: str) -> collections.Counter:
    """``count`` connections from ``source`` that send a body one byte a second until ``stop``; reopened when
    the server answers or closes. Returns what happened to them (opened, and the status lines received)."""
    address = (base_url.split("//")[1].split(":")[0], int(base_url.rsplit(":", 1)[1]))
    outcomes: collections.Counter = collections.Counter()
    open_sockets: dict[int, socket.socket] = {}
    while time.monotonic() < stop:
        for number in range(count):
            sock = open_sockets.get(number)
            try:
                if sock is None:
                    sock = socket.create_connection(address, timeout=5, source_address=(source, 0))
                    sock.sendall(SLOW_BODY_HEAD)
                    open_sockets[number] = sock
                    outcomes["opened"] += 1
                elif select.select([sock], [], [], 0)[0]:  # the server answered or closed
                    status = sock.recv(64).split(b"\r\n")[0].decode(errors="replace") or "closed"
                    outcomes[status] += 1
                    sock.close()
                    del open_sockets[number]
                else:
                    sock.sendall(b"x")
            except OSError as error:
                outcomes[type(error).__name__] += 1
                if sock is not None:
                    sock.close()
                open_sockets.pop(number, None)
        time.sleep(1.0)
    for sock in open_sockets.values():
        sock.close()
    return outcomes


def _start_server(name: str, index_dir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "biomedclip", "serve", "--model", name, "--index", str(index_dir)]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(base_url + "/healthz", timeout=2).raise_for_status()
            return server, base_url
        except httpx.HTTPError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.terminate()
                message = server.stderr.read().decode() if server.poll() is not None else "timeout"
                raise click.ClickException(f"server did not start: {message}") from None
            time.sleep(0.5)


def _p(latencies: list[float], q: float) -> float:
    return float(np.percentile(latencies, q)) if latencies else float("nan")


@click.command()
@click.option("--clients", default=8, show_default=True, help="Search clients.")
@click.option("--hostile", default=2, show_default=True, help="Hostile /classify clients in phase 2.")
@click.option("--slow-body", default=255, show_default=True, help="Slow-body connections in phase 3 (0: no phase 3).")
@click.option("--seconds", default=20.0, show_default=True, help="Length of each phase.")
@click.option("--figures", default=100_000, show_default=True, help="Synthetic figures in the index.")
@click.option(
    "--index",
    "built_index",
    type=click.Path(exists=True, file_okay=False),
    help="Serve this built index (e.g. a vector index from benchmarks/index_scale.py --keep) instead of a "
    "synthetic one; the model is the tiny one with random weights and the index's dimension.",
)
@click.option("-k", default=10, show_default=True)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    help="Also run a phase of filtered searches, e.g. --filter split=test (repeatable: one phase each).",
)
@click.option("--quick", is_flag=True, help="A small run that proves the benchmark works: 2 clients, 4 s, 5k figures.")
def main(
    clients: int,
    hostile: int,
    slow_body: int,
    seconds: float,
    figures: int,
    built_index: str | None,
    k: int,
    filters: tuple[str, ...],
    quick: bool,
) -> None:
    """Run the phases and print search p95 without and with hostile traffic and slow bodies, and the ratios."""
    import json

    from biomedclip.api import load

    if quick:
        clients, hostile, seconds, figures = 2, 1, 4.0, 5_000
    with tempfile.TemporaryDirectory() as tmp:
        if built_index:
            index_dir = Path(built_index)
            name = _tiny_model(Path(tmp), json.loads((index_dir / "meta.json").read_text())["dim"])
        else:
            name, index_dir = _prepare(Path(tmp), figures)
        server, base_url = _start_server(name, index_dir)
        try:
            _phase(base_url, clients, 0, min(2.0, seconds), k)  # warm-up
            alone, alone_errors, _ = _phase(base_url, clients, 0, seconds, k)
            mixed, mixed_errors, outcomes = _phase(base_url, clients, hostile, seconds, k)
            slow_outcomes: collections.Counter = collections.Counter()
            slow, slow_errors = [], 0
            if slow_body:
                stop = time.monotonic() + seconds + 3
                slow_thread = threading.Thread(
                    target=lambda: slow_outcomes.update(_slow_body_clients(base_url, slow_body, stop, "127.0.0.2"))
                )
                slow_thread.start()
                time.sleep(2.0)  # every slow connection opened before the searches start
                slow, slow_errors, _ = _phase(base_url, clients, 0, seconds, k)
                slow_thread.join()
            filtered = []
            for spec in filters:
                field, _, value = spec.partition("=")
                filtered.append((spec[:13], *_phase(base_url, clients, 0, seconds, k, {field: value})[:2]))
            health = httpx.get(base_url + "/healthz", timeout=10).json()
            memory = _server_memory(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)

        embedder, index = load(name, device="cpu"), _open_index(index_dir)
        queries, done, stop = _queries(200, 0), 0, time.monotonic() + min(seconds, 10)
        baseline_start = time.perf_counter()
        while time.monotonic() < stop:
            index.search(embedder.embed_texts([queries[done % len(queries)]]), k)
            done += 1
        baseline_rps = done / (time.perf_counter() - baseline_start)

    click.echo(f"{clients} search clients x {seconds:g} s per phase, {len(index):,} figures ({index.kind}), k={k}")
    click.echo(f"server memory after the run: {memory}")
    phases = [("search alone", alone, alone_errors), ("with hostile", mixed, mixed_errors)]
    if slow_body:
        phases.append(("w/ slow body", slow, slow_errors))
    phases += filtered
    for label, latencies, errors in phases:
        click.echo(
            f"{label:>13}: {len(latencies) / seconds:7.1f} req/s, p50 {_p(latencies, 50):7.1f} ms, "
            f"p95 {_p(latencies, 95):7.1f} ms, errors {errors}"
        )
    click.echo(f"hostile /classify clients: {hostile}; outcomes (kind, status: count):")
    for (kind, outcome), count in sorted(outcomes.items(), key=str):
        click.echo(f"  {kind:<24} {outcome!s:<18} {count}")
    click.echo(f"/healthz after the run: {health['status']}, inference busy {health['inference']['busy_s']} s")
    click.echo(f"baseline (in-process, sequential, no HTTP): {baseline_rps:.1f} req/s")
    click.echo(f"ratio served (alone) / in-process: {len(alone) / seconds / baseline_rps:.2f}x")
    ratio = _p(mixed, 95) / _p(alone, 95)
    click.echo(f"ratio search p95 with / without hostile requests: {ratio:.2f}x (target <= 2x)")
    if slow_body:
        click.echo(f"slow-body connections: {slow_body} from 127.0.0.2; outcomes: {dict(slow_outcomes)}")
        slow_ratio = _p(slow, 95) / _p(alone, 95)
        click.echo(f"ratio search p95 with / without {slow_body} slow-body clients: {slow_ratio:.2f}x (target <= 2x)")
    if alone_errors or mixed_errors or slow_errors or any(errors for _, _, errors in filtered):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
