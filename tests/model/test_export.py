"""``biomedclip model export``: an open_clip folder that open_clip loads with identical embeddings, and ONNX
encoders that match PyTorch under onnxruntime."""

import json

import numpy as np
import pytest
import torch

from biomedclip.model import create_model_and_transforms, get_tokenizer, save_pretrained
from biomedclip.model.export import export_open_clip

TINY_BERT = {
    "model_type": "bert", "vocab_size": 2034, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 128, "max_position_embeddings": 64, "type_vocab_size": 2, "pad_token_id": 0,
}  # fmt: skip


@pytest.fixture
def open_clip_buildable(hub_cache, tmp_path):
    """A small model open_clip can build too: plain timm ViT-Ti/16, BERT config from the (test) hub cache."""
    hub_cache.add("test-org/tiny-bert", {"config.json": json.dumps(TINY_BERT)})
    config = {
        "model_cfg": {
            "embed_dim": 64,
            "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_pool": "", "timm_proj": "linear"},
            "text_cfg": {
                "hf_model_name": "test-org/tiny-bert",
                "hf_tokenizer_name": "builtin:pmc-fixtures-wordpiece",
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": 64,
            },
        }
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model, _, _ = create_model_and_transforms(str(tmp_path / "config.json"))
    return save_pretrained(model, get_tokenizer("tiny"), tmp_path / "bundle")


def _inputs(model, tokenizer):
    torch.manual_seed(1)
    return torch.randn(3, 3, model.image_size, model.image_size), tokenizer(["a", "lung CT, axial", "x " * 99])


@pytest.mark.slow
def test_export_open_clip_loads_in_open_clip(open_clip_buildable, tmp_path, model_cli):
    import open_clip

    out = tmp_path / "open_clip"
    assert "exported" in model_cli("export", open_clip_buildable, "--format", "open_clip", "--out", out).output
    theirs, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    their_tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    ours, _, _ = create_model_and_transforms(f"local-dir:{out}")
    tokenizer = get_tokenizer(f"local-dir:{out}")
    pixels, ids = _inputs(ours, tokenizer)
    assert torch.equal(their_tokenizer(["a", "lung CT, axial", "x " * 99]), ids)
    theirs.eval()
    with torch.no_grad():
        assert (theirs.encode_image(pixels) - ours.encode_image(pixels)).abs().max() < 1e-5
        assert (theirs.encode_text(ids) - ours.encode_text(ids)).abs().max() < 1e-5


def test_export_open_clip_refuses_what_open_clip_cannot_build(tiny, tmp_path):
    model, _, _, tokenizer = tiny
    with pytest.raises(ValueError, match="timm arguments"):
        export_open_clip(model, tokenizer, tmp_path)


def test_export_onnx_matches_pytorch(tiny, tmp_path, model_cli):
    import onnxruntime as ort

    model, _, _, tokenizer = tiny
    bundle = save_pretrained(model, tokenizer, tmp_path / "bundle", bin_copy=False)
    out = tmp_path / "onnx"
    model_cli("export", bundle, "--format", "onnx", "--out", out)
    meta = json.loads((out / "onnx_config.json").read_text())
    assert (meta["image_size"], meta["context_length"]) == (64, 64)
    pixels, ids = _inputs(model, tokenizer)
    with torch.no_grad():
        image, text = model.encode_image(pixels).numpy(), model.encode_text(ids).numpy()
    image_session = ort.InferenceSession(str(out / "image_encoder.onnx"))
    text_session = ort.InferenceSession(str(out / "text_encoder.onnx"))
    assert np.abs(image_session.run(None, {"pixels": pixels.numpy()})[0] - image).max() < 1e-4
    assert np.abs(text_session.run(None, {"token_ids": ids.numpy()})[0] - text).max() < 1e-4
