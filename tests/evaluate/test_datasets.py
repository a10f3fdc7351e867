"""Dataset adapters on tiny copies of each released layout, built from real images in ../shared."""

from __future__ import annotations

import hashlib
import shutil
import tarfile

import numpy as np
import pydicom
import pytest
from PIL import Image

from biomedclip.errors import InputError
from biomedclip.evaluate.datasets import (
    DatasetError,
    HashSplit,
    ImageTextPairs,
    LabeledImages,
    VQAQuestions,
    default_split,
    load_dataset,
    parse_dataset_spec,
)
from biomedclip.evaluate.datasets.benchmarks import rsna_split
from biomedclip.evaluate.datasets.dicom import read_dicom
from biomedclip.evaluate.prompts import PAPER_PROMPTS

SPLITS = ("train", "val", "test")


def _all_splits(spec: str) -> dict[str, LabeledImages]:
    return {split: load_dataset(spec, split) for split in SPLITS}


def _assert_partition(splits: dict, total: int) -> None:
    keys = [set(d.keys) for d in splits.values()]
    assert sum(map(len, keys)) == total == len(set().union(*keys))


def test_npz_matches_the_arrays(shared_fixtures) -> None:
    path = shared_fixtures / "labeled" / "pneumoniamnist_28_trainval.npz"
    arrays = np.load(path)
    data = load_dataset(str(path), "val")
    assert isinstance(data, LabeledImages) and data.classnames == ("normal", "pneumonia")
    np.testing.assert_array_equal(data.labels, arrays["val_labels"].ravel())
    image = data[5]
    assert image.mode == "RGB" and image.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(image)[..., 0], arrays["val_images"][5])
    with pytest.raises(DatasetError, match="test_images"):
        load_dataset(f"npz:{path}", "test")


def test_image_folder_with_and_without_split_folders(tmp_path, image_paths) -> None:
    for split in ("Training", "Testing"):
        for c in ("cell", "smear"):
            (tmp_path / "split" / split / c).mkdir(parents=True)
    for i, path in enumerate(image_paths[:8]):
        shutil.copy(path, tmp_path / "split" / ("Training" if i < 6 else "Testing") / ("cell" if i % 2 else "smear"))
    test = load_dataset(str(tmp_path / "split"), "test")
    assert test.classnames == ("cell", "smear") and len(test) == 2 and sorted(test.labels) == [0, 1]
    assert test[0].size == (640, 480) and test.found == 8 and test.rule == "split test from folder Testing/"
    assert all(key.startswith("Testing/") for key in test.keys)
    with pytest.raises(InputError, match="no val split folder"):
        load_dataset(f"imagefolder:{tmp_path / 'split'}", "val")
    assert len(load_dataset(f"imagefolder:{tmp_path / 'split'}", "all")) == 8
    for i, path in enumerate(image_paths[:30]):
        (tmp_path / "flat" / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "flat" / f"c{i % 3}")
    splits = _all_splits(f"imagefolder:{tmp_path / 'flat'}")
    _assert_partition(splits, 30)
    assert splits["test"].rule == "split test by hash 70/10/20" and splits["test"].found == 30
    assert set(load_dataset(f"imagefolder:{tmp_path / 'flat'}", "all").keys) == set().union(
        *(d.keys for d in splits.values())
    )
    everything_test = load_dataset(f"imagefolder:{tmp_path / 'flat'}", "test", HashSplit(0, 0, 1))
    assert len(everything_test) == 30  # the ratios reach the hash rule


def test_kaggle_testing_only_layout_is_split_by_hash_not_read_as_a_class(tmp_path, image_paths) -> None:
    """Issue 13: ``Testing/<class>/`` was read as one class named ``Testing`` (accuracy 1.000). Issue 21: with no
    training folder its images are split by hash, the same way given as ROOT or as ROOT/Testing."""
    keys = {}
    for i, path in enumerate(image_paths[:6]):
        folder = tmp_path / "kaggle" / "Testing" / ("glioma" if i % 2 else "notumor")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder)
        keys[f"{folder.name}/{path.name}"] = HashSplit().of(f"{folder.name}/{path.name}")
    for root in (tmp_path / "kaggle", tmp_path / "kaggle" / "Testing"):
        every = load_dataset(f"imagefolder:{root}", "all")
        assert every.classnames == ("glioma", "notumor") and len(every) == 6
        for split in ("train", "val", "test"):
            want = sorted(k for k, s in keys.items() if s == split)
            if want:
                got = load_dataset(f"imagefolder:{root}", split)
                assert sorted("/".join(p.parts[-2:]) for p in got.paths) == want and "by hash 70/10/20" in got.rule
    (tmp_path / "one" / "Testing" / "glioma").mkdir(parents=True)
    shutil.copy(image_paths[0], tmp_path / "one" / "Testing" / "glioma")
    with pytest.raises(InputError, match="only glioma; a labelled folder needs at least 2 classes"):
        load_dataset(f"imagefolder:{tmp_path / 'one'}", "test")


