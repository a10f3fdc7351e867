import json

import pytest
import torch

from biomedclip.model import UnsafeCheckpointError, create_model_and_transforms, get_tokenizer, save_pretrained


def _embeddings(model, tokenizer):
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        return model.encode_image(pixels), model.encode_text(tokenizer(["kidney biopsy", "x"]))


def test_save_pretrained_round_trip(tiny, tmp_path):
    model, _, _, tokenizer = tiny
    save_pretrained(model, tokenizer, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"open_clip_config.json", "model.safetensors", "open_clip_pytorch_model.bin", "tokenizer.json"} <= names
    config = json.loads((tmp_path / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["context_length"] == 64
    for name in (f"local-dir:{tmp_path}", str(tmp_path), str(tmp_path / "open_clip_pytorch_model.bin")):
        loaded, _, _ = create_model_and_transforms(name)
        for a, b in zip(_embeddings(model, tokenizer), _embeddings(loaded, get_tokenizer(name)), strict=True):
            assert torch.equal(a, b)


def test_pickled_code_is_refused(tiny, tmp_path):
    model, _, _, tokenizer = tiny
    save_pretrained(model, tokenizer, tmp_path, bin_copy=False)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"state_dict": model.state_dict(), "hook": _Evil()}, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        create_model_and_transforms(str(tmp_path))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))
