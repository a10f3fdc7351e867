"""Evaluation suite: zero-shot, retrieval, linear probe and VQA on local datasets, with an embedding cache.

>>> from biomedclip.evaluate import load_model, run_zeroshot, RunSettings
>>> result = run_zeroshot(load_model("local-dir:ckpt"), "pcam:/data/pcam", split="test", settings=RunSettings())
>>> result["metrics"]["accuracy"]

Names are imported on first use (PEP 562), so ``biomedclip.evaluate.embeddings`` and ``.zeroshot`` (reused by
the serving code) load without scikit-learn, h5py or pydicom.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DatasetError": "datasets",
    "list_datasets": "datasets",
    "load_dataset": "datasets",
    "EmbeddingCache": "embeddings",
    "embed_images": "embeddings",
    "embed_texts": "embeddings",
    "select_device": "embeddings",
    "check_overlap": "leakage",
    "LinearProbeConfig": "linear_probe",
    "linear_probe": "linear_probe",
    "classification_metrics": "metrics",
    "EvalModel": "models",
    "load_model": "models",
    "PAPER_PROMPTS": "prompts",
    "PromptSet": "prompts",
    "load_prompt_set": "prompts",
    "RetrievalConfig": "retrieval",
    "evaluate_retrieval": "retrieval",
    "group_captions": "retrieval",
    "RunSettings": "tasks",
    "run_linear_probe": "tasks",
    "run_retrieval": "tasks",
    "run_zeroshot": "tasks",
    "run_paper": "paper",
    "run_vqa": "vqa",
    "VQAConfig": "vqa",
    "build_zeroshot_classifier": "zeroshot",
    "evaluate_zeroshot": "zeroshot",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'biomedclip.evaluate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"biomedclip.evaluate.{_EXPORTS[name]}"), name)