def test_csv_with_split_column_and_bad_header(tmp_path, image_paths) -> None:
    rows = ["path,label,split"] + [f"{p},{i % 2},{'train' if i < 4 else 'test'}" for i, p in enumerate(image_paths[:6])]
    (tmp_path / "data.csv").write_text("\n".join(rows))
    test = load_dataset(str(tmp_path / "data.csv"), "test")
    assert test.classnames == ("0", "1") and test.labels.tolist() == [0, 1] and len(test) == 2 and test.found == 6
    (tmp_path / "aliases.csv").write_text(
        "path,label,split\n"
        + "".join(f"{p},{i % 2},{('Training', 'dev', 'TESTING')[i % 3]}\n" for i, p in enumerate(image_paths[:6]))
    )
    assert [len(load_dataset(str(tmp_path / "aliases.csv"), s)) for s in SPLITS] == [2, 2, 2]
    (tmp_path / "bad.csv").write_text("file,label\nx.jpg,1\n")
    with pytest.raises(DatasetError, match="'path' and 'label'"):
        load_dataset(str(tmp_path / "bad.csv"))


def test_dicom_windowing_matches_an_independent_computation(shared_fixtures, tmp_path) -> None:
    folder = shared_fixtures / "images" / "dicom" / "pydicom_testfiles"
    dataset = pydicom.dcmread(folder / "MR_small.dcm")
    center, width = float(dataset.WindowCenter), float(dataset.WindowWidth)
    values = dataset.pixel_array.astype(float)  # MR: no rescale
    low, high = center - width / 2, center + width / 2
    want = np.round((np.clip(values, low, high) - low) / (high - low) * 255).astype(np.uint8)
    got = np.asarray(read_dicom(folder / "MR_small.dcm"))
    np.testing.assert_array_equal(got[..., 0], want)
    ct = pydicom.dcmread(folder / "CT_small.dcm")
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    lung = np.asarray(read_dicom(folder / "CT_small.dcm", window=(-600, 1500)))[..., 0]
    np.testing.assert_array_equal(lung, np.round((np.clip(hu, -1350, 150) + 1350) / 1500 * 255).astype(np.uint8))
    ct.PhotometricInterpretation = "MONOCHROME1"
    ct.save_as(tmp_path / "inverted.dcm")
    plain = np.asarray(read_dicom(folder / "CT_small.dcm"))
    np.testing.assert_array_equal(np.asarray(read_dicom(tmp_path / "inverted.dcm")), 255 - plain)
    with pytest.raises(DatasetError, match="cannot read DICOM"):
        read_dicom(folder / "JPEG-lossy.dcm")  # 12-bit JPEG: needs a codec we do not ship


def test_dicom_folder(shared_fixtures, tmp_path) -> None:
    folder = shared_fixtures / "images" / "dicom" / "pydicom_testfiles"
    for split in ("train", "test"):
        for name in ("CT_small", "MR_small"):
            (tmp_path / split / name[:2]).mkdir(parents=True)
            shutil.copy(folder / f"{name}.dcm", tmp_path / split / name[:2] / "a.dcm")
    data = load_dataset(f"dicom:{tmp_path}", "test")
    assert data.classnames == ("CT", "MR") and data[0].mode == "RGB" and data[0].size == (128, 128)


def test_pcam_h5(pcam_root) -> None:
    data = load_dataset(f"pcam:{pcam_root}", "val")
    assert data.classnames == PAPER_PROMPTS["pcam"].classnames and data.prompt_key == "pcam"
    assert data.labels.tolist() == [0, 1] * 5 and np.asarray(data[3]).shape == (96, 96, 3)
    assert parse_dataset_spec(str(pcam_root))[0] == "pcam"
    with pytest.raises(DatasetError, match="camelyonpatch"):
        load_dataset(f"pcam:{pcam_root / 'missing'}")


@pytest.mark.parametrize(("name", "folders"), [("lc25000_lung", 3), ("lc25000_colon", 2)])
def test_lc25000(lc25000_root, name: str, folders: int) -> None:
    splits = _all_splits(f"{name}:{lc25000_root.parent}")
    _assert_partition(splits, 8 * folders)
    for data in splits.values():
        assert data.classnames == PAPER_PROMPTS[name].classnames and data.found == 8 * folders
        for key, label in zip(data.keys, data.labels, strict=True):
            folder = key.split("/")[0]
            assert folder.endswith(("aca", "_n", "scc")[label] if folders == 3 else ("aca", "_n")[label])
    every = load_dataset(f"{name}:{lc25000_root}", "all")  # the paper scores every LC25000 image
    assert len(every) == 8 * folders and every.rule == "all images"
    assert default_split(f"{name}:{lc25000_root}", "zeroshot") == "all"
    assert default_split(f"{name}:{lc25000_root}", "linear_probe") == "test"


