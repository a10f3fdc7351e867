"""Learning check: a few hundred steps of the tiny model on real image-caption pairs lower the validation loss
and lift zero-shot accuracy on PneumoniaMNIST's val split clearly above its majority-class rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biomedclip.train.config import build_config
from biomedclip.train.evaluation import build_evaluator
from biomedclip.train.loop import build_model, train


def write_labelled_folder(fixtures: Path, folder: Path) -> float:
    """PneumoniaMNIST val as ``folder/test/<class>/*.png`` with ``folder/prompts.yaml``; returns the majority-class
    rate."""
    data = np.load(fixtures / "labeled" / "pneumoniamnist_28_trainval.npz")
    labels = data["val_labels"].ravel()
    classes = ["0_normal", "1_pneumonia"]
    for index, (image, label) in enumerate(zip(data["val_images"], labels, strict=True)):
        target = folder / "test" / classes[int(label)]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{index:04d}.png")
    (folder / "prompts.yaml").write_text(
        "classnames: [normal lungs, pneumonia]\ntemplates: ['a chest X-ray of {}', 'an X-ray image with {}']\n"
    )
    return float(np.bincount(labels).max() / labels.size)


@pytest.mark.slow  # 150 CPU training steps of the tiny model (about a minute on an idle 2-core machine)
def test_training_lowers_val_loss_and_lifts_zero_shot_accuracy(shared_fixtures: Path, tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_conftest", Path(__file__).with_name("conftest.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    pairs = helpers.mnist_pairs(shared_fixtures, "train") + helpers.medicat_pairs(shared_fixtures)
    helpers.write_shards(tmp_path / "shards", "train", pairs, per_shard=256)
    helpers.write_shards(tmp_path / "shards", "val", helpers.mnist_pairs(shared_fixtures, "val"), per_shard=512)
    majority = write_labelled_folder(shared_fixtures, tmp_path / "pneumonia_val")

    config = build_config(
        {
            "model": {"name": "tiny", "patch_dropout": 0.0, "grad_checkpointing": False},
            "data": {
                "train": str(tmp_path / "shards" / "train-*.tar"),
                "val": str(tmp_path / "shards" / "val-*.tar"),
                "workers": 1,
                "shuffle_buffer": 500,
            },
            "optim": {"lr": 1e-3, "warmup_steps": 20, "batch_size": 32, "epochs": 4, "max_steps": 150},
            "eval": {
                "zeroshot": [f"imagefolder:{tmp_path / 'pneumonia_val'}"],
                "prompts": str(tmp_path / "pneumonia_val" / "prompts.yaml"),
                "retrieval": False,
            },
            "run": {"output_dir": str(tmp_path / "run"), "device": "cpu", "precision": "fp32", "log_every": 10},
        }
    )
    torch.manual_seed(config.run.seed)
    model, _, eval_tf, tokenizer = build_model(config)
    before = build_evaluator(config, eval_tf, tokenizer)(model)

    records: list[dict] = []
    train(config, on_log=records.append)
    after = [r for r in records if r["kind"] == "eval"][-1]

    losses = [r["loss"] for r in records if r["kind"] == "train"]
    print("train losses every 10 steps:", [round(v, 3) for v in losses])
    accuracy = after["zeroshot_pneumonia_val_accuracy"]
    assert after["val_loss"] < before["val_loss"] - 0.05, (
        before,
        after,
    )  # open_clip's val loss: duplicates stay negatives
    assert accuracy >= majority + 0.15, (accuracy, majority, before)
