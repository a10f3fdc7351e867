"""Throughput of ``biomedclip embed --shards`` end to end, against the model's forward pass alone, and disk per item.

    .venv/bin/python benchmarks/embed_shards.py                                  # CPU: tiny and biomedclip-base
    .venv/bin/python benchmarks/embed_shards.py --models biomedclip-base --device cuda --precision bf16 \\
        --batch-size 256 --decode-threads 16 --shards 'corpus/shards::corpus/panels/shards'   # on a GPU node

Without ``--shards`` the bundled sample (``data/sample/pmc``) is built with ``--unit both`` into a temporary folder
(19 figures, 109 panels). Each model gets random weights (seed 0; throughput does not depend on them). Printed per
model: decode + transform alone (images/s on one thread), the forward pass alone on the same images already
transformed (the baseline), the whole command (read shards, decode, embed, write and hash the vector shards) and
its ratio to the baseline, and the bytes per vector (``.npy``) and per record (Parquet) of figures and panels.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from biomedclip.api import load
from biomedclip.model import create_model, get_tokenizer, save_pretrained
from biomedclip.model.inference import embed_images
from biomedclip.serve.embed_run import ShardWorker, embed_local
from biomedclip.serve.shards import iter_shard
from biomedclip.serve.vector_shards import ROW_GROUP_SIZE, autocast_for, prepare_figure
from biomedclip.shards import expand_shards

REPO = Path(__file__).resolve().parents[1]


def sample_corpus(folder: Path) -> str:
    from biomedclip.corpus.build import BuildConfig, build
    from biomedclip.corpus.sources import open_source

    build([open_source(str(REPO / "data/sample/pmc"))], folder, BuildConfig(unit="both"), workers=0)
    return f"{folder}/shards::{folder}/panels/shards"


def record_bytes(folder: Path) -> dict[str, float]:
    """Parquet bytes per record, figures and panels apart, rewritten in one file with the row groups embed uses
    (at PMC scale a shard holds thousands of records, so a file's fixed overhead does not count)."""
    table = pa.concat_tables([pq.read_table(path) for path in sorted(folder.glob("*.parquet"))])
    result = {}
    for kind, rows in (("figure", pc.equal(table["parent"], "")), ("panel", pc.not_equal(table["parent"], ""))):
        part = table.filter(rows)
        if part.num_rows:
            buffer = io.BytesIO()
            pq.write_table(part, buffer, row_group_size=ROW_GROUP_SIZE)
            result[kind] = len(buffer.getvalue()) / part.num_rows
    return result


def bench(name: str, shards: list[str], args: argparse.Namespace, work: Path) -> dict[str, float]:
    torch.manual_seed(0)
    checkpoint = save_pretrained(create_model(name), get_tokenizer("tiny"), work / f"model-{name}", bin_copy=False)
    embedder = load(f"local-dir:{checkpoint}", device=args.device)
    figures = [figure for shard in shards for figure in iter_shard(shard)]
    start = time.perf_counter()
    tensors = [prepare_figure(figure, embedder.transform) for figure in figures]
    decode = len(figures) / (time.perf_counter() - start)
    tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
    with autocast_for(embedder, args.precision):
        embed_images(embedder.model, tensors[: args.batch_size], lambda t: t, batch_size=args.batch_size)  # warm-up
        start = time.perf_counter()
        embed_images(embedder.model, tensors, lambda t: t, batch_size=args.batch_size)
        forward = len(tensors) / (time.perf_counter() - start)
    out = work / f"vectors-{name}"
    worker = ShardWorker(embedder, out, batch_size=args.batch_size, decode_threads=args.decode_threads,
                         precision=args.precision)  # fmt: skip
    start = time.perf_counter()
    outcomes = embed_local(worker, shards)
    whole = sum(o.rows + o.skipped for o in outcomes) / (time.perf_counter() - start)
    worker.close()
    rows = sum(o.rows for o in outcomes)
    npy = sum(np.load(path, mmap_mode="r").nbytes for path in out.glob("*.npy")) / rows
    return {"dim": embedder.dim, "images": len(figures), "decode": decode, "forward": forward, "whole": whole,
            "npy": npy, **record_bytes(out)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,biomedclip-base")
    parser.add_argument("--shards", help="shard spec (default: the bundled sample, built into a temporary folder)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--decode-threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shards = expand_shards(args.shards or sample_corpus(work / "corpus"))
        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
        print(f"device: {device}, precision {args.precision}, batch {args.batch_size}, "
              f"{args.decode_threads} decode threads, torch {torch.__version__}")  # fmt: skip
        print("model            dim  images  decode/s/thread  forward/s  embed/s  ratio  npy B/vec  "
              "parquet B/fig,panel")  # fmt: skip
        for name in args.models.split(","):
            r = bench(name, shards, args, work)
            print(f"{name:<16} {r['dim']:>3}  {r['images']:>6}  {r['decode']:>15.1f}  {r['forward']:>9.1f}  "
                  f"{r['whole']:>7.1f}  {r['whole'] / r['forward']:>5.2f}  {r['npy']:>9.0f}  "
                  f"{r.get('figure', 0):.0f}, {r.get('panel', 0):.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
