"""Issue 21's done-when: the README's fine-tune recipe, run as written on a generated four-class brain-MRI-style
folder in Kaggle's layout (only ``Testing/<class>/``) and without split folders, improves balanced accuracy over
the model it started from, and none of its commands scores a training image without saying so."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biomedclip.model import save_pretrained
from biomedclip.train import loop
from biomedclip.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")


def brain(kind: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A noisy head disc on black; the class is where a bright lesion sits (none for ``notumor``)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    centre, radius = size / 2 + rng.normal(0, 1.5, 2), size * 0.42 + rng.normal(0, 1.0)
    image = np.where((y - centre[0]) ** 2 + (x - centre[1]) ** 2 < radius**2, 90.0, 5.0)
    image += rng.normal(0, 12, (size, size))
    angle = rng.uniform(0, 2 * np.pi)
    lesion = {
        "glioma": (rng.uniform(0.2, 0.45) * radius, angle, rng.uniform(6, 9), 120),  # large, inside
        "meningioma": (0.85 * radius, angle, rng.uniform(2.5, 4), 160),  # compact, at the rim
        "pituitary": (0.45 * radius, np.pi / 2, rng.uniform(2, 3), 160),  # small, low in the middle
    }.get(kind)
    if lesion is not None:
        distance, angle, width, value = lesion
        cy, cx = centre[0] + distance * np.sin(angle), centre[1] + distance * np.cos(angle)
        image += value * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).convert("RGB")


def generate(root: Path, per_class: int = 80) -> None:
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for index in range(per_class):
            brain(kind, rng).save(root / kind / f"{kind[:2]}{index:04d}.jpg", quality=95)


def readme_recipe() -> list[str]:
    """The three commands of the README's fine-tune recipe, continuation lines joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("Fine-tuning on a labelled folder", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = re.sub(r"\\\n\s*", " ", block).strip().splitlines()
    assert [c.split()[:3] for c in commands] == [
        ["biomedclip", "corpus", "build"], ["biomedclip", "train", "-c"], ["biomedclip", "eval", "zeroshot"]
    ]  # fmt: skip
    return commands


def adapted(command: str, folder: str) -> list[str]:
    """A README command for this data: the folder ``xray`` is ours, the caption names a brain MRI, no workers."""
    args = shlex.split(command.replace("imagefolder:xray", f"imagefolder:{folder}"))[1:]
    args = ["a brain MRI showing {label}" if a == "a chest X-ray showing {label}" else a for a in args]
    return [*args, "-w", "0"] if args[:2] == ["corpus", "build"] else args


def balanced_accuracy(out: Path) -> tuple[float, int]:
    (result,) = [json.loads(p.read_text()) for p in out.glob("zeroshot__*.result.json")]
    return result["metrics"]["balanced_accuracy"], result["counts"]["n"]


@pytest.mark.slow  # one tiny-model fine-tune of 50 steps on the CPU plus four evaluations (~2 min idle)
def test_readme_recipe_improves_balanced_accuracy_without_scoring_training_images(run_cli, tmp_path) -> None:
    for name in ("kaggle", "flat"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "names.yaml").write_text("notumor: no tumor\n")
        (tmp_path / name / "configs").symlink_to(REPO / "configs")
    generate(tmp_path / "kaggle" / "mri" / "Testing")  # Kaggle's brain MRI layout: only Testing/<class>/
    generate(tmp_path / "flat" / "mri")  # the same images, no split folders
    build, train, evaluate = readme_recipe()

    corpora = {}
    for name in ("kaggle", "flat"):
        printed = run_cli(*adapted(build, "mri"), cwd=tmp_path / name).stdout
        assert "split by hash 70/10/20" in printed  # stated, with counts, never "all test"
        catalog = json.loads((tmp_path / name / "ft" / "stats.json").read_text())
        corpora[name] = catalog
    # One split rule: both layouts give the same corpus, so what the recipe does on one it does on the other.
    assert corpora["kaggle"]["splits"] == corpora["flat"]["splits"] and corpora["kaggle"]["splits"]["train"] > 100

    work = tmp_path / "kaggle"
    trained = run_cli(*adapted(train, "mri"), "--run.tensorboard", "false", cwd=work)
    assert "LEAKAGE" not in trained.stdout + trained.stderr and "training images of" not in trained.stdout
    next_hint = next(line for line in trained.stdout.splitlines() if line.startswith("next:"))
    assert "--train-catalog" in next_hint  # the suggested command checks leakage too
    scored = run_cli(*adapted(evaluate, "mri"), cwd=work).stdout
    balanced, n = balanced_accuracy(work / "runs" / "xray" / "eval")
    assert f"leakage: none of {n} checked images is among the training images" in scored

    # The model the recipe started from: the trainer's seed, then its model builder, as in loop._train.
    config = load_config(work / "runs" / "xray" / "config.yaml")
    torch.manual_seed(config.run.seed)
    start_model, _, _, tokenizer = loop.build_model(config)
    save_pretrained(start_model, tokenizer, work / "start")
    start_eval = [a.replace("runs/xray/final", str(work / "start")) for a in adapted(evaluate, "mri")]
    start_eval[start_eval.index("-o") + 1] = "start-eval"
    run_cli(*start_eval, cwd=work)
    start, start_n = balanced_accuracy(work / "start-eval")
    assert start_n == n
    assert balanced >= start + 0.1, f"balanced accuracy {balanced:.3f} after the recipe, {start:.3f} before"

    flat = tmp_path / "flat"  # the flat layout's test images are the same files: the recipe's model scores the same
    flat_eval = [a.replace("runs/xray/final", str(work / "runs" / "xray" / "final")) for a in adapted(evaluate, "mri")]
    flat_eval[flat_eval.index("--prompts-from-run") + 1] = str(work / "runs" / "xray")
    printed = run_cli(*flat_eval, cwd=flat).stdout
    assert f"leakage: none of {n} checked images is among the training images" in printed
    assert balanced_accuracy(flat / "runs" / "xray" / "eval") == (balanced, n)
