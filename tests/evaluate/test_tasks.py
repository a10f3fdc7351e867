"""Task runners (zero-shot, retrieval, linear probe) and the embedding cache, with a toy CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms

from biomedclip.errors import InputError
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
    rule = "split test read from the records: 12 of 12 samples (12 test)"
    assert pairs["counts"] == {"n": 12, "found": 12, "rule": rule, "unit": "pairs"}
    limited = run_retrieval(toy_eval, str(shards_root), settings=RunSettings(max_items=5))
    assert limited["counts"]["n"] == 5 and limited["counts"]["found"] == 12
    for result in (pairs, merged):
        assert 0 <= result["metrics"]["image_to_text_R@1"] <= result["metrics"]["image_to_text_R@10"] <= 1
    with pytest.raises(DatasetError, match="image-caption"):
        run_retrieval(toy_eval, f"pcam:{pcam_root}", settings=RunSettings())


def test_linear_probe_uses_the_val_split(toy_eval, tcga_til_root) -> None:
    config = LinearProbeConfig(protocol="logistic", fractions=(0.5, 1.0), seeds=(0, 1), c_grid=(0.1, 10.0))
    result = run_linear_probe(toy_eval, f"tcga_til:{tcga_til_root}", config=config, settings=RunSettings())
    assert result["settings"]["validation"] == "val split"
    assert set(result["metrics"]["summary"]) == {"0.5", "1.0"} and len(result["metrics"]["runs"]) == 4
    assert all(run["n_train"] == (3 if run["fraction"] == 0.5 else 6) for run in result["metrics"]["runs"])
    for split in ("train", "all"):
        with pytest.raises(InputError, match="fitted on train"):
            run_linear_probe(toy_eval, f"tcga_til:{tcga_til_root}", split=split, config=config, settings=RunSettings())
    assert result["counts"] == {  # LUAD test folder: 4 negative + 2 positive patches
        "n": 6,
        "found": 18,
        "rule": "study luad, official split test",
        "majority_class": "none",
        "majority_rate": pytest.approx(4 / 6),
        "class_counts": {"none": 4, "tumor infiltrating lymphocytes": 2},
        "train_n": 6,
    }


def test_max_items_subsamples_deterministically(toy_eval, pcam_root) -> None:
    settings = RunSettings(max_items=4, seed=3)
    a = run_zeroshot(toy_eval, f"pcam:{pcam_root}", settings=settings)
    b = run_zeroshot(toy_eval, f"pcam:{pcam_root}", settings=settings)
    assert a["metrics"]["n"] == 4 and a["metrics"] == b["metrics"] and a["settings"]["max_items"] == 4
    assert a["counts"]["n"] == 4 and a["counts"]["found"] == 30 and a["counts"]["rule"] == "official split test"
    labels = load_dataset(f"pcam:{pcam_root}", "test").labels  # 10 patches; the subset's majority, counted here
    picked = np.sort(np.random.default_rng(3).choice(10, 4, replace=False))
    tally = np.bincount(labels[picked], minlength=2)
    assert a["counts"]["majority_rate"] == tally.max() / 4 and a["counts"]["class_counts"] == {
        "normal lymph node": tally[0],
        "lymph node metastasis": tally[1],
    }


def test_retrieval_restricted_to_long_captions(toy_eval, shared_fixtures, tmp_path) -> None:
    import webdataset as wds
    from PIL import Image

    captions = ["word " * 255, "word " * 254, "lung " * 300, "Chest X-ray."]  # 257, 256, 302 and 7 tokens
    images = sorted((shared_fixtures / "image_text" / "medicat_sample" / "figures").iterdir())[:4]
    with wds.TarWriter(str(tmp_path / "test-000000.tar")) as sink:
        for index, (caption, path) in enumerate(zip(captions, images, strict=True)):
            with Image.open(path) as image:
                sink.write({"__key__": f"s{index}", "jpg": image.convert("RGB").resize((32, 32)), "txt": caption})
    spec = f"shards:{tmp_path}"
    every = run_retrieval(toy_eval, spec, settings=RunSettings())
    long = run_retrieval(toy_eval, spec, config=RetrievalConfig(min_tokens=257), settings=RunSettings())
    assert every["metrics"]["n_texts"] == 4 and long["metrics"]["n_texts"] == 2  # 257 counts, 256 does not
    assert long["counts"]["n"] == 2 and long["counts"]["found"] == 4 and long["settings"]["min_tokens"] == 257
    with pytest.raises(DatasetError, match="303 tokens or more"):
        run_retrieval(toy_eval, spec, config=RetrievalConfig(min_tokens=303), settings=RunSettings())
