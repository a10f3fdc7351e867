"""Fixtures for the evaluation tests: a toy CLIP-like model and tiny datasets written from real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms


class ToyClip(torch.nn.Module):
    """A CLIP-shaped model small enough for unit tests: pooled pixels -> linear, bag of tokens -> linear."""

    def __init__(self, dim: int = 16, vocab: int = 97, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.visual_proj = torch.nn.Parameter(torch.randn(3 * 4 * 4, dim, generator=generator))
        self.token_embedding = torch.nn.Parameter(torch.randn(vocab, dim, generator=generator))
        self.logit_scale = torch.nn.Parameter(torch.tensor(np.log(100.0), dtype=torch.float32))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(pixels, 4).flatten(1)
        return pooled @ self.visual_proj

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens > 0).float().unsqueeze(-1)
        return (self.token_embedding[tokens] * mask).sum(1)


def toy_tokenizer(texts: list[str], context_length: int = 32) -> torch.Tensor:
    """Characters -> ids in [1, 97), zero padded."""
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [1 + ord(ch) % 96 for ch in text[:context_length]]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


TOY_TRANSFORM = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])


@pytest.fixture
def toy():
    """The toy model, its tokenizer and its transform, as a CLI-free stand-in for a loaded CLIP."""
    return ToyClip().eval(), toy_tokenizer, TOY_TRANSFORM


# ---------------------------------------------------------------- tiny datasets in their released layouts


def _bccd(shared_fixtures) -> list:
    return sorted((shared_fixtures / "images" / "bccd" / "JPEGImages").glob("*.jpg"))


def _small(path, size: int = 48, offset: int = 0):
    """A real image, cropped at a class-dependent offset and shrunk so tests stay fast."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        box = (offset * 40, offset * 30, offset * 40 + 400, offset * 30 + 300)
        return image.crop(box).resize((size, size))


@pytest.fixture(scope="session")
def image_paths(shared_fixtures) -> list:
    return _bccd(shared_fixtures)


@pytest.fixture(scope="session")
def lc25000_root(tmp_path_factory, shared_fixtures):
    root = tmp_path_factory.mktemp("lc25000") / "lung_colon_image_set"
    images = _bccd(shared_fixtures)
    layout = {"lung_image_sets": ("lung_aca", "lung_n", "lung_scc"), "colon_image_sets": ("colon_aca", "colon_n")}
    for subset, folders in layout.items():
        for c, folder in enumerate(folders):
            (root / subset / folder).mkdir(parents=True)
            for i, path in enumerate(images[c * 8 : c * 8 + 8]):
                _small(path, offset=c).save(root / subset / folder / f"{folder}{i + 1}.jpeg")
    return root


@pytest.fixture(scope="session")
def tcga_til_root(tmp_path_factory, shared_fixtures):
    """Zenodo 6604094 layout: ``TCGA-TILs/images-tcga-tils/<study>/<split>/<class>/``; LUAD has 4 + 2 per split."""
    root = tmp_path_factory.mktemp("tcga") / "TCGA-TILs"
    images = _bccd(shared_fixtures)
    for study, per_class in (("luad", (4, 2)), ("pancancer", (2, 2))):
        for s, split in enumerate(("train", "val", "test")):
            for c, folder in enumerate(("til-negative", "til-positive")):
                (root / "images-tcga-tils" / study / split / folder).mkdir(parents=True)
                for i in range(per_class[c]):
                    name = f"{study}_{split}_{c}_{i}.png"
                    _small(images[s * 6 + c * 4 + i], offset=c).save(
                        root / "images-tcga-tils" / study / split / folder / name
                    )
    return root


@pytest.fixture(scope="session")
def pcam_root(tmp_path_factory, shared_fixtures):
    import h5py

    root = tmp_path_factory.mktemp("pcam")
    images = _bccd(shared_fixtures)
    for s, split in enumerate(("train", "valid", "test")):
        x = np.stack([np.asarray(_small(images[s * 10 + i], size=96, offset=i % 2)) for i in range(10)])
        y = (np.arange(10) % 2).reshape(10, 1, 1, 1).astype(np.uint8)
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as handle:
            handle.create_dataset("x", data=x)
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as handle:
            handle.create_dataset("y", data=y)
    return root


