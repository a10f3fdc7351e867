"""The training loop: one function, read top to bottom.

Launch (see also ``biomedclip.train.distributed``)::

    biomedclip train --config configs/tiny-cpu.yaml --data.train 'shards/train-{000000..000003}.tar'
    torchrun --nproc-per-node 8 -m biomedclip.train --config configs/paper.yaml
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        -m biomedclip.train --config configs/paper.yaml

The hot loop synchronises host and device once per step, for one flag: whether the loss and the gradient norm
are finite (a step where they are not is skipped, ``optim.skip_nonfinite_steps`` in a row stop the run; see
:mod:`biomedclip.train.finite`). Losses accumulate on the device and are read only every ``run.log_every`` steps;
the temperature is clamped in place.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from biomedclip.errors import InputError, RunError
from biomedclip.model.inference import select_device
from biomedclip.model.tokenizer import has_tokenizer_files
from biomedclip.shards import expand_shards
from biomedclip.train.checkpoint import (
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from biomedclip.train.config import TrainConfig, config_to_dict, save_config
from biomedclip.train.data import (
    StreamSpec,
    TimedLoader,
    TrainStream,
    count_samples,
    loader_workers,
    make_train_loader,
    read_exclude,
)
from biomedclip.train.distributed import DistInfo, barrier, init_distributed, shutdown
from biomedclip.train.evaluation import build_evaluator, training_corpus, zeroshot_leakage, zeroshot_tasks
from biomedclip.train.finite import NonFiniteGuard, check_finite_weights, gradient_norm
from biomedclip.train.health import HealthMonitor
from biomedclip.train.init import resolve_image_weights, resolve_text_folder
from biomedclip.train.loss import ClipLoss, caption_ids
from biomedclip.train.metrics import MetricsWriter
from biomedclip.train.optim import lock_tower, make_optimizer, set_patch_dropout
from biomedclip.train.run_folder import check_run_folder
from biomedclip.train.schedule import warmup_cosine_scheduler

LogFn = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """What a finished run reports."""

    output_dir: Path
    steps: int
    start_step: int
    last_metrics: dict[str, Any] = field(default_factory=dict)  # the last training log record
    last_eval: dict[str, Any] = field(default_factory=dict)  # the last evaluation record (empty when none ran)
    seconds: float = 0.0  # wall time of this invocation
    workers: int = 0  # DataLoader workers per rank actually used
    notes: list[str] = field(default_factory=list)  # adjustments made to the config (e.g. fewer workers)
    warnings: list[str] = field(default_factory=list)  # collapse, divergence or leakage seen (see :mod:`.health`)
    corpus: Path | None = None  # the corpus build OUT folder of the training shards, when they have one


def unpack_features(output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(image_features, text_features, logit_scale)`` from an open_clip-style forward (tuple or dict)."""
    if isinstance(output, dict):
        if output.get("logit_bias") is not None:
            raise ValueError("models with a logit bias (SigLIP) are not supported by the CLIP loss")
        return output["image_features"], output["text_features"], output["logit_scale"]
    if len(output) != 3:
        raise ValueError("models with a logit bias (SigLIP) are not supported by the CLIP loss")
    return output[0], output[1], output[2]


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on GPU; the CPU trains in fp32."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _context_overrides(name: str, context_length: int) -> dict[str, Any]:
    """Model overrides for ``model.context_length``: the context, and for an untrained architecture whose inline
    text config has fewer positions, a position table that fits (a trained model keeps its weights' table)."""
    from biomedclip.model.pretrained import resolve

    if not context_length:
        return {}
    resolved = resolve(name)
    text: dict[str, Any] = {"context_length": context_length}
    hf_config = resolved.config.text.hf_model_config
    if resolved.weights is None and hf_config and hf_config.get("max_position_embeddings", 0) < context_length:
        text["hf_model_config"] = {**hf_config, "max_position_embeddings": context_length}
    return {"text": text}


