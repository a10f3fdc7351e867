"""Resolve a model string to a config, a weight file and a tokenizer folder, in one place.

Accepted strings:
  * ``tiny``, ``biomedclip-base`` ...     a built-in architecture (random weights: for training, not inference)
  * ``hf-hub:ORG/NAME``                   an open_clip repo on the Hugging Face hub (or its local cache)
  * ``ORG/NAME``                          the same, when no local path or built-in name matches
  * ``local-dir:PATH`` or ``PATH``        a folder in open_clip layout (config + weights + tokenizer)
  * ``PATH/file.safetensors|.bin|.pt``    a weight file, its config read from ``open_clip_config.json`` beside it
  * ``PATH/config.json``                  a config file (random weights)
"""

from __future__ import annotations

import functools
import re
import socket
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from biomedclip.errors import InputError
from biomedclip.model.checkpoint import CONFIG_NAME, WEIGHT_NAMES, find_weights, moved_bundle_paths
from biomedclip.model.config import (
    RELEASED_CHECKPOINT,
    ModelConfig,
    get_model_config,
    list_models,
    load_config_file,
)
from biomedclip.model.tokenizer import TOKENIZER_FILES, has_tokenizer_files

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
BUILTIN_PREFIX = "builtin:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

PROBE_TIMEOUT_S = 2.0
BUNDLE_ADVICE = (
    "To use it without network, bundle the model once on a machine that has network: "
    "`biomedclip model export -m MODEL --format open_clip -o DIR` (save_pretrained writes config, weights, "
    "text-tower config and tokenizer into DIR), copy DIR over and load 'local-dir:DIR'."
)


def list_pretrained() -> list[str]:
    """Model strings with trained weights (timm's ``list_pretrained``); :func:`list_models` lists architectures."""
    return [RELEASED_CHECKPOINT]


class UntrainedModelWarning(UserWarning):
    """A registry architecture (random weights) was loaded for inference."""


class MovedBundleWarning(UserWarning):
    """A bundle's open_clip config names tower configs of the folder it was written to, not of where it is now."""


@dataclass
class Resolved:
    """What a model string points at."""

    config: ModelConfig
    weights: Path | None
    tokenizer_dir: Path | None
    source: str


def resolve(name: str, cache_dir: str | None = None) -> Resolved:
    """Resolve ``name`` (see the module docstring); raises ``InputError`` (a ``ValueError``) with the accepted
    forms. The text tower's architecture may still be missing: see :func:`text_configs.with_text_architecture`."""
    if name.startswith(HF_HUB_PREFIX):
        return _from_hub(name.removeprefix(HF_HUB_PREFIX), cache_dir)
    if name.startswith(LOCAL_DIR_PREFIX):
        folder = Path(name.removeprefix(LOCAL_DIR_PREFIX)).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"local-dir not found: {folder}")
        return _from_folder(folder)
    if name in list_models():
        return Resolved(get_model_config(name), None, None, name)
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        if path.suffix == ".json":
            return Resolved(load_config_file(path), None, None, str(path))
        config_path = path.parent / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"{path}: no {CONFIG_NAME} beside the weight file to say which model it is")
        tokenizer_dir = path.parent if has_tokenizer_files(path.parent) else None
        return Resolved(load_config_file(config_path), path, tokenizer_dir, str(path))
    if _REPO_ID.match(name):
        return _from_hub(name, cache_dir)
    raise InputError(
        f"unknown model {name!r}: use one of {', '.join(list_models())}, 'hf-hub:ORG/NAME', "
        "'local-dir:PATH', a folder in open_clip layout or a weight file"
    )


def _from_folder(folder: Path) -> Resolved:
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME} (not an open_clip model folder)")
    weights = find_weights(folder)
    if weights is None:
        raise FileNotFoundError(f"{folder} has no weights (looked for {', '.join(WEIGHT_NAMES)})")
    tokenizer_dir = folder if has_tokenizer_files(folder) else None
    stale = moved_bundle_paths(folder)
    if stale:
        warnings.warn(
            f"{folder} was moved after it was written: open_clip would look for its tower configs in "
            f"{', '.join(stale)}; biomedclip loads it as is. For open_clip, rewrite it in place: "
            f"`biomedclip model export -m local-dir:{folder} --format open_clip -o {folder}`",
            MovedBundleWarning,
            stacklevel=3,
        )
    return Resolved(load_config_file(config_path), weights, tokenizer_dir, f"{LOCAL_DIR_PREFIX}{folder}")


