"""VQA: accuracy bookkeeping against numpy, and the fusion trained on a tiny VQA-RAD copy with the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biomedclip.evaluate.datasets import DatasetError, load_dataset
from biomedclip.evaluate.models import load_model
from biomedclip.evaluate.tasks import RunSettings
from biomedclip.evaluate.vqa import (
    QuestionInputs,
    VQAConfig,
    extract_token_features,
    predict,
    predict_meter,
    run_vqa,
    soft_scores,
    train_fusion,
    train_meter,
    vqa_accuracy,
)


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
    torch.manual_seed(0)  # the tiny model's random weights do not depend on the tests run before
    yield load_model("tiny", "cpu")
    torch.set_num_threads(threads)


def test_fusion_learns_the_training_questions(tiny, vqa_rad_root) -> None:
    train = load_dataset(f"vqa_rad:{vqa_rad_root}", "train")
    features = extract_token_features(tiny, train)
    assert features.image_tokens.shape[0] == 5 and features.image_tokens.shape[1] == 1 + (64 // 16) ** 2
    assert features.text_tokens.shape[0] == len(train) and features.text_mask.any(1).all()
    answers = sorted(set(train.answers))
    targets = torch.tensor([answers.index(a) for a in train.answers])
    config = VQAConfig.for_head("light", hidden=32, epochs=30, lr=2e-3)
    fusion = train_fusion(features, targets, len(answers), config)
    predicted = [answers[i] for i in predict(fusion, features)]
    assert vqa_accuracy(predicted, train.answers, train.answer_types)["overall_accuracy"] >= 0.9


def test_soft_scores_follow_the_vqa_rule() -> None:
    index = {"yes": 0, "no": 1, "lung": 2}
    got = soft_scores([["yes"], ["no", "no", "yes"], ["lung"] * 4 + ["no"], ["liver"]], index)
    want = torch.tensor([[1.0, 0, 0], [1 / 3, 2 / 3, 0], [0, 1 / 3, 1.0], [0, 0, 0]])
    torch.testing.assert_close(got, want)


def test_defaults_are_the_papers_setting() -> None:
    meter, light = VQAConfig(), VQAConfig.for_head("light")
    assert (meter.head, meter.layers, meter.hidden, meter.heads) == ("meter", 6, 768, 12)
    assert (light.head, light.layers, light.hidden) == ("light", 2, 256)
    assert VQAConfig.for_head("light", hidden=None, layers=1).layers == 1
    with pytest.raises(ValueError, match="head"):
        VQAConfig(head="mlp")
    with pytest.raises(ValueError, match="multiple"):
        VQAConfig(hidden=100)


def test_meter_head_fine_tunes_a_copy_of_the_encoders(tiny, vqa_rad_root) -> None:
    train = load_dataset(f"vqa_rad:{vqa_rad_root}", "train")
    answers = sorted(set(train.answers))
    targets = soft_scores([[a] for a in train.answers], {a: i for i, a in enumerate(answers)})
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    inputs = QuestionInputs.of(tiny, train)
    config = VQAConfig(hidden=32, layers=1, heads=2, dropout=0.0, epochs=30, lr=1e-4, head_lr_mult=20.0)
    net = train_meter(tiny, inputs, targets, config)
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())  # caller's model untouched
    trunk = dict(net.trunk.named_parameters())
    moved = [n for n, p in tiny.model.visual.trunk.named_parameters() if not torch.equal(p, trunk[n].detach())]
    assert moved  # the image encoder was trained, not frozen
    predicted = [answers[i] for i in predict_meter(net, inputs)]
    assert vqa_accuracy(predicted, train.answers, train.answer_types)["overall_accuracy"] >= 0.9


@pytest.mark.parametrize("head", ["meter", "light"])
def test_run_vqa_reports_closed_open_overall(tiny, vqa_rad_root, head) -> None:
    config = VQAConfig.for_head(head, hidden=32, layers=1, heads=2, epochs=2)
    result = run_vqa(tiny, f"vqa_rad:{vqa_rad_root}", split="test", config=config, settings=RunSettings())
    metrics = result["metrics"]
    assert metrics["n"] == 6 and metrics["n_closed"] == 3 and metrics["n_open"] == 3 and metrics["answerable"] == 1.0
    assert result["settings"]["vqa"]["layers"] == 1 and result["settings"]["vqa"]["head"] == head
    assert metrics["n_answers"] == 4


def test_run_vqa_refuses_a_classification_dataset(tiny, shared_fixtures) -> None:
    npz = shared_fixtures / "labeled" / "breastmnist_28_trainval.npz"
    with pytest.raises(DatasetError, match="not a VQA dataset"):
        run_vqa(tiny, str(npz), split="val", settings=RunSettings())