def build_model(config: TrainConfig) -> tuple[nn.Module, Callable, Callable, Callable]:
    """Model, train/eval transforms and tokenizer for ``model.name``, its towers started from
    ``model.pretrained_text`` / ``model.pretrained_image`` when set, with the run's locks and speed flags."""
    from biomedclip.model import create_model_and_transforms, get_tokenizer
    from biomedclip.model.pretrained import resolve

    towers = config.model.pretrained_text or config.model.pretrained_image
    if towers and resolve(config.model.name).weights is not None:
        raise InputError(
            f"model.pretrained_text/pretrained_image start an untrained architecture from pretrained towers, but "
            f"{config.model.name} is a trained model whose weights would replace them: name an architecture "
            "(e.g. biomedclip-base) or leave the tower fields empty"
        )
    text = resolve_text_folder(config.model.pretrained_text) if config.model.pretrained_text else None
    image = resolve_image_weights(config.model.pretrained_image) if config.model.pretrained_image else None
    model, train_tf, eval_tf = create_model_and_transforms(
        config.model.name,
        pretrained_text=None if text is None else str(text),
        pretrained_image=None if image is None else str(image),
        **_context_overrides(config.model.name, config.model.context_length),
    )
    positions = model.text.transformer.config.max_position_embeddings
    if model.context_length > positions:
        raise InputError(
            f"model.context_length {model.context_length} is past the {positions} positions of {config.model.name}'s "
            "text tower: extend the model first (biomedclip model extend-context) or start from an architecture"
        )
    if text is not None and has_tokenizer_files(text):  # the BERT's own vocabulary goes with its weights
        tokenizer = get_tokenizer(str(text), context_length=model.context_length)
    else:
        tokenizer = get_tokenizer(config.model.name, context_length=model.context_length)
    if config.model.patch_dropout > 0:
        set_patch_dropout(model, config.model.patch_dropout)
    if config.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if config.model.lock_image:
        lock_tower(model.visual)
    if config.model.lock_text:
        lock_tower(model.text)
    return model, train_tf, eval_tf, tokenizer


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    state = rng_state()
    if not info.distributed:
        return [state]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, state)
    return states


def _resume_path(config: TrainConfig) -> Path | None:
    choice = config.run.resume
    if choice == "none":
        return None
    if choice == "auto":
        return latest_checkpoint(config.run.output_dir)
    return Path(choice)


