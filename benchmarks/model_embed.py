"""Embedding throughput of biomedclip vs open_clip's own model at the same config, measured in the same run.

    .venv/bin/python benchmarks/model_embed.py                      # CPU: tiny and biomedclip-base
    .venv/bin/python benchmarks/model_embed.py --models biomedclip-base --device cuda --precision bf16 \\
        --image-batch 256 --text-batch 256                          # GPU (bf16, SDPA attention)

Both models hold the same random weights (open_clip's is built from the exported config and loaded with
biomedclip's state dict; the outputs are checked to agree before timing). Texts are real captions from
../shared/fixtures (MedICaT sample), tokenised to the model's context length. Runs alternate between the two
models so machine load affects both alike; the median of the repeats is reported. Prints items/s and the
ratio biomedclip / open_clip (>= 1.0 means biomedclip is at least as fast).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from biomedclip.model import create_model, get_tokenizer, save_pretrained

SHARED = Path(os.environ.get("BIOMEDCLIP_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def captions() -> list[str]:
    """Real figure captions from the shared fixtures."""
    path = SHARED / "fixtures" / "image_text" / "medicat_sample" / "sample.jsonl"
    return [json.loads(line)["s2_caption"] for line in path.read_text().splitlines() if line.strip()]


def open_clip_twin(model, folder: Path):
    """open_clip's CustomTextCLIP with ``model``'s architecture and weights, loaded from our bundle as open_clip
    users would: from inside the folder (it resolves the bundled tower configs against the working directory)."""
    import open_clip

    bundle = save_pretrained(model, None, folder, bin_copy=False)
    with contextlib.chdir(bundle):
        return open_clip.create_model("local-dir:.")


def throughput(fn, batch, items: int, iters: int) -> float:
    """Items per second of ``fn(batch)`` over ``iters`` calls."""
    start = time.perf_counter()
    for _ in range(iters):
        fn(batch)
    if batch.is_cuda:
        torch.cuda.synchronize()
    return items * iters / (time.perf_counter() - start)


def bench(name: str, args: argparse.Namespace) -> list[dict]:
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.precision]
    torch.manual_seed(0)
    ours = create_model(name)
    with tempfile.TemporaryDirectory() as tmp:
        theirs = open_clip_twin(ours, Path(tmp)).eval()
    ours, theirs = ours.to(args.device, dtype), theirs.to(args.device, dtype)
    tokenizer = get_tokenizer("tiny", context_length=ours.context_length)  # offline vocab; ids valid for any BERT
    texts = (captions() * (args.text_batch // 10 + 1))[: args.text_batch]
    ids = tokenizer(texts).to(args.device)
    pixels = torch.randn(args.image_batch, 3, ours.image_size, ours.image_size, device=args.device, dtype=dtype)
    rows = []
    with torch.inference_mode():
        check = (ours.encode_image(pixels[:2]) - theirs.encode_image(pixels[:2])).abs().max().item()
        check = max(check, (ours.encode_text(ids[:4]) - theirs.encode_text(ids[:4])).abs().max().item())
        for kind, batch in (("image", pixels), ("text", ids)):
            encode = {"ours": getattr(ours, f"encode_{kind}"), "theirs": getattr(theirs, f"encode_{kind}")}
            for fn in encode.values():
                fn(batch)  # warm-up
            rates: dict[str, list[float]] = {"ours": [], "theirs": []}
            for _ in range(args.repeats):
                for who, fn in encode.items():
                    rates[who].append(throughput(fn, batch, len(batch), args.iters))
            ours_rate, theirs_rate = statistics.median(rates["ours"]), statistics.median(rates["theirs"])
            rows.append(
                {
                    "model": name,
                    "kind": kind,
                    "batch": len(batch),
                    "biomedclip_items_s": round(ours_rate, 1),
                    "open_clip_items_s": round(theirs_rate, 1),
                    "ratio": round(ours_rate / theirs_rate, 2),
                    "max_abs_diff": f"{check:.1e}",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,biomedclip-base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--image-batch", type=int, default=16)
    parser.add_argument("--text-batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
    print(f"device: {device_name}, precision {args.precision}, torch {torch.__version__}")
    header = "model            kind   batch  biomedclip/s  open_clip/s  ratio  max|diff|"
    print(header)
    for name in args.models.split(","):
        for r in bench(name, args):
            print(
                f"{r['model']:<16} {r['kind']:<6} {r['batch']:>5}  {r['biomedclip_items_s']:>12}  "
                f"{r['open_clip_items_s']:>11}  {r['ratio']:>5}  {r['max_abs_diff']}"
            )


if __name__ == "__main__":
    main()
