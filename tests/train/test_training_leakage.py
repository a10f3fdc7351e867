"""The corpus records which images are test: training finds its corpus from the shards, checks its in-training
zero-shot images against the training catalog, and its `next:` hint carries --train-catalog."""

from __future__ import annotations

import shutil

from biomedclip.labelled_folders import HashSplit
from biomedclip.train.cli import summary_lines
from biomedclip.train.config import build_config
from biomedclip.train.evaluation import training_corpus, zeroshot_leakage, zeroshot_tasks
from biomedclip.train.loop import TrainResult


def test_in_training_zero_shot_is_checked_against_the_training_corpus(shared_fixtures, run_cli, tmp_path) -> None:
    images = sorted((shared_fixtures / "images" / "bccd" / "JPEGImages").glob("*.jpg"))[:24]
    root = tmp_path / "mri"
    for i, image in enumerate(images):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / f"c{i % 2}" / image.name)
    corpus = tmp_path / "ft"
    run_cli("corpus", "build", "--source", f"imagefolder:{root}", "--out", corpus, "--workers", "0",
            "--caption-template", "a blood smear of {label} cells")  # fmt: skip
    spec = str(corpus / "shards" / "train-*.tar")
    assert training_corpus(spec) == corpus.resolve()
    assert training_corpus(str(tmp_path / "nowhere" / "train-*.tar")) is None
    trained = sum(1 for i, image in enumerate(images) if HashSplit().of(f"c{i % 2}/{image.name}") == "train")

    test_only = build_config(overrides={"data.train": spec, "eval.zeroshot": [f"imagefolder:{root}"]})
    assert zeroshot_leakage(zeroshot_tasks(test_only), corpus) == []  # the same hash rule: no training image
    every = build_config(overrides={"data.train": spec, "eval.zeroshot": [f"imagefolder:{root}"]} | {
        "eval.zeroshot_split": "all"})  # fmt: skip
    assert zeroshot_leakage(zeroshot_tasks(every), corpus) == [
        f"zero-shot on mri scores {trained} of 24 images that are training images of {corpus} (same SHA-256): "
        "its in-training numbers overstate the model"
    ]
    result = TrainResult(output_dir=tmp_path / "run", steps=2, start_step=0, corpus=corpus)
    next_line = summary_lines(result, test_only)[-1]
    assert next_line.startswith("next: biomedclip eval zeroshot") and f"--train-catalog {corpus} " in next_line
