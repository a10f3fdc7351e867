"""Class folder names -> the class text that captions and zero-shot prompts use (``--class-names names.yaml``).

``names.yaml`` maps folder names to text, e.g. ``notumor: no tumor`` or ``1_pneumonia: pneumonia``. A folder the
map does not name reads as its name with ``_`` and ``-`` as spaces (``pleural_effusion`` -> ``pleural
effusion``). The corpus caption template of ``imagefolder:`` sources and the zero-shot prompts of ``eval`` and
of the in-training evaluation use the same text, so a model is asked at test time in the words it was trained on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from biomedclip.errors import InputError


def readable_class(folder_name: str) -> str:
    """A folder name as text: ``_`` and ``-`` read as spaces, runs of spaces collapsed."""
    return " ".join(folder_name.replace("_", " ").replace("-", " ").split())


def load_class_names(path: str | Path) -> dict[str, str]:
    """Read a ``folder: text`` YAML mapping; raises InputError naming the file when it is not one."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"cannot read class names {path}: {error}") from error
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: expected a mapping of class folder names to class text (notumor: no tumor)")
    names = {str(key): str(value).strip() for key, value in data.items() if value is not None}
    empty = sorted(str(key) for key, value in data.items() if value is None or not str(value).strip())
    if empty:
        raise InputError(f"{path}: no class text for {', '.join(empty)}")
    return names


def class_texts(folders: Iterable[str], names: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The class text of each folder name: the map's text, else :func:`readable_class`.

    Raises:
        InputError: the map names folders that are not among ``folders`` (a map for another dataset, or a typo).
    """
    folders = list(folders)
    names = names or {}
    unknown = sorted(set(names) - set(folders))
    if unknown:
        raise InputError(f"class names given for {', '.join(unknown)}, which are not classes here: {folders}")
    return tuple(names.get(folder, readable_class(folder)) for folder in folders)
