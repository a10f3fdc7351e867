"""``model export --format transformers``: transformers' own classes (ViTModel, ELECTRA, CLIPImageProcessor,
AutoTokenizer) load the export offline, with no custom code, and give our embeddings, tokens and pixels."""

import json

import pytest
import torch
from PIL import Image

from biomedclip.model import create_model, create_model_and_transforms, get_tokenizer, save_pretrained
from biomedclip.model.export_transformers import TowerNotExportable, export_transformers

CAPTIONS = ["a", "lung CT, axial", "H&E stain of lung tissue", "x " * 300]


def _perturbed(name: str, **overrides):
    """A registry model with every weight (biases, norms, projections) moved off its initial value, so that a
    swapped or transposed weight in the mapping changes the output."""
    torch.manual_seed(7)
    model = create_model(name, **overrides)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def _image(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 7) % 256, (y * 3) % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    return image


def _assert_embeddings_match(model, out, ids):
    from transformers import AutoModel, AutoModelForSequenceClassification

    vision = AutoModel.from_pretrained(out / "vision").eval()
    text = AutoModelForSequenceClassification.from_pretrained(out / "text").eval()
    assert (type(vision).__name__, type(text).__name__) == ("ViTModel", "ElectraForSequenceClassification")
    torch.manual_seed(3)
    pixels = torch.randn(3, 3, model.image_size, model.image_size)
    with torch.no_grad():
        theirs = vision(pixel_values=pixels, output_hidden_states=True)
        assert (theirs.pooler_output - model.encode_image(pixels)).abs().max() < 1e-4
        assert len(theirs.hidden_states) == len(model.visual.trunk.blocks) + 1  # what a LLaVA stack picks from
        text_embedding = text(input_ids=ids, attention_mask=(ids != 0).long()).logits
        assert (text_embedding - model.encode_text(ids)).abs().max() < 1e-4


def test_transformers_export_of_a_trained_tiny_model_loads_offline_and_matches(tmp_path, model_cli, cut_network):
    from transformers import AutoImageProcessor, AutoTokenizer

    model = _perturbed("tiny")
    tokenizer = get_tokenizer("tiny")
    bundle = save_pretrained(model, tokenizer, tmp_path / "final", bin_copy=False)
    out = tmp_path / "hf"
    result = model_cli("export", "-m", f"local-dir:{bundle}", "--format", "transformers", "-o", out)
    assert "pooler_output = image embedding" in result.output
    calls = cut_network()
    ids = tokenizer(CAPTIONS)
    _assert_embeddings_match(model, out, ids)
    hf_tokenizer = AutoTokenizer.from_pretrained(out / "text")
    encoded = hf_tokenizer(CAPTIONS, padding="max_length", truncation=True, return_tensors="pt")
    assert torch.equal(encoded["input_ids"], ids)
    processor = AutoImageProcessor.from_pretrained(out / "vision")
    _, _, eval_tf = create_model_and_transforms(f"local-dir:{bundle}")
    for width, height in ((150, 97), (97, 150), (64, 64), (301, 333)):
        image = _image(width, height)
        pixels = processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert (pixels - eval_tf(image)).abs().max() < 1e-5, (width, height)
    manifest = json.loads((out / "biomedclip_transformers.json").read_text())
    assert manifest["embed_dim"] == 128 and abs(manifest["logit_scale"] - model.logit_scale.exp().item()) < 1e-6
    assert calls == []


@pytest.mark.slow
def test_transformers_export_of_the_vit_b_bert_base_architecture_matches(tmp_path):
    """The released architecture's shapes (ViT-B/16, 12-layer BERT, MLP 768 -> 640 -> 512)."""
    model = _perturbed("biomedclip-base")
    out = export_transformers(model, None, tmp_path / "hf")
    ids = torch.randint(5, 1000, (2, 40))
    ids[:, 0], ids[1, 20:] = 2, 0
    _assert_embeddings_match(model, out, ids)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"text": {"hf_pooler_type": "mean_pooler"}}, "mean_pooler"),
        ({"text": {"hf_proj_type": "linear"}}, "mlp"),
        ({"vision": {"timm_pool": "avg"}}, "pooling 'avg'"),
    ],
)
def test_a_tower_transformers_cannot_hold_is_refused_before_writing(overrides, named, tmp_path, model_cli):
    model = create_model("tiny", **overrides)
    bundle = save_pretrained(model, get_tokenizer("tiny"), tmp_path / "bundle", bin_copy=False)
    with pytest.raises(TowerNotExportable, match=named):
        export_transformers(model, None, tmp_path / "direct")
    assert not (tmp_path / "direct").exists()
    out = tmp_path / "hf"
    result = model_cli("export", "-m", bundle, "--format", "transformers", "-o", out, expect_ok=False)
    assert result.exit_code == 2 and named in result.output and not out.exists()
