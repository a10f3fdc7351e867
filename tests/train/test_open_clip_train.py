"""open_clip's own trainer (``open_clip_train --dataset-type webdataset``) trains on shards from ``corpus build`` with
the pinned webdataset, offline: a tiny open_clip-native model config in a local folder (CLIP's tokenizer ships with
open_clip), no hub access."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_OPEN_CLIP = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {},
}


def labelled_folder(fixtures: Path, root: Path, per_class: int) -> Path:
    """PneumoniaMNIST train images (upscaled to 64 px, above the corpus min side) as root/<class>/*.png."""
    data = np.load(fixtures / "labeled" / "pneumoniamnist_28_trainval.npz")
    labels = data["train_labels"].ravel()
    for label, name in enumerate(("normal", "pneumonia")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(labels == label)[:per_class]:
            Image.fromarray(data["train_images"][index]).resize((64, 64)).save(root / name / f"{index:04d}.png")
    return root


@pytest.mark.slow  # corpus build + open_clip_train start-up (~40 s on a loaded 2-core machine)
def test_open_clip_train_runs_two_steps_on_corpus_build_shards(shared_fixtures, run_cli, tmp_path: Path) -> None:
    folder = labelled_folder(shared_fixtures, tmp_path / "xray", per_class=20)
    corpus = tmp_path / "corpus"
    run_cli(
        "corpus", "build", "--source", f"imagefolder:{folder}", "--out", corpus, "--workers", "0",
        "--shard-size", "8", "--caption-template", "a chest X-ray showing {label}",
    )  # fmt: skip
    shards = sorted((corpus / "shards").glob("train-*.tar"))
    assert len(shards) >= 2
    model = tmp_path / "tiny-open-clip"
    model.mkdir()
    (model / "open_clip_config.json").write_text(json.dumps(TINY_OPEN_CLIP))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable, "-m", "open_clip_train.main", "--dataset-type", "webdataset",
        "--train-data", "::".join(map(str, shards)), "--train-num-samples", "8", "--batch-size", "4",
        "--epochs", "1", "--workers", "1", "--model", f"local-dir:{model}", "--device", "cpu",
        "--precision", "fp32", "--warmup", "1", "--log-every-n-steps", "1",
        "--logs", str(tmp_path / "logs"), "--name", "two-steps", "--save-frequency", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "KeyError" not in output
    assert "Train Epoch: 0 [4/8 (50%)]" in output and "Train Epoch: 0 [8/8 (100%)]" in output  # two steps of 4
    assert (tmp_path / "logs" / "two-steps" / "checkpoints" / "epoch_1.pt").is_file()