@functools.lru_cache(maxsize=8)
def _reachable(endpoint: str) -> bool:
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def hub_online() -> bool:
    """False in offline mode or when the hub endpoint does not accept a connection within 2 s: then no request
    is sent at all (huggingface_hub would retry each one for about 25 s before giving up)."""
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and _reachable(constants.ENDPOINT)


class _HubReader:
    """Fetches files of one hub repo: from the local cache first, then from the hub when it is reachable, and
    stops going online after the first network failure."""

    def __init__(self, repo_id: str, cache_dir: str | None) -> None:
        self.repo_id, self.cache_dir, self.online = repo_id, cache_dir, None

    def get(self, filename: str) -> Path | None:
        """The local path of ``filename``, or ``None`` when the repo (or the cache, offline) lacks it."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(self.repo_id, filename, cache_dir=self.cache_dir, local_files_only=True))
        except EntryNotFoundError:
            pass
        if self.online is None:
            self.online = hub_online()
        if not self.online:
            return None
        try:
            return Path(hf_hub_download(self.repo_id, filename, cache_dir=self.cache_dir))
        except LocalEntryNotFoundError:  # offline mode or no connection: not in the cache either
            self.online = False
            return None
        except EntryNotFoundError:  # the repo has no such file
            return None


def _from_hub(repo_id: str, cache_dir: str | None) -> Resolved:
    hub = _HubReader(repo_id, cache_dir)
    config_path = hub.get(CONFIG_NAME)
    if config_path is None:
        where = "on the hub or in the local hub cache" if hub.online else "in the local hub cache (hub unreachable)"
        raise FileNotFoundError(f"hf-hub:{repo_id}: {CONFIG_NAME} not found {where}. {BUNDLE_ADVICE}")
    weights = next((p for n in WEIGHT_NAMES if (p := hub.get(n)) is not None), None)
    if weights is None:
        raise FileNotFoundError(f"hf-hub:{repo_id} has no weights (looked for {', '.join(WEIGHT_NAMES)})")
    tokenizer_files = [p for n in TOKENIZER_FILES if (p := hub.get(n)) is not None]
    tokenizer_dir = config_path.parent if has_tokenizer_files(config_path.parent) and tokenizer_files else None
    return Resolved(load_config_file(config_path), weights, tokenizer_dir, f"{HF_HUB_PREFIX}{repo_id}")


def builtin_tokenizer_dir(name: str) -> Path:
    """The folder of a vocabulary shipped in the package (``builtin:NAME``)."""
    folder = Path(str(resources.files("biomedclip.model") / "vocab" / name))
    if not has_tokenizer_files(folder):
        raise FileNotFoundError(f"no built-in vocabulary {name!r}")
    return folder


def tokenizer_dir_for(config: ModelConfig, cache_dir: str | None = None) -> Path:
    """Where the tokenizer named by ``text_cfg.hf_tokenizer_name`` lives: built in, a local folder, or a hub
    repo (downloaded, or read from the hub cache when offline)."""
    name = config.text.hf_tokenizer_name
    if name.startswith(BUILTIN_PREFIX):
        return builtin_tokenizer_dir(name.removeprefix(BUILTIN_PREFIX))
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    advice = f"{BUNDLE_ADVICE} Or train a vocabulary with `biomedclip model train-tokenizer`."
    try:
        hub = _HubReader(name, cache_dir)
        found = [p for n in TOKENIZER_FILES if (p := hub.get(n)) is not None]
    except Exception as err:  # unknown repo, no network, offline mode: all end in the same advice
        raise FileNotFoundError(f"tokenizer {name!r} is not available ({type(err).__name__}: {err}). {advice}") from err
    if not found:
        raise FileNotFoundError(
            f"tokenizer {name!r}: no {' / '.join(TOKENIZER_FILES[:2])} on the hub or in its local cache. {advice}"
        )
    return found[0].parent


def hub_config_dir(repo_id: str, cache_dir: str | None = None) -> Path:
    """The folder holding ``config.json`` of a HF model repo (cache first, the hub only when reachable)."""
    path = _HubReader(repo_id, cache_dir).get("config.json")
    if path is None:
        raise FileNotFoundError(
            f"config.json of the text tower {repo_id!r} is not in the local hub cache and the hub is not reachable. "
            + BUNDLE_ADVICE
        )
    return path.parent