def train(config: TrainConfig, on_log: LogFn | None = None) -> TrainResult:
    """Train (or resume) a run as ``config`` says; ``on_log`` receives every metrics record (rank 0 only)."""
    device = select_device(config.run.device, _local_rank())
    info = init_distributed(device)
    try:
        return _train(config, device, info, on_log or (lambda record: None))
    finally:
        shutdown(info)


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _train(config: TrainConfig, device: torch.device, info: DistInfo, on_log: LogFn) -> TrainResult:
    started = time.perf_counter()
    output_dir = Path(config.run.output_dir)
    torch.manual_seed(config.run.seed + info.rank)

    # Everything that can be wrong with the inputs fails here, before the model is built: the run folder, the
    # shards (and how many loader workers they feed), the size of an epoch, the evaluation datasets.
    check_run_folder(output_dir, config)
    urls = expand_shards(config.data.train)
    workers, notes = loader_workers(len(urls), info.world_size, config.data.workers, config.data.resampled)
    num_samples = config.data.train_num_samples or count_samples(urls, bad_shards=config.data.bad_shards)
    global_batch = config.optim.batch_size * info.world_size
    steps_per_epoch = num_samples // global_batch
    if steps_per_epoch < 1:
        raise InputError(
            f"{num_samples} training samples make no global batch of {global_batch}: lower optim.batch_size or add data"
        )
    total_steps = steps_per_epoch * config.optim.epochs
    end_step = min(total_steps, config.optim.max_steps or total_steps)
    tasks = zeroshot_tasks(config) if info.is_main else []
    model, train_tf, eval_tf, tokenizer = build_model(config)
    model.to(device)
    optimizer = make_optimizer(
        model,
        lr=config.optim.lr,
        betas=(config.optim.beta1, config.optim.beta2),
        eps=config.optim.eps,
        weight_decay=config.optim.weight_decay,
        fused=device.type in ("cuda", "cpu"),  # one kernel for all tensors: on CPU 3x faster than the per-tensor loop
    )
    scheduler = warmup_cosine_scheduler(optimizer, config.optim.warmup_steps, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and config.run.precision == "fp16")

    # Resume: weights, optimiser, schedule, scaler, RNG and the data position (= steps done).
    start_step = 0
    resume_from = _resume_path(config)
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, map_location=device)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        scaler.load_state_dict(state.scaler)
        start_step = state.step

    if info.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")
    raw_model = model
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step_model = torch.compile(model) if config.model.compile else model

    stream = TrainStream(
        StreamSpec(
            urls=urls,
            batch_size=config.optim.batch_size,
            seed=config.run.seed,
            resampled=config.data.resampled,
            shuffle_buffer=config.data.shuffle_buffer,
            image_keys=tuple(config.data.image_key.split(";")),
            text_key=config.data.text_key,
            bad_shards=config.data.bad_shards,
            skip_log=str(output_dir / "skipped_samples.jsonl"),
            exclude=read_exclude(config.data.exclude) if config.data.exclude else frozenset(),
        ),
        train_tf,
        tokenizer,
        rank=info.rank,
        world_size=info.world_size,
        num_workers=workers,
        start_batch=start_step,
    )
    nice = 19 if device.type == "cpu" else 0  # on the CPU the workers share the step's cores: they yield to it
    batches = TimedLoader(iter(make_train_loader(stream, pin_memory=device.type == "cuda", worker_nice=nice)))
    if resume_from is not None:  # after the DataLoader drew its worker seeds, as the uninterrupted run did
        if len(state.rng) == info.world_size:
            set_rng_state(state.rng[info.rank])
        else:
            torch.manual_seed(config.run.seed + info.rank + start_step)
    loss_fn = ClipLoss(local_loss=config.loss.local_loss, gather_with_grad=config.loss.gather_with_grad)
    evaluator = build_evaluator(config, eval_tf, tokenizer, tasks) if info.is_main else None
    writer = MetricsWriter(output_dir, tensorboard=config.run.tensorboard) if info.is_main else None
    max_log_scale = math.log(config.loss.max_logit_scale)
    autocast = autocast_context(device, config.run.precision)

    health = HealthMonitor(global_batch)
    corpus = training_corpus(config.data.train)
    if tasks and corpus is not None:
        for message in zeroshot_leakage(tasks, corpus):
            health.warnings.append(message)
            log_warning = {"kind": "warning", "step": start_step, "message": message}
            if writer is not None:
                writer.write(log_warning)
                on_log(log_warning)

    def log(record: dict[str, Any]) -> None:
        if writer is not None:
            writer.write(record)
            on_log(record)
            for message in health.observe(record):
                warning = {"kind": "warning", "step": record["step"], "message": message}
                writer.write(warning)
                on_log(warning)

    step = start_step
    loss_sum = torch.zeros((), device=device)
    window_start, window_steps, window_wait = time.perf_counter(), 0, 0.0
    last: dict[str, Any] = {}
    last_eval: dict[str, Any] = {}
    mask_duplicates = config.loss.mask_duplicate_captions
    guard = NonFiniteGuard(config.optim.skip_nonfinite_steps, distributed=info.distributed)
    window_finite = 0
    model.train()
    try:
        while step < end_step:
            images, texts = next(batches)
            images = images.to(device, non_blocking=True)
            texts = texts.to(device, non_blocking=True)
            with autocast:
                image_features, text_features, logit_scale = unpack_features(step_model(images, texts))
                loss = loss_fn(
                    image_features, text_features, logit_scale, caption_ids(texts) if mask_duplicates else None
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.optim.grad_clip is not None:
                scaler.unscale_(optimizer)
                grad_norm = nn.utils.clip_grad_norm_(raw_model.parameters(), config.optim.grad_clip)
            else:  # fp16 gradients are still scaled; its GradScaler skips inf/NaN gradients by itself
                grad_norm = None if scaler.is_enabled() else gradient_norm(raw_model.parameters())
            finite = guard.step_is_finite(step + 1, loss, grad_norm)
            if finite or scaler.is_enabled():
                scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            with torch.no_grad():
                raw_model.logit_scale.clamp_(0, max_log_scale)
            step += 1
            window_steps += 1
            if finite:
                window_finite += 1
                loss_sum += loss.detach()

            if step % config.run.log_every == 0 or step == end_step:
                mean_loss = loss_sum / window_finite if window_finite else torch.full((), math.nan, device=device)
                if info.distributed:
                    dist.all_reduce(mean_loss)
                    mean_loss /= info.world_size
                elapsed = time.perf_counter() - window_start
                wait = batches.wait_seconds - window_wait
                last = {
                    "kind": "train",
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "loss": mean_loss.item(),
                    "lr": scheduler.get_last_lr()[-1],
                    "logit_scale": raw_model.logit_scale.exp().item(),
                    "samples_per_s": window_steps * global_batch / elapsed,
                    "data_wait_pct": 100.0 * wait / elapsed,
                    "eta_s": (end_step - step) * elapsed / window_steps,
                    "nonfinite_steps": guard.take_skipped(),
                    **batches.take_skipped(),
                }
                log(last)
                loss_sum.zero_()
                window_finite = 0
                window_start, window_steps, window_wait = time.perf_counter(), 0, batches.wait_seconds

            if evaluator is not None and config.eval.every and step % config.eval.every == 0 and step != end_step:
                last_eval = {"kind": "eval", "step": step, **evaluator(raw_model)}
                log(last_eval)
                model.train()
            if step % config.run.checkpoint_every == 0 or step == end_step:
                check_finite_weights(raw_model, step, "checkpoint")
                rng = _gather_rng(info)
                if info.is_main:
                    state = TrainState(step, optimizer.state_dict(), scheduler.state_dict(), scaler.state_dict(), rng)
                    save_checkpoint(
                        output_dir, raw_model, state, keep=config.run.keep_checkpoints, config=config_to_dict(config)
                    )
                barrier(info)

        if evaluator is not None:
            last_eval = {"kind": "eval", "step": step, **evaluator(raw_model)}
            log(last_eval)
        check_finite_weights(raw_model, step, "final model")
        if info.is_main:
            _export(raw_model, tokenizer, output_dir / "final")
        barrier(info)
    finally:
        if writer is not None:
            writer.close()
    return TrainResult(
        output_dir=output_dir,
        steps=step,
        start_step=start_step,
        last_metrics=last,
        last_eval=last_eval,
        seconds=time.perf_counter() - started,
        workers=workers,
        notes=notes,
        warnings=health.warnings,
        corpus=corpus,
    )


def _export(model: nn.Module, tokenizer: Callable, folder: Path) -> None:
    """The trained model in the open_clip layout, loadable with ``local-dir:OUTPUT/final``; a folder that cannot
    be written (a full disk, read-only) is a ``RunError`` (the checkpoints are kept)."""
    from safetensors import SafetensorError

    from biomedclip.model import save_pretrained

    try:
        save_pretrained(model, tokenizer, folder)
    except (OSError, RuntimeError, SafetensorError) as err:  # torch.save and safetensors wrap the OSError
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise RunError(f"cannot write the final model {folder} ({detail}); the checkpoints are kept") from err
