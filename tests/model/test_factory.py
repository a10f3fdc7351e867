import pytest
import torch
from PIL import Image

from biomedclip.model import create_model_and_transforms, get_model_config, get_tokenizer, list_models


def test_registry_lists_the_paper_and_demo_models():
    assert {"biomedclip-base", "biomedclip-384", "tiny", "small"} <= set(list_models())
    base = get_model_config("biomedclip-base")
    assert (base.embed_dim, base.text.context_length, base.vision.image_size) == (512, 256, 224)
    assert get_model_config("biomedclip-384").vision.timm_model_name == "vit_base_patch16_384"


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="biomedclip-base"):
        create_model_and_transforms("no-such-model")


def test_tiny_forward_matches_open_clip_contract(tiny):
    model, train_tf, eval_tf, tokenizer = tiny
    image = Image.new("RGB", (120, 90), (200, 30, 60))
    pixels = torch.stack([eval_tf(image), train_tf(image)])
    assert pixels.shape == (2, 3, model.image_size, model.image_size) and pixels.dtype == torch.float32
    ids = tokenizer(["Axial CT of the chest.", "H&E stained section, x40."])
    assert ids.shape == (2, model.context_length) and ids.dtype == torch.long
    with torch.no_grad():
        image_features, text_features, scale = model(pixels, ids)
        raw = model.encode_image(pixels)
    assert image_features.shape == text_features.shape == (2, model.embed_dim)
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(image_features, raw / raw.norm(dim=-1, keepdim=True), atol=1e-6)
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert isinstance(model.logit_scale, torch.nn.Parameter)


def test_output_dict_and_single_tower():
    model, _, _ = create_model_and_transforms("tiny", output_dict=True)
    ids = get_tokenizer("tiny")(["a"])
    with torch.no_grad():
        out = model(text=ids)
    assert out["image_features"] is None and out["text_features"].shape == (1, model.embed_dim)


def test_padding_trim_does_not_change_text_embeddings(tiny):
    model, _, _, tokenizer = tiny
    ids = tokenizer(["short caption", "a somewhat longer caption of a microscopy figure"])
    with torch.no_grad():
        batched = model.encode_text(ids)
        one_by_one = torch.cat([model.encode_text(ids[i : i + 1]) for i in range(2)])
    assert torch.allclose(batched, one_by_one, atol=1e-5)


def test_overrides_change_the_config():
    model, _, _ = create_model_and_transforms("tiny", embed_dim=64, text={"context_length": 32})
    assert model.embed_dim == 64 and model.context_length == 32
    with pytest.raises(TypeError, match="unknown model overrides"):
        create_model_and_transforms("tiny", widht=3)
