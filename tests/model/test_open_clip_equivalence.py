"""The full-size model against open_clip's own, built from the released config with random weights, laid out
exactly as the hub release (config + .bin + tokenizer files, no BERT config.json) and loaded with an empty hub
cache and the hub unreachable."""

import json

import pytest
import torch

from biomedclip.model import create_model_and_transforms, get_tokenizer

# open_clip_config.json of microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 (as released).
RELEASED_CONFIG = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {
            "timm_model_name": "vit_base_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
            "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
    },
}


@pytest.mark.slow
def test_released_layout_gives_open_clip_embeddings(biomedbert_in_cache, tmp_path, cut_network):
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    from biomedclip.model.pretrained import builtin_tokenizer_dir

    folder = tmp_path / "released"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(RELEASED_CONFIG))
    torch.manual_seed(0)
    reference, _, their_eval = open_clip.create_model_and_transforms(  # needs BiomedBERT's config from the cache
        f"local-dir:{folder}", load_weights=False, pretrained_text=False
    )
    reference.eval()
    state = reference.state_dict()
    state["text.transformer.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)  # as in the release
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((builtin_tokenizer_dir("pmc-fixtures-wordpiece") / name).read_bytes())

    calls = cut_network()  # from here on: empty hub cache, hub unreachable
    model, _, eval_tf = create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = get_tokenizer(f"local-dir:{folder}")
    assert calls == []
    captions = ["H&amp;E stain of the “liver”", "Ｘ-ray of the chest", "x " * 300]
    assert torch.equal(tokenizer(captions), HFTokenizer(str(folder), context_length=256)(captions))
    assert set(model.state_dict()) == set(reference.state_dict())
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(196e6, rel=0.01)

    pixels = torch.randn(2, 3, 224, 224)
    ids = torch.zeros(2, 256, dtype=torch.long)
    ids[0, :40] = torch.randint(5, 30522, (40,))
    ids[1, :9] = torch.randint(5, 30522, (9,))
    ids[:, 0] = 2
    with torch.no_grad():
        for ours, theirs in ((model.encode_image(pixels), reference.encode_image(pixels)),
                             (model.encode_text(ids), reference.encode_text(ids))):  # fmt: skip
            assert (ours - theirs).abs().max().item() < 1e-5
        ours_out, theirs_out = model(pixels, ids), reference(pixels, ids)
    assert torch.allclose(ours_out[2], theirs_out[2])
    from PIL import Image

    image = Image.new("RGB", (320, 240), (120, 40, 200))
    assert torch.allclose(eval_tf(image), their_eval(image))
