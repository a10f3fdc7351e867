"""Task runners (zero-shot, retrieval, linear probe) and the embedding cache, with a toy CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms

from biomedclip.evaluate import tasks
from biomedclip.evaluate.datasets import DatasetError, load_dataset
from biomedclip.evaluate.linear_probe import LinearProbeConfig
from biomedclip.evaluate.models import EvalModel
from biomedclip.evaluate.prompts import PromptSet
from biomedclip.evaluate.retrieval import RetrievalConfig
from biomedclip.evaluate.tasks import RunSettings, run_linear_probe, run_retrieval, run_zeroshot


@pytest.fixture
def toy_eval(toy) -> EvalModel:
    model, tokenizer, transform = toy
    return EvalModel(model, transform, tokenizer, name="toy")


def _unit(x: torch.Tensor) -> np.ndarray:
    x = x.numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_zeroshot_equals_a_direct_computation(toy_eval, lc25000_root) -> None:
    spec = f"lc25000_lung:{lc25000_root}"
    result = run_zeroshot(toy_eval, spec, split="train", settings=RunSettings(batch_size=4))
    assert result["settings"]["templates"] == ["this is an image of {}", "{} presented in image"]
    data = load_dataset(spec, "train")
    with torch.no_grad():
        images = _unit(
            toy_eval.model.encode_image(torch.stack([toy_eval.transform(data[i]) for i in range(len(data))]))
        )
        classes = []
        for name in result["settings"]["classnames"]:
            prompts = [t.format(name) for t in result["settings"]["templates"]]
            mean = _unit(toy_eval.model.encode_text(toy_eval.tokenizer(prompts))).mean(0)
            classes.append(mean / np.linalg.norm(mean))
    predictions = (images @ np.stack(classes).T).argmax(1)
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(predictions == data.labels))
    assert result["task"] == "zeroshot" and result["split"] == "train" and result["metrics"]["n"] == len(data)


def test_user_prompts_must_match_the_classes(toy_eval, lc25000_root) -> None:
    with pytest.raises(DatasetError, match="one name per class"):
        run_zeroshot(
            toy_eval, f"lc25000_colon:{lc25000_root}", prompts=PromptSet(("a",), ("{}",)), settings=RunSettings()
        )


def test_cache_avoids_recomputation_and_keys_on_the_transform(toy_eval, pcam_root, tmp_path, monkeypatch) -> None:
    calls = []
    real = tasks.embed_images
    monkeypatch.setattr(tasks, "embed_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    settings = RunSettings(cache_dir=str(tmp_path / "cache"))
    first = run_zeroshot(toy_eval, f"pcam:{pcam_root}", settings=settings)
    second = run_zeroshot(toy_eval, f"pcam:{pcam_root}", settings=settings)
    assert len(calls) == 1 and first["metrics"] == second["metrics"]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    toy_eval.transform = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])
    run_zeroshot(toy_eval, f"pcam:{pcam_root}", settings=settings)
    assert len(calls) == 2 and len(list((tmp_path / "cache").glob("*.npy"))) == 2
    other = EvalModel(type(toy_eval.model)(seed=1).eval(), toy_eval.transform, toy_eval.tokenizer, name="toy2")
    run_zeroshot(other, f"pcam:{pcam_root}", settings=settings)
    assert len(calls) == 3


def test_retrieval_on_shards_is_one_to_one_unless_merged(toy_eval, shards_root, pcam_root) -> None:
    pairs = run_retrieval(toy_eval, str(shards_root), settings=RunSettings())
    assert pairs["metrics"]["n_images"] == 12 and pairs["metrics"]["n_texts"] == 12
    merged = run_retrieval(
        toy_eval, str(shards_root), config=RetrievalConfig(merge_captions=True), settings=RunSettings()
    )
    assert merged["metrics"]["n_texts"] == 11 and merged["settings"]["merge_captions"] is True
    for result in (pairs, merged):
        assert 0 <= result["metrics"]["image_to_text_R@1"] <= result["metrics"]["image_to_text_R@10"] <= 1
    with pytest.raises(DatasetError, match="image-caption"):
        run_retrieval(toy_eval, f"pcam:{pcam_root}", settings=RunSettings())


def test_linear_probe_uses_the_val_split(toy_eval, tcga_til_root) -> None:
    config = LinearProbeConfig(protocol="logistic", fractions=(0.5, 1.0), seeds=(0, 1), c_grid=(0.1, 10.0))
    result = run_linear_probe(toy_eval, f"tcga_til:{tcga_til_root}", config=config, settings=RunSettings())
    assert result["settings"]["validation"] == "val split"
    assert set(result["metrics"]["summary"]) == {"0.5", "1.0"} and len(result["metrics"]["runs"]) == 4
    assert all(run["n_train"] == (4 if run["fraction"] == 0.5 else 6) for run in result["metrics"]["runs"])


def test_max_items_subsamples_deterministically(toy_eval, pcam_root) -> None:
    settings = RunSettings(max_items=4, seed=3)
    a = run_zeroshot(toy_eval, f"pcam:{pcam_root}", settings=settings)
    b = run_zeroshot(toy_eval, f"pcam:{pcam_root}", settings=settings)
    assert a["metrics"]["n"] == 4 and a["metrics"] == b["metrics"] and a["settings"]["max_items"] == 4
