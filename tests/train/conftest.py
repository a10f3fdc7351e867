"""Tiny WebDataset shards built from the real fixtures (PneumoniaMNIST X-rays with captions, PMC figures)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

CAPTIONS = {
    0: "a chest X-ray of normal lungs",
    1: "a chest X-ray showing pneumonia",
}


def mnist_pairs(fixtures: Path, split: str, limit: int | None = None) -> list[tuple[bytes, str, int]]:
    """(PNG bytes, caption, label) from PneumoniaMNIST's ``split`` (train or val)."""
    data = np.load(fixtures / "labeled" / "pneumoniamnist_28_trainval.npz")
    images, labels = data[f"{split}_images"][:limit], data[f"{split}_labels"].ravel()[:limit]
    pairs = []
    for image, label in zip(images, labels, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image).convert("RGB").save(buffer, format="PNG")
        pairs.append((buffer.getvalue(), CAPTIONS[int(label)], int(label)))
    return pairs


def medicat_pairs(fixtures: Path) -> list[tuple[bytes, str, int]]:
    """(PNG bytes, caption, -1) for the real PMC figures of the MedICaT sample."""
    root = fixtures / "image_text" / "medicat_sample"
    pairs = []
    for line in (root / "sample.jsonl").read_text().splitlines():
        record = json.loads(line)
        path = root / "figures" / f"{record['pdf_hash']}_{record['fig_uri']}"
        pairs.append((path.read_bytes(), record["s2_caption"], -1))
    return pairs


def write_shards(folder: Path, split: str, pairs: list[tuple[bytes, str, int]], per_shard: int) -> list[Path]:
    """Write ``{split}-NNNNNN.tar`` shards with ``.png``/``.txt``/``.json`` members, as the corpus builder does."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, start in enumerate(range(0, len(pairs), per_shard)):
        path = folder / f"{split}-{shard:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for index, (image, caption, label) in enumerate(pairs[start : start + per_shard], start):
                sink.write({"__key__": f"{split}{index:07d}", "png": image, "txt": caption, "json": {"label": label}})
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def train_shards(shared_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train shards of 16 pairs (PneumoniaMNIST X-rays + real PMC figures) and 2 val shards."""
    folder = tmp_path_factory.mktemp("shards")
    pairs = mnist_pairs(shared_fixtures, "train", 118) + medicat_pairs(shared_fixtures)
    write_shards(folder, "train", pairs, per_shard=16)
    write_shards(folder, "val", mnist_pairs(shared_fixtures, "val", 32), per_shard=16)
    return folder


def tiny_overrides(shards: Path, output: Path, **extra: object) -> list[str]:
    """CLI overrides for a fast deterministic CPU run of the tiny model on ``shards``."""
    values: dict[str, object] = {
        "model.name": "tiny",
        "model.patch_dropout": 0.0,
        "model.grad_checkpointing": False,
        "data.train": str(shards / "train-{000000..000007}.tar"),
        "data.workers": 2,
        "data.shuffle_buffer": 32,
        "optim.batch_size": 8,
        "optim.epochs": 2,
        "optim.warmup_steps": 3,
        "run.output_dir": str(output),
        "run.precision": "fp32",
        "run.device": "cpu",
        "run.log_every": 1,
        "run.tensorboard": False,
        **extra,
    }
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


@pytest.fixture(scope="session")
def tiny_args():
    """The :func:`tiny_overrides` helper, for tests (conftest modules are not importable by name)."""
    return tiny_overrides
