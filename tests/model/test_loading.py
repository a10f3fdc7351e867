"""Loading strings and tolerance of old checkpoints, against a hub cache made by the test (never the network)."""

import json

import pytest
import torch

from biomedclip.model import create_model_and_transforms, get_tokenizer, save_pretrained


def _same_embeddings(a, b, tokenizer) -> bool:
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, a.image_size, a.image_size)
    ids = tokenizer(["renal biopsy, PAS stain", "MRI"])
    with torch.no_grad():
        return torch.equal(a.encode_image(pixels), b.encode_image(pixels)) and torch.equal(
            a.encode_text(ids), b.encode_text(ids)
        )


@pytest.fixture
def tiny_folder(tiny, tmp_path):
    model, _, _, tokenizer = tiny
    return save_pretrained(model, tokenizer, tmp_path / "tiny-bundle")


@pytest.mark.parametrize("name", ["hf-hub:test-org/tiny-biomedclip", "test-org/tiny-biomedclip"])
def test_hub_repo_with_and_without_prefix(tiny, tiny_folder, hub_cache, name):
    files = {  # like the release: .bin weights
        str(p.relative_to(tiny_folder)): p
        for p in tiny_folder.rglob("*")
        if p.is_file() and p.name != "model.safetensors"
    }
    hub_cache.add("test-org/tiny-biomedclip", files)
    loaded, _, _ = create_model_and_transforms(name)
    tokenizer = get_tokenizer(name)
    assert tokenizer.vocab_size == tiny[3].vocab_size
    assert _same_embeddings(tiny[0], loaded, tokenizer)


def test_hub_download_over_http_then_offline_from_cache(tiny, tiny_folder, local_hub, monkeypatch):
    local_hub.repos["test-org/tiny-biomedclip"] = tiny_folder
    loaded, _, _ = create_model_and_transforms("hf-hub:test-org/tiny-biomedclip")
    assert _same_embeddings(tiny[0], loaded, get_tokenizer("hf-hub:test-org/tiny-biomedclip"))
    assert any("model.safetensors" in r for r in local_hub.requests)

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # now served from the cache filled above
    local_hub.repos.clear()
    assert _same_embeddings(tiny[0], create_model_and_transforms("test-org/tiny-biomedclip")[0], tiny[3])


def test_hub_repo_missing_offline_says_so(hub_cache):
    with pytest.raises(FileNotFoundError, match=r"open_clip_config\.json"):
        create_model_and_transforms("hf-hub:test-org/not-cached")


def test_old_config_keys_and_stale_position_ids(tiny, tiny_folder):
    config_path = tiny_folder / "open_clip_config.json"
    config = json.loads(config_path.read_text())
    text = config["model_cfg"]["text_cfg"]
    text["proj"] = text.pop("hf_proj_type")
    text["pooler_type"] = text.pop("hf_pooler_type")
    config_path.write_text(json.dumps(config))
    (tiny_folder / "model.safetensors").unlink()
    state = tiny[0].state_dict()
    state["text.transformer.embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    torch.save(state, tiny_folder / "open_clip_pytorch_model.bin")
    loaded, _, _ = create_model_and_transforms(f"local-dir:{tiny_folder}")
    assert isinstance(loaded.text.proj, torch.nn.Sequential)  # 'proj': 'mlp' was honoured
    assert _same_embeddings(tiny[0], loaded, tiny[3])


def test_mismatched_checkpoint_names_the_keys(tiny_folder):
    with pytest.raises(ValueError, match="missing"):
        create_model_and_transforms("small", pretrained=str(tiny_folder / "model.safetensors"))


def test_pretrained_argument_and_config_file(tiny, tiny_folder, tmp_path):
    loaded, _, _ = create_model_and_transforms("tiny", pretrained=str(tiny_folder / "model.safetensors"))
    assert _same_embeddings(tiny[0], loaded, tiny[3])
    config_only = tmp_path / "config.json"
    config_only.write_text((tiny_folder / "open_clip_config.json").read_text())
    random_init, _, _ = create_model_and_transforms(str(config_only))
    assert random_init.embed_dim == tiny[0].embed_dim


def test_base_tokenizer_offline_fails_with_advice(hub_cache):
    with pytest.raises(FileNotFoundError, match="train-tokenizer"):
        get_tokenizer("biomedclip-base")
