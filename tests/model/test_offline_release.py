"""Offline loading of the released layout (open_clip_config.json + open_clip_pytorch_model.bin + tokenizer files, no
BERT config.json) with an empty hub cache and the hub unreachable; clear, immediate errors when a file is missing."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from biomedclip.model import create_model_and_transforms, get_model_config, get_tokenizer, save_pretrained
from biomedclip.model.text_configs import KNOWN_TEXT_CONFIGS, text_config_from_shapes


def _released_layout(model, tokenizer, folder, hf_model_name: str):
    """``folder`` laid out like the hub release: config without any BERT config, .bin weights, tokenizer files."""
    tokenizer.save(folder)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    config = model.config.to_json_dict()
    del config["biomedclip"]["hf_model_config"]
    config["model_cfg"]["text_cfg"]["hf_model_name"] = hf_model_name
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    assert sorted(p.name for p in folder.iterdir()) == [
        "open_clip_config.json", "open_clip_pytorch_model.bin", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json", "vocab.txt",
    ]  # fmt: skip
    return folder


@pytest.mark.parametrize("name", ["tiny", "small", "biomedclip-base"])
def test_text_architecture_from_tensor_shapes(name):
    """The shapes of a BERT built from each registry config give back that config (heads = width / 64)."""
    from transformers import AutoConfig, AutoModel

    hf_config = dict(get_model_config(name).text.hf_model_config)
    reference = AutoConfig.for_model(hf_config.pop("model_type"), **hf_config)
    with torch.device("meta"):
        bert = AutoModel.from_config(reference, add_pooling_layer=False)
    shapes = {f"text.transformer.{k}": tuple(v.shape) for k, v in bert.state_dict().items()}
    derived = text_config_from_shapes(shapes)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size"):  # fmt: skip
        assert derived[key] == getattr(reference, key), key


@pytest.mark.parametrize("where", ["local-dir", "hub-cache"])
def test_unknown_text_tower_loads_from_weight_shapes_without_going_online(
    tiny, tmp_path, hub_cache, cut_network, where
):
    model, _, _, tokenizer = tiny
    folder = _released_layout(model, tokenizer, tmp_path / "release", "test-org/unpublished-bert")
    if where == "hub-cache":
        hub_cache.add("test-org/tiny-release", {p.name: p for p in folder.iterdir()})
        calls = cut_network(keep_cache=True)  # offline mode off, hub unreachable: the cache must do
        name = "hf-hub:test-org/tiny-release"
    else:
        calls = cut_network()
        name = f"local-dir:{folder}"
    loaded, _, _ = create_model_and_transforms(name)
    ids = get_tokenizer(name)(["renal biopsy, PAS stain", "MRI"])
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))
        assert torch.equal(loaded.encode_image(pixels), model.encode_image(pixels))
    assert all(call.get("local_files_only") for call in calls)  # never asked the hub
    if where == "local-dir":
        assert calls == []


@pytest.mark.parametrize("name", sorted(KNOWN_TEXT_CONFIGS))
def test_known_bert_names_build_offline(name, tmp_path, cut_network):
    """A config naming PubMedBERT/BiomedBERT (old or new name, abstract or fulltext) builds with no config.json."""
    config = json.loads(json.dumps(get_model_config("tiny").to_json_dict()))
    del config["biomedclip"]["hf_model_config"]
    config["model_cfg"]["text_cfg"]["hf_model_name"] = name
    (tmp_path / "config.json").write_text(json.dumps(config))
    calls = cut_network()
    from biomedclip.model.pretrained import resolve
    from biomedclip.model.text_configs import with_text_architecture
    from biomedclip.model.towers import build_hf_config

    config = with_text_architecture(resolve(str(tmp_path / "config.json")).config, None)  # as create_model does
    bert = build_hf_config(config.text)  # what the text tower is built from
    assert (bert.vocab_size, bert.hidden_size, bert.num_hidden_layers, bert.num_attention_heads) == (30522, 768, 12, 12)
    assert calls == []


def test_missing_config_fails_at_once_naming_the_file(cut_network):
    calls = cut_network()
    with pytest.raises(FileNotFoundError, match=r"open_clip_config\.json.*save_pretrained"):
        create_model_and_transforms("hf-hub:test-org/not-here")
    assert calls and all(call.get("local_files_only") for call in calls)  # the cache was read, the hub never asked


def test_missing_text_tower_config_fails_at_once_naming_the_file(tmp_path, cut_network):
    config = get_model_config("tiny").to_json_dict()
    del config["biomedclip"]["hf_model_config"]
    config["model_cfg"]["text_cfg"]["hf_model_name"] = "test-org/unpublished-bert"
    (tmp_path / "config.json").write_text(json.dumps(config))
    calls = cut_network()
    with pytest.raises(FileNotFoundError, match=r"config\.json of the text tower 'test-org/unpublished-bert'.*bundle"):
        create_model_and_transforms(str(tmp_path / "config.json"))
    assert calls and all(call.get("local_files_only") for call in calls)


def test_load_defaults_to_the_released_checkpoint(cut_network):
    import biomedclip

    calls = cut_network()
    with pytest.raises(FileNotFoundError, match="BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"):
        biomedclip.load(device="cpu")
    assert calls[0]["args"][0] == "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


def test_registry_architecture_warns_when_used_for_inference(tiny):
    from biomedclip.model.inference import load
    from biomedclip.model.pretrained import UntrainedModelWarning

    with pytest.warns(UntrainedModelWarning, match="untrained architecture"):
        load("tiny", device="cpu")


def test_trained_folder_loads_without_warning(tiny, tmp_path):
    from biomedclip.model.inference import load

    model, _, _, tokenizer = tiny
    folder = save_pretrained(model, tokenizer, tmp_path / "trained", bin_copy=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(f"local-dir:{folder}", device="cpu")