@pytest.fixture(scope="session")
def rsna_root(tmp_path_factory, shared_fixtures):
    """Kaggle layout: several CSV rows (boxes) per pneumonia patient, DICOMs named by patientId."""
    import shutil

    root = tmp_path_factory.mktemp("rsna")
    (root / "stage_2_train_images").mkdir()
    sources = [
        shared_fixtures / "images" / "dicom" / "pydicom_testfiles" / f"{n}.dcm" for n in ("CT_small", "MR_small")
    ]
    rows = ["patientId,x,y,width,height,Target"]
    for i in range(24):
        patient = f"patient-{i:04d}"
        shutil.copy(sources[i % 2], root / "stage_2_train_images" / f"{patient}.dcm")
        if i % 3 == 0:
            rows += [f"{patient},10,20,30,40,1", f"{patient},50,60,30,40,1"]
        else:
            rows.append(f"{patient},,,,,0")
    (root / "stage_2_train_labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def vqa_rad_root(tmp_path_factory, shared_fixtures):
    import json

    root = tmp_path_factory.mktemp("vqarad")
    folder = root / "VQA_RAD Image Folder"
    folder.mkdir()
    chest = shared_fixtures / "images" / "chest_xray"
    sources = sorted(chest.rglob("*.png"))[:4] + sorted(chest.rglob("*.jpg"))[:1]
    names = []
    for i, path in enumerate(sources):
        _small(path, size=64).save(folder / f"synpic{i}.jpg")
        names.append(f"synpic{i}.jpg")
    rows = []
    for i, name in enumerate(names * 6):
        closed = i % 2 == 0
        rows.append(
            {
                "qid": i,
                "image_name": name,
                "question": "Is there an abnormality?" if closed else "What organ is shown?",
                "answer": ("Yes" if names.index(name) % 2 else "no")
                if closed
                else ("lungs" if names.index(name) < 2 else "chest"),
                "answer_type": "CLOSED" if closed else "OPEN",
                "phrase_type": "test_freeform" if i >= 24 else "freeform",
            }
        )
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows))
    return root


@pytest.fixture(scope="session")
def slake_root(tmp_path_factory, shared_fixtures):
    import json

    root = tmp_path_factory.mktemp("slake")
    images = _bccd(shared_fixtures)
    for i in range(3):
        (root / "imgs" / f"xmlab{i}").mkdir(parents=True)
        _small(images[i], size=64).save(root / "imgs" / f"xmlab{i}" / "source.jpg")
    for split in ("train", "validate", "test"):
        rows = []
        for i in range(6):
            rows.append(
                {
                    "img_name": f"xmlab{i % 3}/source.jpg",
                    "question": "Is this normal?",
                    "answer": "Yes",
                    "answer_type": "CLOSED",
                    "q_lang": "en",
                }
            )
            rows.append(
                {
                    "img_name": f"xmlab{i % 3}/source.jpg",
                    "question": "这是什么?",
                    "answer": "肺",
                    "answer_type": "OPEN",
                    "q_lang": "zh",
                }
            )
        (root / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False))
    return root


@pytest.fixture(scope="session")
def shards_root(tmp_path_factory, shared_fixtures):
    """Two test shards of MedICaT figures (+ duplicated-caption samples) written with webdataset's TarWriter."""
    import io
    import json

    import webdataset as wds

    root = tmp_path_factory.mktemp("shards")
    sample_dir = shared_fixtures / "image_text" / "medicat_sample"
    records = [json.loads(line) for line in (sample_dir / "sample.jsonl").read_text().splitlines()]
    samples = []
    for record in records:
        path = sample_dir / "figures" / f"{record['pdf_hash']}_{record['fig_uri']}"
        samples.append((path, record["s2_caption"]))
    samples.append((samples[0][0], "Chest X-ray."))
    samples.append((samples[1][0], "Chest  X-ray."))
    for shard in range(2):
        with wds.TarWriter(str(root / f"test-{shard:06d}.tar")) as sink:
            for i, (path, caption) in enumerate(samples[shard::2]):
                buffer = io.BytesIO()
                _small(path, size=64).save(buffer, format="JPEG")
                sink.write(
                    {
                        "__key__": f"s{shard}_{i:04d}",
                        "jpg": buffer.getvalue(),
                        "txt": caption,
                        "json": {"caption": caption},
                    }
                )
    return root
