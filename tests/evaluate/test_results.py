"""Result files: one per identity (what changes the numbers), readable names that keep the dataset name."""

from __future__ import annotations

from biomedclip.evaluate.results import (
    counts_line,
    leakage_warning,
    make_result,
    result_identity,
    slug,
    spec_name,
    write_result,
)


def test_names_keep_the_beginning() -> None:
    """Issue 13: ``lc25000`` became ``c25000`` (the slug kept the last 80 characters)."""
    long_spec = "lc25000_lung:/data/" + "deep/" * 30 + "lung_colon_image_set"
    assert slug(long_spec).startswith("lc25000_lung_data_deep") and len(slug(long_spec)) == 60
    assert slug(long_spec) != slug(long_spec + "2")
    assert slug("lc25000_lung") == "lc25000_lung"
    assert spec_name(long_spec) == "lc25000_lung-lung_colon_image_set"
    assert spec_name("/data/brain_mri/") == "brain_mri" and spec_name("tiny") == "tiny"
    assert spec_name("local-dir:runs/a/final") == "local-dir-final"


def test_identity_follows_the_settings_that_change_numbers(tmp_path) -> None:
    base = {"batch_size": 64, "device": None, "max_items": None, "seed": 0, "prompts_hash": "aaa"}
    identity = result_identity("zeroshot", "m", "d", "test", base)
    assert identity == result_identity("zeroshot", "m", "d", "test", base | {"batch_size": 8, "device": "cpu"})
    assert identity == result_identity("zeroshot", "m", "d", "test", base | {"train_catalog": "c", "cache_dir": "x"})
    for change in ({"prompts_hash": "bbb"}, {"max_items": 10}, {"seed": 1}, {"split_ratios": (0.5, 0, 0.5)}):
        assert identity != result_identity("zeroshot", "m", "d", "test", base | change), change
    assert identity != result_identity("zeroshot", "m", "d", "all", base)
    paths = {
        write_result(make_result("zeroshot", "m", "lc25000_lung:/x", "test", {}, base | change), tmp_path)
        for change in ({}, {"prompts_hash": "bbb"}, {"batch_size": 1})
    }
    assert len(paths) == 2 and all(p.name.startswith("zeroshot__m__lc25000_lung-x__test__") for p in paths)


def test_printed_counts_and_warning() -> None:
    counts = {"n": 82, "found": 450, "rule": "split test by hash 70/10/20", "majority_rate": 0.5123}
    result = make_result("zeroshot", "m", "d", "test", {}, {}, counts=counts)
    assert counts_line(result) == "82 of 450 images (split test by hash 70/10/20), majority class 0.512"
    assert leakage_warning(result) == ""
    leak = {"overlap": 3, "checked": 82, "catalog": "corpus/catalog.parquet"}
    assert leakage_warning(make_result("zeroshot", "m", "d", "test", {}, {}, leakage=leak)).startswith(
        "WARNING: LEAKAGE: 3 of 82 scored images are in the training corpus corpus/catalog.parquet"
    )
