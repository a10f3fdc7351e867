"""The caption template a run was trained on, so that zero-shot after fine-tuning asks in the same words.

A corpus built from ``imagefolder:`` sources writes, per image, a caption made from a template and the class text
(``a brain MRI showing {label}`` -> ``a brain MRI showing glioma``) and keeps the class text in the record's
``label`` field. The template is read back from the shards: each record's caption with its label replaced by
``{}``. ``eval zeroshot --prompts-from-run RUN`` and ``eval.prompts: train`` use it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from biomedclip.errors import InputError
from biomedclip.shards import expand_shards
from biomedclip.train.data import iterate_samples

MIN_TEMPLATED = 0.9  # share of the records read whose caption must come from a template


def caption_templates(urls: list[str], max_samples: int = 2000) -> tuple[str, ...]:
    """The templates of the first ``max_samples`` records of ``urls``, most frequent first.

    Raises:
        InputError: fewer than 90% of the records read have a caption holding their label exactly once
            (the corpus is not templated, e.g. PMC figures), so there is no template to reuse.
    """
    counts: Counter[str] = Counter()
    seen = 0
    for sample in iterate_samples(urls):
        if seen >= max_samples:
            break
        caption = sample.text()
        if caption is None:
            continue
        seen += 1
        label = str(sample.record().get("label") or "")
        if label and caption.count(label) == 1:
            counts[caption.replace(label, "{}")] += 1
    templated = sum(counts.values())
    if not seen or templated < MIN_TEMPLATED * seen:
        raise InputError(
            f"only {templated} of {seen} training captions hold their class label: the corpus was not built from "
            "a caption template (imagefolder: sources), so there is no training template to reuse"
        )
    return tuple(template for template, _ in counts.most_common())


def run_templates(run_dir: str | Path) -> tuple[str, ...]:
    """The caption templates of the training shards of run folder ``run_dir`` (its ``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text())
        train = config["data"]["train"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise InputError(f"{run_dir} is not a training run folder (cannot read data.train from {path})") from error
    try:
        urls = expand_shards(train)
    except FileNotFoundError as error:
        raise InputError(f"the training shards of {run_dir} are gone: {error}") from error
    return caption_templates(urls)
