"""Training throughput of ``biomedclip train`` vs open_clip's own training loop (``open_clip_train``), same run.

Both loops train the same model (identical config and initial weights), batch, precision, transforms, tokenizer
and number of data workers on the same WebDataset shards (real PneumoniaMNIST X-rays and PMC figures from
../shared/fixtures), each with its own data pipeline, optimiser set-up and loss. Step times come from a forward
pre-hook on the model, so both are measured the same way; the first ``--skip`` steps are warm-up. Rounds alternate
which loop runs first.

    python benchmarks/train_step.py                      # CPU: tiny config, batch 32, fp32
    python benchmarks/train_step.py --device cuda        # GPU: biomedclip-base, 224 px, 256 tokens, bf16, batch 256
    python benchmarks/train_step.py --quick              # CPU, 8 steps, 1 round: proves it runs, measures nothing

open_clip_train reads the shards with the webdataset version the lock pins (below 0.2.96, see pyproject.toml).

The GPU mode also reports peak memory and MFU (model FLOPs from torch's FlopCounterMode over one training step,
against the card's dense bf16 peak) and is sized to finish in under 8 minutes.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("BIOMEDCLIP_SHARED", REPO.parent / "shared")) / "fixtures"
CAPTIONS = ("a chest X-ray of normal lungs", "a chest X-ray showing pneumonia")
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def write_shards(folder: Path, num_samples: int, num_shards: int) -> str:
    """Shards of real image-caption pairs (PneumoniaMNIST + PMC figures, cycled to ``num_samples``)."""
    data = np.load(FIXTURES / "labeled" / "pneumoniamnist_28_trainval.npz")
    pairs = []
    for image, label in zip(data["train_images"], data["train_labels"].ravel(), strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image).convert("RGB").save(buffer, format="PNG")
        pairs.append((buffer.getvalue(), CAPTIONS[int(label)]))
    medicat = FIXTURES / "image_text" / "medicat_sample"
    for line in (medicat / "sample.jsonl").read_text().splitlines():
        record = json.loads(line)
        pairs.append(
            ((medicat / "figures" / f"{record['pdf_hash']}_{record['fig_uri']}").read_bytes(), record["s2_caption"])
        )
    per_shard = math.ceil(num_samples / num_shards)
    for shard in range(num_shards):
        with wds.TarWriter(str(folder / f"train-{shard:06d}.tar")) as sink:
            for index in range(shard * per_shard, min(num_samples, (shard + 1) * per_shard)):
                image, caption = pairs[(index * 7919) % len(pairs)]
                sink.write({"__key__": f"s{index:08d}", "png": image, "txt": caption})
    return str(folder / f"train-{{000000..{num_shards - 1:06d}}}.tar")


def step_clock(model: torch.nn.Module, device: torch.device) -> list[float]:
    """Record a timestamp at every forward call (after the previous step's work has finished on the GPU)."""
    stamps: list[float] = []

    def hook(module, inputs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    model.register_forward_pre_hook(hook)
    return stamps


def throughput(stamps: list[float], batch: int, skip: int) -> float:
    """Samples/s over the steps after the first ``skip``."""
    return batch * (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])


def run_biomedclip(args, shards: str, out: Path, device: torch.device) -> float:
    """Our trainer, end to end (``biomedclip.train.train``), for ``args.steps`` steps."""
    from biomedclip.train import loop
    from biomedclip.train.config import build_config

    clocks: list[list[float]] = []
    original = loop.build_model

    def build_and_clock(config):
        built = original(config)
        clocks.append(step_clock(built[0], device))
        return built

    loop.build_model = build_and_clock
    config = build_config(
        overrides={
            "model.name": args.model,
            "model.patch_dropout": 0.0,
            "model.grad_checkpointing": args.grad_checkpointing,
            "data.train": shards,
            "data.train_num_samples": args.batch * (args.steps + 10),
            "data.workers": args.workers,
            "data.shuffle_buffer": 1000,
            "optim.batch_size": args.batch,
            "optim.max_steps": args.steps,
            "optim.warmup_steps": 10,
            "run.output_dir": str(out),
            "run.device": device.type,
            "run.precision": args.precision,
            "run.checkpoint_every": 10**9,
            "run.log_every": 10**9,
            "run.tensorboard": False,
            "run.resume": "none",
        }
    )
    try:
        loop.train(config)
    finally:
        loop.build_model = original
    return throughput(clocks[-1], args.batch, args.skip)


def run_open_clip(args, shards: str, device: torch.device) -> float:
    """open_clip_train's ``train_one_epoch`` with its webdataset pipeline, ClipLoss, AdamW set-up and cosine_lr."""
    from open_clip.loss import ClipLoss
    from open_clip_train.data import get_wds_dataset
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    from biomedclip.model import create_model_and_transforms, get_tokenizer

    torch.manual_seed(0)
    model, train_tf, _ = create_model_and_transforms(args.model)
    tokenizer = get_tokenizer(args.model)
    model.output_dict = True
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device).train()
    stamps = step_clock(model, device)
    params = list(model.named_parameters())

    def exclude(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in params if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in params if not exclude(n, p)], "weight_decay": 0.2},
        ],
        lr=5e-4,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    precision = {"fp32": "fp32", "bf16": "amp_bf16"}[args.precision]
    train_args = Namespace(
        train_data=shards,
        val_data=None,
        train_num_samples=args.batch * args.steps,
        train_data_upsampling_factors=None,
        dataset_resampled=False,
        seed=0,
        workers=args.workers,
        batch_size=args.batch,
        world_size=1,
        rank=0,
        local_rank=0,
        distributed=False,
        horovod=False,
        device=str(device),
        precision=precision,
        accum_freq=1,
        distill=False,
        grad_clip_norm=None,
        log_every_n_steps=10**9,
        skip_scheduler=False,
        wandb=False,
        save_logs=False,
        val_frequency=0,
        epochs=1,
    )
    data = {"train": get_wds_dataset(train_args, train_tf, is_train=True, tokenizer=tokenizer)}
    scheduler = cosine_lr(optimizer, 5e-4, 10, args.steps)
    loss = ClipLoss(local_loss=False, gather_with_grad=False, cache_labels=True, rank=0, world_size=1)
    train_one_epoch(model, data, loss, 0, optimizer, None, scheduler, None, train_args)
    return throughput(stamps, args.batch, args.skip)


