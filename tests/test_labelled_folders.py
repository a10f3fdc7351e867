"""The one labelled-folder reader (:mod:`biomedclip.labelled_folders`): layouts, the hash rule and its errors."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from biomedclip.errors import InputError
from biomedclip.labelled_folders import HashSplit, looks_like_split, read_labelled_folder, split_of_folder


@pytest.fixture(scope="module")
def image(shared_fixtures) -> Path:
    return sorted((shared_fixtures / "images" / "bccd" / "JPEGImages").glob("*.jpg"))[0]


def _make(root: Path, image: Path, files: list[str]) -> Path:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / name)
    return root


@pytest.mark.parametrize(
    ("names", "split"),
    [
        (("train", "Training", "TRAIN"), "train"),
        (("val", "Valid", "validation", "DEV"), "val"),
        (("test", "Testing", "TESTING"), "test"),
    ],
)
def test_split_aliases_in_any_case(names: tuple[str, ...], split: str) -> None:
    assert all(split_of_folder(name) == split for name in names)


def test_non_split_names() -> None:
    assert split_of_folder("glioma") is None and split_of_folder("testis") is None
    assert not any(looks_like_split(n) for n in ("notumor", "til-positive", "dev_x", "testis", "training_effect"))
    assert all(looks_like_split(n) for n in ("test_set", "TrainingData", "eval", "Validation Images", "holdout"))


def test_split_folders_are_the_split(tmp_path, image) -> None:
    files = ["Training/a/1.jpg", "Training/b/2.png", "VALID/a/3.jpg", "Testing/b/sub/4.jpg", "Testing/a/5.jpg"]
    data = read_labelled_folder(_make(tmp_path, image, [*files, "Training/loose.jpg", "Training/a/notes.txt"]))
    assert data.classes == ("a", "b") and data.split_folders == {"train": "Training", "val": "VALID", "test": "Testing"}
    assert [i.key for i in data.select("test")] == ["Testing/a/5.jpg", "Testing/b/sub/4.jpg"]
    assert [i.folder for i in data.select("test")] == ["a", "b"]  # nested folders belong to the top class
    assert len(data.select("train")) == 2 and len(data.select("all")) == 5
    assert data.rule("val") == "split val from folder VALID/"


def test_hash_rule_matches_an_independent_computation(tmp_path, image) -> None:
    files = [f"c{i % 2}/img{i}.jpg" for i in range(40)]
    data = read_labelled_folder(_make(tmp_path, image, files), HashSplit(6, 2, 2))
    for item in data.images:
        u = int(hashlib.sha256(f"biomedclip-folder-split-v1:{item.key}".encode()).hexdigest()[:16], 16) / 2**64
        assert item.split == ("train" if u < 0.6 else "val" if u < 0.8 else "test"), item.key
    assert sorted(i.key for s in ("train", "val", "test") for i in data.select(s)) == sorted(files)
    assert data.rule("test") == "split test by hash 60/20/20"


def test_hash_ratio_edges(tmp_path, image) -> None:
    root = _make(tmp_path, image, [f"c{i % 2}/img{i}.jpg" for i in range(12)])
    assert len(read_labelled_folder(root, HashSplit(1, 0, 0)).select("train")) == 12
    assert len(read_labelled_folder(root, HashSplit(0, 0, 1)).select("test")) == 12
    assert read_labelled_folder(root, HashSplit(0, 1, 0)).select("train") == []
    for bad in ((0, 0, 0), (-0.1, 0.5, 0.6)):
        with pytest.raises(InputError, match="split ratios"):
            HashSplit(*bad)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["Testing/glioma/1.jpg"], "only glioma; a labelled folder needs at least 2 classes"),
        (["glioma/1.jpg", "glioma/2.jpg"], "only glioma"),
        (["loose.jpg"], "no class folder with images"),
        (["test_set/a/1.jpg", "train_set/a/2.jpg"], "folder test_set/ looks like a split, not a class"),
        (["Training/Testing/a/1.jpg", "Training/b/2.jpg"], "folder Training/Testing/ looks like a split"),
        (["train/a/1.jpg", "train/b/1.jpg", "extra/a/1.jpg"], r"mixes split folders and other folders \['extra'\]"),
        (["train/a/1.jpg", "Training/b/1.jpg"], "more than one folder for one split"),
    ],
)
def test_layouts_that_are_errors(tmp_path, image, files: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message) as error:
        read_labelled_folder(_make(tmp_path, image, files))
    assert "ROOT/<class>/<image>" in str(error.value) or "split" in str(error.value)


def test_split_errors(tmp_path, image) -> None:
    data = read_labelled_folder(_make(tmp_path / "kaggle", image, ["Training/a/1.jpg", "Testing/b/2.jpg"]))
    with pytest.raises(InputError, match=r"has no val split folder \(found train \(Training/\), test \(Testing/\)\)"):
        data.select("val")
    with pytest.raises(InputError, match="unknown split 'dev'"):
        data.select("dev")
    with pytest.raises(InputError, match="does not exist"):
        read_labelled_folder(tmp_path / "missing")


def test_a_folder_with_no_training_folder_is_split_by_hash_and_says_so(tmp_path, image) -> None:
    """The issue's Kaggle brain MRI folder: only Testing/<class>/. Every image used to be test, so training found
    nothing; given as ROOT/Testing it was refused. Both now split its images alike, by the hash of <class>/<file>."""
    files = [f"Testing/{c}/{i}.jpg" for c in ("glioma", "notumor") for i in range(40)]
    root = _make(tmp_path / "kaggle", image, files)
    data, inner = read_labelled_folder(root), read_labelled_folder(root / "Testing")
    expected = {f: HashSplit().of(f.removeprefix("Testing/")) for f in files}  # the rule, applied independently
    for split in ("train", "val", "test"):
        want = sorted(f for f, s in expected.items() if s == split)
        assert sorted(i.key for i in data.select(split)) == want
        assert sorted(f"Testing/{i.key}" for i in inner.select(split)) == want
    counts = {split: sum(1 for s in expected.values() if s == split) for split in ("train", "val", "test")}
    assert counts["train"] > 0 and counts["test"] > 0
    assert data.rule("test") == "split test by hash 70/10/20 of the images in Testing/ (no training folder)"
    assert inner.rule("test") == (
        "split test by hash 70/10/20 of Testing/ (named like a split, but it holds the class folders)"
    )
    assert data.describe() == (
        "80 images, 2 classes; split by hash 70/10/20 of the images in Testing/ (no training folder): "
        f"train {counts['train']}, val {counts['val']}, test {counts['test']}"
    )
    assert len(inner.select("all")) == 80


def test_folders_filter_and_min_classes(tmp_path, image) -> None:
    root = _make(tmp_path, image, ["a/1.jpg", "b/2.jpg", "c/3.jpg"])
    data = read_labelled_folder(root, folders={"a": "A", "c": "C"})
    assert data.classes == ("a", "c") and len(data.images) == 2
    assert read_labelled_folder(root, folders={"a": "A"}, min_classes=1).classes == ("a",)
