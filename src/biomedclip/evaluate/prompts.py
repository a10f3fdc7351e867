"""Zero-shot class names and prompt templates: the paper's, or the user's from a YAML file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from biomedclip.errors import InputError
from biomedclip.model.inference import DEFAULT_TEMPLATES

THIS_IS = "this is an image of {}"
PRESENTED = "{} presented in image"
A_PHOTO = "a photo of {}"


@dataclass(frozen=True)
class PromptSet:
    """Class names (in label order) and the templates whose embeddings are averaged per class."""

    classnames: tuple[str, ...]
    templates: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.classnames:
            raise ValueError("a prompt set needs at least one class name")
        if not self.templates:
            raise ValueError("a prompt set needs at least one template")
        for template in self.templates:
            if template.count("{}") != 1:
                raise ValueError(f"template {template!r} must contain exactly one '{{}}' for the class name")

    def prompts(self, classname: str) -> list[str]:
        """Every template filled with ``classname``."""
        return [template.format(classname) for template in self.templates]


# BiomedCLIP (Zhang et al., 2023), zero-shot classification: class names and template assignment as in the paper.
PAPER_PROMPTS: dict[str, PromptSet] = {
    "pcam": PromptSet(("normal lymph node", "lymph node metastasis"), (THIS_IS, PRESENTED)),
    "lc25000_lung": PromptSet(
        ("lung adenocarcinomas", "normal lung tissue", "lung squamous cell carcinomas"), (THIS_IS, PRESENTED)
    ),
    "lc25000_colon": PromptSet(("colon adenocarcinomas", "normal colonic tissue"), (PRESENTED, A_PHOTO)),
    "tcga_til": PromptSet(("none", "tumor infiltrating lymphocytes"), (PRESENTED, A_PHOTO)),
    "rsna_pneumonia": PromptSet(("normal lung", "pneumonia"), (PRESENTED, A_PHOTO)),
}

# DEFAULT_TEMPLATES (the three above) is used for datasets the paper does not cover when no YAML is given.


def load_prompt_set(path: str | Path) -> PromptSet:
    """Read ``{classnames: [...], templates: [...]}`` from YAML; templates default to the three paper templates."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"cannot read prompt file {path}: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("classnames"), list):
        raise InputError(f"{path}: expected a mapping with a 'classnames' list (and optional 'templates')")
    templates = data.get("templates") or list(DEFAULT_TEMPLATES)
    try:
        return PromptSet(tuple(map(str, data["classnames"])), tuple(map(str, templates)))
    except ValueError as error:
        raise InputError(f"{path}: {error}") from error
