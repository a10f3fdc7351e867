"""Medical VQA sets in their released layouts: VQA-RAD and SLAKE (English questions).

* VQA-RAD (OSF release): ``VQA_RAD Dataset Public.json`` (a list of ``{image_name, question, answer,
  answer_type, phrase_type, ...}``) and the images in ``VQA_RAD Image Folder/``. Test = ``phrase_type`` starting
  with ``test`` (``test_freeform``, ``test_para``), as in the release; there is no val split (``val`` is refused).
* SLAKE 1.0: ``{train,validate,test}.json`` (``{img_name, question, answer, answer_type, q_lang, ...}``) and
  ``imgs/<img_name>``; only ``q_lang == "en"`` questions are used, as in the paper.
Answers are compared after lower-casing and collapsing whitespace.
"""

from __future__ import annotations

import json
from pathlib import Path

from biomedclip.evaluate.datasets.base import DatasetError, VQAQuestions, load_image
from biomedclip.evaluate.datasets.folders import check_split

VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
SLAKE_SPLITS = {"train": "train", "val": "validate", "test": "test"}


def normalize_answer(answer: object) -> str:
    """Lower-cased, whitespace-collapsed answer text (numbers and booleans as strings)."""
    return " ".join(str(answer).lower().split())


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of questions")
    return data


def _questions(name: str, split: str, root: Path, rows: list[dict], image_field: str, images: Path) -> VQAQuestions:
    if not rows:
        raise DatasetError(f"{name}: no questions for split {split!r} in {root}")
    try:
        keys = [str(row[image_field]) for row in rows]
        questions = [str(row["question"]).strip() for row in rows]
        answers = [normalize_answer(row["answer"]) for row in rows]
        types = [str(row.get("answer_type", "OPEN")).strip().upper() for row in rows]
    except KeyError as error:
        raise DatasetError(f"{name}: question without field {error} in {root}") from error
    missing = sorted({k for k in keys if not (images / k).is_file()})
    if missing:
        raise DatasetError(f"{name}: {len(missing)} images are missing from {images}, e.g. {missing[0]}")
    return VQAQuestions(
        name, split, keys, questions, answers, types, lambda key: load_image(images / key), str(root.resolve())
    )


def vqa_rad(root: str | Path, split: str = "test") -> VQAQuestions:
    """VQA-RAD: train = free-form and paraphrased training questions, test = the ``test_*`` phrase types."""
    root = Path(root)
    if check_split(split) == "val":
        raise DatasetError("VQA-RAD has no validation split: use train and test")
    rows = _read_json(root / VQA_RAD_JSON) if (root / VQA_RAD_JSON).is_file() else None
    if rows is None:
        raise DatasetError(f"VQA-RAD: expected '{VQA_RAD_JSON}' in {root}")
    chosen = [r for r in rows if str(r.get("phrase_type", "")).startswith("test") == (split == "test")]
    return _questions("vqa_rad", split, root, chosen, "image_name", root / VQA_RAD_IMAGES)


def slake(root: str | Path, split: str = "test") -> VQAQuestions:
    """SLAKE 1.0, English questions of ``train.json`` / ``validate.json`` / ``test.json``."""
    root = Path(root)
    path = root / f"{SLAKE_SPLITS[check_split(split)]}.json"
    if not path.is_file():
        raise DatasetError(f"SLAKE: expected {path.name} (and imgs/) in {root}")
    rows = [r for r in _read_json(path) if r.get("q_lang", "en") == "en"]
    return _questions("slake", split, root, rows, "img_name", root / "imgs")
