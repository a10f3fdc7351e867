"""``imagefolder:`` in ``corpus build``: the labelled-folder reader's layouts and split, carried into the records."""

from __future__ import annotations

import shutil

import pytest

from biomedclip.corpus.sources import open_source
from biomedclip.errors import InputError
from biomedclip.labelled_folders import HashSplit


def _folder(root, images, files):
    for name, image in zip(files, images, strict=False):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / name)
    return root


@pytest.fixture(scope="module")
def images(shared_fixtures):
    return sorted((shared_fixtures / "images" / "bccd" / "JPEGImages").glob("*.jpg"))


def test_split_folders_are_splits_not_classes(tmp_path, images) -> None:
    """Issue 13: ``Training/``/``Testing/`` became two classes (captions "Training", "Testing") in the corpus."""
    files = ["Training/no_tumor/a.jpg", "Training/glioma/b.jpg", "Testing/no_tumor/c.jpg", "Testing/glioma/sub/d.jpg"]
    source = open_source(f"imagefolder:{_folder(tmp_path, images, files)}", caption_template="an MRI of {label}")
    articles = list(source.articles())
    figures = [figure for article in articles for figure in article.figures]
    assert [(f.pmcid, f.split, f.caption) for f in figures] == [
        ("train/glioma/b", "train", "an MRI of glioma"),
        ("train/no_tumor/a", "train", "an MRI of no tumor"),
        ("test/glioma/sub/d", "test", "an MRI of glioma"),
        ("test/no_tumor/c", "test", "an MRI of no tumor"),
    ]
    nested = next(a for a in articles if a.meta.pmcid == "test/glioma/sub/d")
    assert nested.open_media("sub/d.jpg").read() == images[3].read_bytes()


def test_ratios_reach_the_records_and_bad_layouts_fail_before_any_work(tmp_path, images) -> None:
    root = _folder(tmp_path / "flat", images, [f"c{i % 2}/{i}.jpg" for i in range(10)])
    source = open_source(f"imagefolder:{root}", imagefolder_split=HashSplit(0, 0, 1))
    assert {f.split for a in source.articles() for f in a.figures} == {"test"}
    assert all(a.meta.pmcid.startswith("test/c") for a in source.articles())
    _folder(tmp_path / "one", images, ["Testing/glioma/1.jpg"])
    with pytest.raises(InputError, match="only glioma"):
        open_source(f"imagefolder:{tmp_path / 'one'}")


def test_class_names_set_the_captions_and_a_testing_only_folder_is_split_and_described(
    tmp_path, images, run_cli
) -> None:
    """Issue 21: captions said "notumor" while prompts said "no tumor"; a Testing/-only folder went all to test."""
    files = [f"Testing/{c}/{i}.jpg" for c in ("glioma", "notumor") for i in range(6)]
    root = _folder(tmp_path / "mri", images * 2, files)
    source = open_source(
        f"imagefolder:{root}", caption_template="a brain MRI showing {label}", class_names={"notumor": "no tumor"}
    )
    figures = [figure for article in source.articles() for figure in article.figures]
    assert {f.caption for f in figures} == {"a brain MRI showing glioma", "a brain MRI showing no tumor"}
    expected = {f"{c}/{i}": HashSplit().of(f"{c}/{i}.jpg") for c in ("glioma", "notumor") for i in range(6)}
    assert {f.pmcid.split("/", 1)[1]: f.split for f in figures} == expected  # split by hash, recorded
    with pytest.raises(InputError, match="class names given for tumour, which are not classes here"):
        open_source(f"imagefolder:{root}", class_names={"tumour": "a tumour"})
    names = tmp_path / "names.yaml"
    names.write_text("notumor: no tumor\n")
    out = tmp_path / "corpus"
    proc = run_cli("corpus", "build", "--source", f"imagefolder:{root}", "--class-names", names, "--out", out,
                   "--workers", "0", "--caption-template", "a brain MRI showing {label}", check=False)  # fmt: skip
    counts = {s: sum(1 for v in expected.values() if v == s) for s in ("train", "val", "test")}
    assert (
        f"imagefolder:{root}: 12 images, 2 classes; split by hash 70/10/20 of the images in Testing/ "
        f"(no training folder): train {counts['train']}, val {counts['val']}, test {counts['test']}"
    ) in proc.stdout
    assert "articles:" not in proc.stderr and "art/s" not in proc.stderr  # no progress redraws in piped logs
    assert proc.stdout.count("articles: 12 (12 processed") == 1