def flops_per_sample(args, device: torch.device) -> float:
    """Model FLOPs of one training step (forward + backward) per sample, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from biomedclip.model import create_model

    model = create_model(args.model).to(device).train()
    size, context = model.image_size, model.context_length
    images = torch.randn(2, 3, size, size, device=device)
    tokens = torch.randint(5, 1000, (2, context), device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        image_features, text_features, scale = model(images, tokens)
        (scale * image_features @ text_features.T).sum().backward()
    return counter.get_total_flops() / 2


def use_builtin_vocabulary(context_length: int) -> None:
    """biomedclip-base's PubMedBERT vocabulary comes from the Hugging Face hub, which the GPU machine cannot
    reach: tokenize with the packaged WordPiece vocabulary instead (every id is valid for the 30k-token
    embedding, and sequences are padded to the same 256 tokens, so the compute is unchanged)."""
    import biomedclip.model
    from biomedclip.model.pretrained import builtin_tokenizer_dir
    from biomedclip.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(builtin_tokenizer_dir("pmc-fixtures-wordpiece"), context_length)
    biomedclip.model.get_tokenizer = lambda *args, **kwargs: tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 25 CPU, 40 GPU)")
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps not timed")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 2 CPU, 1 GPU)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--quick", action="store_true", help="8 steps, 2 warm-up, 1 round: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.skip, args.rounds = args.steps or 8, 2, 1
    gpu = args.device == "cuda"
    args.model = "biomedclip-base" if gpu else "tiny"
    args.batch = 256 if gpu else 32
    args.precision = "bf16" if gpu else "fp32"
    args.steps = args.steps or (40 if gpu else 25)
    args.rounds = args.rounds or (1 if gpu else 2)
    args.workers = args.workers if args.workers is not None else (12 if gpu else 2)
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    if gpu:
        use_builtin_vocabulary(context_length=256)

    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(Path(tmp), args.batch * (args.steps + 10), num_shards=max(16, args.workers))
        ours, theirs, peaks = [], [], {}
        for round_index in range(args.rounds):
            order = ("biomedclip", "open_clip_train")  # alternating which goes first: no order effect favours one
            for name in order if round_index % 2 == 0 else order[::-1]:
                if gpu:
                    torch.cuda.reset_peak_memory_stats(device)
                if name == "biomedclip":
                    ours.append(run_biomedclip(args, shards, Path(tmp) / f"run{round_index}", device))
                else:
                    theirs.append(run_open_clip(args, shards, device))
                if gpu:
                    peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30
                print(f"round {round_index}: {name} {(ours if name == 'biomedclip' else theirs)[-1]:.1f} samples/s")
    label = (
        torch.cuda.get_device_name(device)
        if gpu
        else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    )
    ratio = statistics.median(o / t for o, t in zip(ours, theirs, strict=True))
    print(f"device: {label}; model {args.model}, batch {args.batch}, {args.precision}, {args.workers} workers")
    print(
        f"biomedclip train: {statistics.median(ours):.1f} samples/s; open_clip_train: {statistics.median(theirs):.1f}"
    )
    if gpu:
        per_sample = flops_per_sample(args, device)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in label), None)
        for name, rate in (("biomedclip", statistics.median(ours)), ("open_clip_train", statistics.median(theirs))):
            mfu = f"{100 * per_sample * rate / (peak * 1e12):.1f}%" if peak else "n/a (unknown peak)"
            print(f"{name}: peak memory {peaks[name]:.1f} GiB, MFU {mfu}")
    print(f"ratio (biomedclip / open_clip_train): {ratio:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