def test_tcga_til_reads_the_luad_study_of_the_release(tcga_til_root) -> None:
    for root in (tcga_til_root, tcga_til_root / "images-tcga-tils", tcga_til_root / "images-tcga-tils" / "luad"):
        data = load_dataset(f"tcga_til:{root}", "val")
        assert data.classnames == ("none", "tumor infiltrating lymphocytes") and len(data) == 6
        assert sorted(data.labels.tolist()) == [0, 0, 0, 0, 1, 1] and data.found == 18
        assert all(
            k.split("/")[:2] == ["val", ("til-negative", "til-positive")[lab]] and "luad_val" in k
            for k, lab in zip(data.keys, data.labels, strict=True)
        )
        assert default_split(f"tcga_til:{root}", "zeroshot") == "test"
    pancancer = load_dataset(f"tcga_til:{tcga_til_root / 'images-tcga-tils' / 'pancancer'}", "test")
    assert len(pancancer) == 4 and pancancer.rule == "study pancancer, official split test"
    with pytest.raises(DatasetError, match="luad"):
        load_dataset(f"tcga_til:{tcga_til_root.parent}", "test")


def _rsna_expected(patients: list[str]) -> dict[str, str]:
    """The documented rule, written out: SHA-256 order, first round(N*18678/26684) train, next round(N*4003/26684)."""
    order = sorted(patients, key=lambda p: hashlib.sha256(("rsna-v1:" + p).encode()).hexdigest())
    n_train, n_val = int(len(order) * 18678 / 26684 + 0.5), int(len(order) * 4003 / 26684 + 0.5)
    return {p: "train" if i < n_train else "val" if i < n_train + n_val else "test" for i, p in enumerate(order)}


def test_rsna_labels_are_per_patient_and_split_like_the_paper(rsna_root) -> None:
    splits = _all_splits(f"rsna_pneumonia:{rsna_root}")
    _assert_partition(splits, 24)
    expected = _rsna_expected([f"patient-{i:04d}" for i in range(24)])
    assert [len(splits[s]) for s in SPLITS] == [17, 4, 3]  # 24 * 18678 / 26684 = 16.8, 24 * 4003 / 26684 = 3.6
    for split, data in splits.items():
        assert data.found == 24
        for key, label in zip(data.keys, data.labels, strict=True):
            patient = key.split("/")[-1].removesuffix(".dcm")
            assert label == (int(patient.split("-")[1]) % 3 == 0) and expected[patient] == split
    assert splits["train"][0].mode == "RGB" and len(load_dataset(f"rsna_pneumonia:{rsna_root}", "all")) == 24
    full = rsna_split([f"id{i}" for i in range(26_684)])  # the public stage-2 labels: the paper's train and val
    assert [list(full.values()).count(s) for s in SPLITS] == [18_678, 4_003, 4_003]


def test_npz_all_and_counts(shared_fixtures) -> None:
    path = shared_fixtures / "labeled" / "pneumoniamnist_28_trainval.npz"
    arrays = np.load(path)
    every = load_dataset(f"npz:{path}", "all")
    want = np.concatenate([arrays["train_labels"].ravel(), arrays["val_labels"].ravel()])
    np.testing.assert_array_equal(every.labels, want)
    assert every.found == len(want) and load_dataset(f"npz:{path}", "val").found == len(want)


def test_shards(shards_root, shared_fixtures) -> None:
    data = load_dataset(str(shards_root), "test")
    assert isinstance(data, ImageTextPairs) and len(data) == 12
    assert data.captions.count("Chest X-ray.") == 1 and "Chest  X-ray." in data.captions
    with tarfile.open(shards_root / "test-000001.tar") as tar:
        first = tar.extractfile("s1_0000.jpg").read()
    import io

    with Image.open(io.BytesIO(first)) as want:
        np.testing.assert_array_equal(np.asarray(data[data.keys.index("test-000001.tar/s1_0000")]), np.asarray(want))
    with pytest.raises(DatasetError, match="train-NNNNNN"):
        load_dataset(f"shards:{shards_root}", "train")


def test_vqa_rad_and_slake(vqa_rad_root, slake_root) -> None:
    train, test = load_dataset(str(vqa_rad_root), "train"), load_dataset(str(vqa_rad_root), "test")
    assert isinstance(test, VQAQuestions) and len(train) == 24 and len(test) == 6
    assert set(train.answers) <= {"yes", "no", "lungs", "chest"} and {"CLOSED", "OPEN"} == set(test.answer_types)
    assert train.image_loader(train.image_keys[0]).mode == "RGB"
    with pytest.raises(DatasetError, match="no validation"):
        load_dataset(str(vqa_rad_root), "val")
    val = load_dataset(str(slake_root), "val")
    assert len(val) == 6 and set(val.answers) == {"yes"}  # Chinese questions dropped


def test_unknown_path_is_a_clear_error(tmp_path, image_paths) -> None:
    with pytest.raises(DatasetError, match="no known layout"):
        load_dataset(str(tmp_path / "nothing"))
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        shutil.copy(image_paths[0], tmp_path / c)
    with pytest.raises(InputError, match="unknown split"):
        load_dataset(str(tmp_path), "dev")
