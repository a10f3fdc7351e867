"""End to end at growing size: generated articles served by a loopback S3 server, built by Ray and by local workers.

    .venv/bin/python benchmarks/corpus_e2e.py            # 1,000 and 5,000 articles (run it on an idle machine)
    .venv/bin/python benchmarks/corpus_e2e.py --quick    # 100 and 300 articles: proves it runs

The articles are the real fixture articles of ``benchmarks/corpus_build.py`` under new PMCIDs, each figure a JPEG
of its own (a random colour field, 640x480, so that no two figures are duplicates and the shards grow with N),
uploaded in PMC's S3 layout (``tests/corpus/conftest.py`` ``write_article``) to a moto server on 127.0.0.1. Each
build runs in its own process (``Selection(limit=N)`` takes the first N articles) into a local OUT, with
``--workers 2``: ``--engine local`` and ``--engine ray`` at both sizes. Printed: per build the figures, seconds
and the driver's peak RSS (``VmHWM`` of the build process itself, not of its workers; ``ru_maxrss`` would
carry this script's own peak, the S3 server's objects included, across the fork); then whether Ray's
output (shards, catalog, clusters, stats) is byte-identical to local's at the large size, and the driver peak
RSS ratio large / small per engine (issue 11 asks <= 1.2 at 5,000 / 1,000).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "corpus"))

BUCKET = "pmc-e2e"
SKIP = ("work", "report", "build.lock")
BUILD = """
import json, sys
from biomedclip.corpus.build import build
from biomedclip.corpus.sources import Selection, open_source
endpoint, bucket, out, engine, workers, limit = sys.argv[1:7]
source = open_source(f"s3://{bucket}", Selection(limit=int(limit)), endpoint_url=endpoint)
summary = build([source], out, engine=engine, workers=int(workers))
rss = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"articles": summary.articles, "figures": summary.figures, "accepted": summary.accepted,
                  "seconds": round(summary.seconds, 1), "driver_rss": rss}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def figure(rng: np.random.Generator) -> bytes:
    """A JPEG no other call gives (nor a near duplicate of it): a smooth random colour field."""
    grid = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grid).resize((640, 480), Image.BICUBIC).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def upload(endpoint: str, articles: int) -> None:
    """Upload ``articles`` articles in PMC's S3 layout, each with figures of its own."""
    from conftest import create_public_bucket, make_client, write_article
    from corpus_build import _templates, with_pmcid

    client = make_client(endpoint)
    create_public_bucket(client, BUCKET)
    templates = _templates()
    rng = np.random.default_rng(0)
    for i in range(articles):
        xml, images = templates[i % len(templates)]
        pmcid = f"PMC{90_000_000 + i}"
        media = {f"{href}.jpg": figure(rng) for href in images}
        write_article(client, BUCKET, pmcid, 1, with_pmcid(xml, pmcid), media)


def run_build(endpoint: str, out: Path, engine: str, workers: int, articles: int) -> dict:
    args = [sys.executable, "-c", BUILD, endpoint, BUCKET, str(out), engine, str(workers), str(articles)]
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"build failed ({engine}, {articles} articles):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def outputs(out: Path) -> dict[str, bytes]:
    """Shards, catalog parts, catalog.parquet, clusters and stats (the report's plots and the work store aside)."""
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.relative_to(out).parts[0] not in SKIP)
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100 and 300 articles")
    args = parser.parse_args()
    small, large = (100, 300) if args.quick else (args.small, args.large)

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory(prefix="corpus-e2e-") as tmp:
            root = Path(tmp)
            upload(endpoint, large)
            print(f"{large} articles on {endpoint}; builds with --workers {args.workers}")
            results = {}
            for engine in ("local", "ray"):
                for n in (small, large):
                    results[engine, n] = run_build(endpoint, root / f"{engine}-{n}", engine, args.workers, n)
                    print(f"  {engine:5s} {n:6d} articles: {json.dumps(results[engine, n])}")
            same = outputs(root / f"ray-{large}") == outputs(root / f"local-{large}")
            print(f"ray output byte-identical to local at {large} articles: {same}")
            for engine in ("local", "ray"):
                ratio = results[engine, large]["driver_rss"] / results[engine, small]["driver_rss"]
                print(f"driver peak RSS {engine}: {large} / {small} articles = {ratio:.2f} (issue 11: <= 1.2)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
