"""VQA: accuracy bookkeeping against numpy, and the fusion trained on a tiny VQA-RAD copy with the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biomedclip.evaluate.datasets import DatasetError, load_dataset
from biomedclip.evaluate.models import load_model
from biomedclip.evaluate.tasks import RunSettings
from biomedclip.evaluate.vqa import VQAConfig, extract_token_features, predict, run_vqa, train_fusion, vqa_accuracy


def test_vqa_accuracy_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    answers = rng.choice(["yes", "no", "lung", "liver"], 200).tolist()
    predicted = [a if rng.random() < 0.6 else "yes" for a in answers]
    types = ["CLOSED" if a in ("yes", "no") else "OPEN" for a in answers]
    got = vqa_accuracy(predicted, answers, types)
    correct = np.array(predicted) == np.array(answers)
    closed = np.array(types) == "CLOSED"
    assert got["overall_accuracy"] == pytest.approx(correct.mean())
    assert got["closed_accuracy"] == pytest.approx(correct[closed].mean())
    assert got["open_accuracy"] == pytest.approx(correct[~closed].mean())
    assert got["n_closed"] + got["n_open"] == got["n"] == 200


@pytest.fixture(scope="module")
def tiny():
    """The tiny BiomedCLIP (random weights); one torch thread, which is much faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model("tiny", "cpu")
    torch.set_num_threads(threads)


def test_fusion_learns_the_training_questions(tiny, vqa_rad_root) -> None:
    train = load_dataset(f"vqa_rad:{vqa_rad_root}", "train")
    features = extract_token_features(tiny, train)
    assert features.image_tokens.shape[0] == 5 and features.image_tokens.shape[1] == 1 + (64 // 16) ** 2
    assert features.text_tokens.shape[0] == len(train) and features.text_mask.any(1).all()
    answers = sorted(set(train.answers))
    targets = torch.tensor([answers.index(a) for a in train.answers])
    fusion = train_fusion(features, targets, len(answers), VQAConfig(hidden=32, epochs=30, lr=2e-3))
    predicted = [answers[i] for i in predict(fusion, features)]
    assert vqa_accuracy(predicted, train.answers, train.answer_types)["overall_accuracy"] >= 0.9


def test_run_vqa_reports_closed_open_overall(tiny, vqa_rad_root, shared_fixtures) -> None:
    config = VQAConfig(hidden=32, layers=1, epochs=2)
    result = run_vqa(tiny, f"vqa_rad:{vqa_rad_root}", split="test", config=config, settings=RunSettings())
    metrics = result["metrics"]
    assert metrics["n"] == 6 and metrics["n_closed"] == 3 and metrics["n_open"] == 3 and metrics["answerable"] == 1.0
    assert result["settings"]["vqa"]["layers"] == 1 and metrics["n_answers"] == 4
    with pytest.raises(DatasetError, match="not a VQA dataset"):
        run_vqa(
            tiny, str(shared_fixtures / "labeled" / "breastmnist_28_trainval.npz"), split="val", settings=RunSettings()
        )
