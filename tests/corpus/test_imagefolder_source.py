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
