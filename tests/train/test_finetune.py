"""Fine-tuning on a small labelled folder works the first time: loader workers adapt to a one-shard corpus, the
in-training zero-shot evaluation reads any `eval` dataset spec (split folders included) with mapped class names,
the training caption template can be reused, the run ends with a summary, and a changed config never replaces an
earlier run's final/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from biomedclip.errors import InputError
from biomedclip.train import loop
from biomedclip.train.cli import summary_lines
from biomedclip.train.config import build_config, save_config
from biomedclip.train.data import loader_workers
from biomedclip.train.evaluation import zeroshot_tasks
from biomedclip.train.loop import TrainResult
from biomedclip.train.prompts import caption_templates, run_templates
from biomedclip.train.run_folder import check_run_folder

TEMPLATE = "a chest X-ray showing {}"
FOLDERS = ("0_normal", "1_pneumonia")
CLASS_TEXT = {"0_normal": "normal lungs", "1_pneumonia": "pneumonia"}


def mnist(fixtures: Path, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(fixtures / "labeled" / "pneumoniamnist_28_trainval.npz")
    return data[f"{split}_images"][:limit], data[f"{split}_labels"].ravel()[:limit]


def templated_shard(fixtures: Path, path: Path, count: int) -> Path:
    """One shard as `corpus build --source imagefolder:DIR --caption-template "a chest X-ray showing {label}"` with
    the class names map writes it: caption = template(class text), the record's label = the class text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images, labels = mnist(fixtures, "train", None)  # sorted by label: take the classes in turn
    picks = np.stack([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)], axis=1).ravel()[:count]
    with wds.TarWriter(str(path)) as sink:
        for index, (image, label) in enumerate(zip(images[picks], labels[picks], strict=True)):
            text = CLASS_TEXT[FOLDERS[int(label)]]
            record = {"label": text, "pmcid": f"{FOLDERS[int(label)]}/{index:04d}"}
            png = Image.fromarray(image).convert("RGB")
            sink.write({"__key__": f"s{index:06d}", "png": png, "txt": TEMPLATE.format(text), "json": record})
    return path


def split_folder(fixtures: Path, root: Path) -> int:
    """10 + 10 PneumoniaMNIST val images per class as root/train/<class>/ and root/test/<class>/; returns the test
    count."""
    images, labels = mnist(fixtures, "val", 200)
    for label, folder in enumerate(FOLDERS):
        for rank, index in enumerate(np.flatnonzero(labels == label)[:20]):
            target = root / ("train" if rank < 10 else "test") / folder
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index]).save(target / f"{index:03d}.png")
    return 20


