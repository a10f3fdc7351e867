"""An article build: a figure reused, changed, in an article of another split never leaves a copy across splits.

Issue 20: after a build no test item may have a verified near duplicate in train. Here real PMC article XML
(four figures each) holds real chest X-rays and BCCD smears, one picture per figure; a train article reuses two
pictures of a test article, resized and re-compressed, and grey with a white border, as journals change
figures. Ground truth is independent of the build's pixel check: the mean absolute grey difference of two
pictures at 64 x 64 (copies below 10 grey levels, different pictures above).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from biomedclip.corpus.build import build
from biomedclip.corpus.sources import open_source
from biomedclip.corpus.split import SplitConfig, article_hash, hash_split

PKG = "pmc/packages/extracted/PMC10802347/PMC10802347"
NIHPP = "nihpp-2023.12.31.573776v1"
SAME_PICTURE = 10.0


def _grey64(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L").resize((64, 64), Image.Resampling.BOX), float)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _ids(split: str, count: int) -> list[str]:
    """PMCIDs that the article hash sends to ``split``."""
    ids = (f"PMC{90_100_000 + i}" for i in range(100_000))
    return [p for p in ids if hash_split(article_hash(p, SplitConfig().salt), SplitConfig()) == split][:count]


def _article(root: Path, pmcid: str, xml: bytes, pictures: list[bytes]) -> None:
    folder = root / pmcid
    folder.mkdir(parents=True)
    (folder / f"{NIHPP}.nxml").write_bytes(
        xml.replace(b'pub-id-type="pmc">10802347', f'pub-id-type="pmc">{pmcid[3:]}'.encode())
    )
    for n, data in enumerate(pictures, 1):
        (folder / f"{NIHPP}-f{n:04d}.jpg").write_bytes(data)


def test_no_test_figure_has_a_copy_in_train_after_an_article_build(shared_fixtures, tmp_path) -> None:
    images = shared_fixtures / "images"
    paths = sorted((images / "chest_xray").rglob("*.png"))[:5] + sorted((images / "bccd").rglob("*.jpg"))[:9]
    pictures = [_jpeg(Image.open(p), 92) for p in paths]
    assert len(pictures) == 14
    xml = (shared_fixtures / PKG / f"{NIHPP}.nxml").read_bytes()
    (test_id,), train_ids = _ids("test", 1), _ids("train", 3)
    root = tmp_path / "articles"
    _article(root, test_id, xml, pictures[:4])
    a, b = Image.open(io.BytesIO(pictures[0])), Image.open(io.BytesIO(pictures[1])).convert("L")
    framed = Image.new("L", (b.width + 24, b.height + 24), 255)
    framed.paste(b, (12, 12))
    changed = [_jpeg(a.resize((round(a.width * 0.7), round(a.height * 0.7)), Image.Resampling.BICUBIC), 70),
               _jpeg(framed, 85)]  # fmt: skip
    _article(root, train_ids[0], xml, changed + pictures[4:6])
    _article(root, train_ids[1], xml, pictures[6:10])
    _article(root, train_ids[2], xml, pictures[10:14])
    out = tmp_path / "out"
    build([open_source(str(root))], out, workers=0)
    rows = pq.read_table(out / "catalog.parquet").to_pylist()
    accepted = {r["key"]: r for r in rows if r["status"] == "accepted"}
    images_of = {}
    for shard in sorted((out / "shards").rglob("*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            images_of[sample["__key__"]] = sample["jpg"]
    splits = {r["split"] for r in accepted.values()}
    assert {"train", "test"} <= splits
    near = [r for r in rows if r["reason"] == "near_duplicate"]
    assert len(near) == 2 and all(r["split"] == accepted[r["duplicate_of"]]["split"] for r in near)
    test = [k for k, r in accepted.items() if r["split"] == "test"]
    train = [k for k, r in accepted.items() if r["split"] == "train"]
    changed_keys = {f"{train_ids[0]}_F1", f"{train_ids[0]}_F2"}  # the changed copies: their cluster's kept figures
    assert {r["duplicate_of"] for r in near} == changed_keys
    assert len(accepted) == 14 and test and train
    for k, r in accepted.items():  # no accepted figure has a copy of its picture in another split
        grey = _grey64(images_of[k])
        others = [o for o, q in accepted.items() if q["split"] != r["split"]]
        assert all(np.abs(grey - _grey64(images_of[o])).mean() > SAME_PICTURE for o in others), k
