"""Where a run's towers start: ``model.pretrained_text`` and ``model.pretrained_image`` resolved to local files.

The paper starts the text tower from PubMedBERT (``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``) and the
image tower from an ImageNet-pretrained ViT-B/16; :func:`biomedclip.model.create_model` takes a local BERT folder
and a timm weight file, so hub names are resolved here first (from the Hugging Face cache when offline).

- ``pretrained_text``: a local HF model folder (``config.json`` + weights + vocabulary), or a hub name ``ORG/NAME``.
- ``pretrained_image``: a weight file (``.safetensors``, ``.pth``, ``.bin``), ``hf-hub:ORG/NAME`` (a timm repo), or
  a timm model name with an optional tag (``vit_base_patch16_224``, ``vit_base_patch16_224.augreg2_in21k_ft_in1k``).
"""

from __future__ import annotations

from pathlib import Path

from biomedclip.errors import InputError

TEXT_FILES = ["config.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer*.json", "special_tokens*"]
IMAGE_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_text_folder(spec: str, cache_dir: str | None = None) -> Path:
    """A local HF folder for ``pretrained_text``: the folder itself, or the hub snapshot of ``ORG/NAME``."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise InputError(f"model.pretrained_text: {folder} is not a HF model folder (no config.json)")
        return folder
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise InputError(f"model.pretrained_text: {spec} is neither a folder nor a hub name ORG/NAME")
    return _snapshot(spec, TEXT_FILES, cache_dir, "model.pretrained_text")


def resolve_image_weights(spec: str, cache_dir: str | None = None) -> Path:
    """A local timm weight file for ``pretrained_image`` (see the module docstring for the forms)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if spec.startswith("hf-hub:"):
        repo = spec.removeprefix("hf-hub:")
    else:
        import timm

        name = spec.split(".", 1)[0]
        if name not in timm.list_models() or "/" in spec or path.suffix in (".safetensors", ".pth", ".bin", ".pt"):
            raise InputError(f"model.pretrained_image: {spec} is neither a weight file nor a timm model name")
        config = timm.models.get_pretrained_cfg(spec)
        repo = getattr(config, "hf_hub_id", None) if config is not None else None
        if not repo:
            raise InputError(f"model.pretrained_image: timm has no downloadable weights for {spec}")
    folder = _snapshot(repo, list(IMAGE_FILES), cache_dir, "model.pretrained_image")
    for name in IMAGE_FILES:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"model.pretrained_image: {repo} has none of {', '.join(IMAGE_FILES)}")


def _snapshot(repo: str, patterns: list[str], cache_dir: str | None, key: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=patterns, cache_dir=cache_dir))
    except Exception as error:  # offline, unknown repo, gated repo: all end the same way for the user
        raise InputError(
            f"{key}: cannot fetch {repo} from the Hugging Face hub ({type(error).__name__}); without network, "
            "download it once elsewhere (huggingface-cli download REPO --local-dir DIR) and give the folder or file"
        ) from error