@pytest.fixture(scope="module")
def small_corpus(shared_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune")
    names = root / "names.yaml"
    names.write_text("".join(f"{folder}: {text}\n" for folder, text in CLASS_TEXT.items()))
    return {
        "shard": templated_shard(shared_fixtures, root / "shards" / "train-000000.tar", 96),
        "folder": root / "xray",
        "test_images": split_folder(shared_fixtures, root / "xray"),  # type: ignore[dict-item]
        "names": names,
    }


@pytest.mark.parametrize(
    ("shards", "ranks", "workers", "expected"),
    [(1, 1, 2, 1), (4, 2, 2, 2), (3, 2, 2, 1), (8, 2, 4, 4), (8, 1, 0, 0), (1, 1, 1, 1)],
)
def test_loader_workers_are_what_the_shards_can_feed(shards: int, ranks: int, workers: int, expected: int) -> None:
    used, notes = loader_workers(shards, ranks, workers, resampled=False)
    assert used == expected
    assert bool(notes) == (expected != workers)


def test_fewer_shards_than_ranks_is_an_input_error_unless_resampled() -> None:
    with pytest.raises(InputError, match="1 shard\\(s\\) cannot be split across 2 rank"):
        loader_workers(1, 2, 0, resampled=False)
    assert loader_workers(1, 2, 4, resampled=True) == (4, [])


def test_bad_zeroshot_spec_fails_before_the_model_is_built(small_corpus, tmp_path, monkeypatch) -> None:
    def no_model(config):
        raise AssertionError("the model was built before the inputs were checked")

    monkeypatch.setattr(loop, "build_model", no_model)
    config = build_config(
        overrides={
            "data.train": str(small_corpus["shard"]),
            "eval.zeroshot": [f"imagefolder:{tmp_path / 'missing'}"],
            "optim.batch_size": 8,
            "run.output_dir": str(tmp_path / "run"),
            "run.device": "cpu",
        }
    )
    with pytest.raises(InputError, match=r"eval\.zeroshot imagefolder:"):
        loop.train(config)


def test_zeroshot_reads_split_folders_with_mapped_names_and_the_training_template(small_corpus) -> None:
    base = {"data.train": str(small_corpus["shard"]), "eval.zeroshot": [f"imagefolder:{small_corpus['folder']}"]}
    (task,) = zeroshot_tasks(build_config(overrides=base))
    assert len(task.dataset) == small_corpus["test_images"] and task.name == "xray"
    assert task.classnames == FOLDERS  # no map: the dataset's own prompts
    mapped = build_config(overrides={**base, "eval.class_names": str(small_corpus["names"]), "eval.prompts": "train"})
    (task,) = zeroshot_tasks(mapped)
    assert task.classnames == ("normal lungs", "pneumonia")
    assert task.templates == (TEMPLATE,)


def test_in_training_zeroshot_runs_on_split_folders(small_corpus) -> None:
    from biomedclip.train.evaluation import build_evaluator

    overrides = {
        "model.name": "tiny",
        "data.train": str(small_corpus["shard"]),
        "eval.zeroshot": [str(small_corpus["folder"])],  # a bare folder, detected as imagefolder
        "eval.class_names": str(small_corpus["names"]),
    }
    config = build_config(overrides=overrides)
    model, _, eval_tf, tokenizer = loop.build_model(config)
    metrics = build_evaluator(config, eval_tf, tokenizer)(model)
    assert metrics["zeroshot_xray_n"] == small_corpus["test_images"]
    assert 0.0 <= metrics["zeroshot_xray_accuracy"] <= 1.0 and 0.0 <= metrics["zeroshot_xray_auroc"] <= 1.0


def test_caption_templates_need_a_templated_corpus(small_corpus, shared_fixtures, tmp_path) -> None:
    assert caption_templates([str(small_corpus["shard"])]) == (TEMPLATE,)
    figures = tmp_path / "figures-000000.tar"
    root = shared_fixtures / "image_text" / "medicat_sample"
    with wds.TarWriter(str(figures)) as sink:
        for index, line in enumerate((root / "sample.jsonl").read_text().splitlines()):
            record = json.loads(line)
            sink.write({"__key__": f"f{index:04d}", "txt": record["s2_caption"], "json": {"label": "Figure 1"}})
    with pytest.raises(InputError, match="not built from a caption template"):
        caption_templates([str(figures)])


def test_class_name_map_must_name_classes_of_the_dataset(small_corpus, tmp_path) -> None:
    names = tmp_path / "other.yaml"
    names.write_text("notumor: no tumor\n")
    config = build_config(
        overrides={
            "data.train": str(small_corpus["shard"]),
            "eval.zeroshot": [str(small_corpus["folder"])],
            "eval.class_names": str(names),
        }
    )
    with pytest.raises(InputError, match="notumor"):
        zeroshot_tasks(config)


def test_run_folder_guard(tmp_path) -> None:
    out = tmp_path / "run"
    config = build_config(overrides={"run.output_dir": str(out), "optim.lr": 1e-3})
    check_run_folder(out, config)  # nothing there yet
    out.mkdir()
    save_config(config, out / "config.yaml")
    check_run_folder(out, config)  # a config but no checkpoint or final/: a run that never trained
    (out / "final").mkdir()
    check_run_folder(out, build_config(overrides={"run.output_dir": str(out), "optim.lr": 1e-3, "optim.max_steps": 9}))
    with pytest.raises(InputError, match=re.escape("optim.lr: 0.001 -> 0.0001")):
        check_run_folder(out, build_config(overrides={"run.output_dir": str(out), "optim.lr": 1e-4}))
    with pytest.raises(InputError, match=re.escape("run.resume none would replace it")):
        check_run_folder(
            out, build_config(overrides={"run.output_dir": str(out), "optim.lr": 1e-3, "run.resume": "none"})
        )


def test_summary_names_steps_time_metrics_model_and_next_command(tmp_path) -> None:
    result = TrainResult(
        output_dir=tmp_path / "run",
        steps=120,
        start_step=100,
        last_metrics={"step": 120, "loss": 0.25, "logit_scale": 30.0},
        last_eval={"kind": "eval", "step": 120, "zeroshot_xray_accuracy": 0.875, "zeroshot_xray_n": 40},
        seconds=3725.0,
        notes=["data.workers lowered from 2 to 1"],
    )
    config = build_config(overrides={"eval.zeroshot": ["imagefolder:/data/xray"], "eval.class_names": "names.yaml"})
    text = "\n".join(summary_lines(result, config))
    assert "done: steps 100 -> 120 in 1:02:05" in text and "note: data.workers lowered" in text
    assert "last train step 120: loss 0.2500" in text
    assert "last eval step 120: zeroshot_xray_accuracy=0.875 zeroshot_xray_n=40" in text
    final = tmp_path / "run" / "final"
    assert f"model: {final} (open_clip layout; load it as local-dir:{final})" in text
    assert (
        f"next: biomedclip eval zeroshot --model local-dir:{final} --dataset imagefolder:/data/xray "
        f"--prompts-from-run {tmp_path / 'run'} --class-names names.yaml --out {tmp_path / 'run' / 'eval'}"
    ) in text


@pytest.mark.slow  # three CLI training runs of the tiny model (~90 s on a loaded 2-core machine)
def test_one_shard_finetune_with_tiny_cpu_config_then_a_changed_config_is_refused(small_corpus, run_cli, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "-c",
        Path(__file__).resolve().parents[2] / "configs" / "tiny-cpu.yaml",  # data.workers 2
        "-s",
        small_corpus["shard"],
        "-o",
        out,
        "--device",
        "cpu",
        "--class-names",
        small_corpus["names"],
        "--eval.zeroshot",
        f"imagefolder:{small_corpus['folder']}",
        "--eval.prompts",
        "train",
        "--optim.batch_size",
        "16",
        "--optim.max_steps",
        "3",
        "--run.tensorboard",
        "false",
    ]
    first = run_cli(*args).stdout
    assert "data.workers lowered from 2 to 1: 1 shard(s)" in first
    assert "done: steps 0 -> 3 in 0:0" in first
    assert f"zeroshot_xray_n={small_corpus['test_images']}" in first and "zeroshot_xray_accuracy=" in first
    assert f"model: {out / 'final'}" in first
    assert f"next: biomedclip eval zeroshot --model local-dir:{out / 'final'} --dataset imagefolder:" in first
    assert f"--prompts-from-run {out}" in first
    assert run_templates(out) == (TEMPLATE,)
    weights = (out / "final" / "model.safetensors").read_bytes()

    changed = run_cli(*args, "--optim.lr", "5e-4", check=False)
    assert changed.returncode == 2
    assert "already holds a run" in changed.stderr and "optim.lr: 0.001 -> 0.0005" in changed.stderr
    assert (out / "final" / "model.safetensors").read_bytes() == weights

    again = run_cli(*args, "--optim.max_steps", "4").stdout  # the same run, continued
    assert "done: steps 3 -> 4" in again


def test_eval_zeroshot_after_finetune_uses_the_run_template_and_class_names(small_corpus, tmp_path) -> None:
    from click.testing import CliRunner

    from biomedclip.evaluate.cli import eval_group

    run = tmp_path / "run"
    run.mkdir()
    save_config(build_config(overrides={"data.train": str(small_corpus["shard"])}), run / "config.yaml")
    args = ["zeroshot", "--model", "tiny", "--dataset", f"imagefolder:{small_corpus['folder']}", "--device", "cpu"]
    mapped = [*args, "--class-names", str(small_corpus["names"]), "--prompts-from-run", str(run)]
    result = CliRunner().invoke(eval_group, [*mapped, "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "out").rglob("*.json")
    settings = json.loads(written.read_text())["settings"]
    assert settings["classnames"] == ["normal lungs", "pneumonia"] and settings["templates"] == [TEMPLATE]

    from biomedclip.cli import main

    not_a_run = CliRunner().invoke(main, ["eval", *args, "--prompts-from-run", str(tmp_path), "--out", str(tmp_path)])
    assert not_a_run.exit_code == 2 and "is not a training run folder" in not_a_run.output
