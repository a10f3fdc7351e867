"""The inference layer: one device rule, one loaded-model type, and no inference code left in ``evaluate/``."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from biomedclip.errors import InputError
from biomedclip.model.inference import Embedder, build_zeroshot_classifier, select_device

SRC = Path(__file__).resolve().parents[2] / "src" / "biomedclip"


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has ``gpus`` CUDA devices and MPS or not."""

    def set_up(gpus: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_up


@pytest.mark.parametrize(
    ("gpus", "mps", "expected"),
    [(0, False, "cpu"), (0, True, "mps"), (2, True, "cuda"), (1, False, "cuda")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(machine, gpus, mps, expected):
    machine(gpus, mps)
    assert select_device("auto") == torch.device(expected)
    assert select_device(None) == torch.device(expected)


@pytest.mark.parametrize(
    ("device", "gpus", "mps", "message"),
    [
        ("cuda", 0, True, "no CUDA GPU"),
        ("cuda:0", 0, False, "no CUDA GPU"),
        ("cuda:2", 2, False, "only 2 CUDA GPU"),  # index 2 is the first one past the last GPU
        ("mps", 1, False, "MPS is not available"),
        ("tpu", 0, False, "device"),
        ("gpu0", 0, False, "unknown device"),
    ],
)
def test_absent_or_unknown_device_is_an_input_error(machine, device, gpus, mps, message):
    machine(gpus, mps)
    with pytest.raises(InputError, match=message):
        select_device(device)


def test_present_devices_and_local_rank(machine):
    machine(gpus=2)
    assert select_device("cuda:1") == torch.device("cuda", 1)
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(InputError, match="only 2"):
        select_device("cuda", local_rank=2)


def test_training_uses_the_same_device_rule():
    from biomedclip.train import loop

    assert loop.select_device is select_device


def test_one_loaded_model_type():
    from biomedclip import api
    from biomedclip.evaluate import embeddings, models, zeroshot

    assert models.EvalModel is api.Embedder is Embedder
    assert (
        embeddings.embed_images.__module__
        == zeroshot.build_zeroshot_classifier.__module__
        == ("biomedclip.model.inference")
    )


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", [SRC / "api.py", *sorted((SRC / "serve").glob("*.py"))], ids=lambda p: p.name)
def test_api_and_serve_do_not_depend_on_evaluate(path):
    assert not [m for m in _imported_modules(path) if m.startswith("biomedclip.evaluate")]


def test_zeroshot_classifier_is_the_renormalised_template_mean(tiny):
    model, _, _, tokenizer = tiny
    labels, templates = ["lung", "liver", "bone"], ["a photo of {}", "{} presented in image"]
    classifier = build_zeroshot_classifier(model, tokenizer, labels, templates, batch_size=2)
    with torch.no_grad():
        rows = []
        for label in labels:
            embedded = model.encode_text(tokenizer([t.format(label) for t in templates])).numpy()
            mean = (embedded / np.linalg.norm(embedded, axis=1, keepdims=True)).mean(0)
            rows.append(mean / np.linalg.norm(mean))
    np.testing.assert_allclose(classifier, np.stack(rows), atol=1e-5)
    with pytest.raises(InputError, match="exactly one"):
        build_zeroshot_classifier(model, tokenizer, labels, ["{} and {}"])


def test_embedder_device_none_keeps_the_model_where_it_is(tiny):
    model, _, eval_tf, tokenizer = tiny
    embedder = Embedder(model, eval_tf, tokenizer, name="tiny")
    assert embedder.device == torch.device("cpu") and embedder.name == "tiny"
    assert len(embedder.fingerprint) == 64
