"""Export to transformers' own classes, loaded offline with no custom code (no ``trust_remote_code``).

No single transformers class holds both towers exactly: ``VisionTextDualEncoderModel`` projects BERT's
``pooler_output`` (a fixed tanh layer) with one linear map, while our text head is a two-layer GELU MLP on the
class token. So each tower goes to the standard class that computes it exactly:

* ``vision/``: ``ViTModel`` (timm's ViT with its weights renamed; fused ``qkv`` split) whose pooler is our
  projection with a linear activation, so ``pooler_output`` is our image embedding and ``last_hidden_state`` /
  ``hidden_states`` are what a LLaVA-style stack takes; plus ``preprocessor_config.json`` (``CLIPImageProcessor``:
  resize of the shortest side, center crop, our mean and std).
* ``text/``: ``ElectraForSequenceClassification`` with ``num_labels = embed_dim``: ELECTRA's encoder is BERT's
  (with ``embedding_size == hidden_size``) and its classification head is dense → GELU → dense on the class
  token, our MLP (zero-padded to the hidden width), so ``logits`` is our text embedding; plus the tokenizer.
* ``biomedclip_transformers.json``: embedding size, ``logit_scale`` and how to call each part.

Towers that do not map (average pooling, register tokens, layer scale, a mean or tanh text pooler, a
linear text projection) are refused with a :class:`TowerNotExportable` that names the feature.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from biomedclip.errors import InputError
from biomedclip.model.clip import BiomedCLIP

VISION_DIR = "vision"
TEXT_DIR = "text"
MANIFEST_NAME = "biomedclip_transformers.json"
_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}


class TowerNotExportable(InputError):
    """A tower uses a feature that transformers' standard classes cannot compute exactly."""


def export_transformers(model: BiomedCLIP, tokenizer, out_dir: str | Path) -> Path:
    """Write ``vision/``, ``text/`` and ``biomedclip_transformers.json`` into ``out_dir`` (see the module doc).

    Raises:
        TowerNotExportable: a tower has no exact counterpart among transformers' classes.
    """
    model = model.eval().float()
    vision = _vision_model(model)  # both checked before anything is written
    text = _text_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vision.save_pretrained(out / VISION_DIR)
    _image_processor(model).save_pretrained(out / VISION_DIR)
    text.save_pretrained(out / TEXT_DIR)
    if tokenizer is not None:
        tokenizer.save(out / TEXT_DIR)
        _set_max_length(out / TEXT_DIR, model.context_length)
    manifest = {
        "format": "biomedclip transformers export 1",
        "embed_dim": model.embed_dim,
        "image_size": model.image_size,
        "context_length": model.context_length,
        "logit_scale": model.logit_scale.exp().item(),
        "image_embedding": "AutoModel.from_pretrained(DIR/vision)(pixel_values=...).pooler_output",
        "image_processor": "AutoImageProcessor.from_pretrained(DIR/vision)",
        "text_embedding": (
            "AutoModelForSequenceClassification.from_pretrained(DIR/text)(input_ids, attention_mask).logits"
        ),
        "tokenizer": "AutoTokenizer.from_pretrained(DIR/text), padding='max_length', truncation=True",
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


_VIT_TOP = (("embeddings.patch_embeddings.projection", "patch_embed.proj"), ("layernorm", "norm"))
"""ViTModel's module names and timm's for the same weight and bias, outside the blocks ..."""
_VIT_BLOCK = (("attention.o_proj", "attn.proj"), ("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
              ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))  # fmt: skip
"""... and inside each block (q, k and v are split from timm's one qkv)."""


def _vision_model(model: BiomedCLIP):
    from timm.models.vision_transformer import VisionTransformer
    from transformers import ViTConfig, ViTModel

    trunk = model.visual.trunk
    if not isinstance(trunk, VisionTransformer):
        raise TowerNotExportable(f"image trunk {type(trunk).__name__} is not a timm ViT (only ViTs map to ViTModel)")
    _check_vit(trunk)
    proj = model.visual.head.get_submodule("proj") if hasattr(model.visual.head, "proj") else None
    if proj is None or proj.bias is not None:
        raise TowerNotExportable("the image head must be one bias-free linear projection (timm_proj 'linear')")
    block = trunk.blocks[0]
    width = trunk.embed_dim
    heads = block.attn.num_heads
    config = ViTConfig(
        hidden_size=width,
        num_hidden_layers=len(trunk.blocks),
        num_attention_heads=heads,
        intermediate_size=block.mlp.fc1.out_features,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=trunk.norm.eps,
        image_size=model.image_size,
        patch_size=trunk.patch_embed.patch_size[0],
        num_channels=3,
        qkv_bias=True,
        pooler_output_size=model.embed_dim,
        pooler_act="linear",
    )
    vit = ViTModel(config, add_pooling_layer=True).eval()
    src = trunk.state_dict()
    state = {
        "embeddings.cls_token": src["cls_token"],
        "embeddings.position_embeddings": src["pos_embed"],
        "pooler.dense.weight": proj.weight.detach(),
        "pooler.dense.bias": torch.zeros(model.embed_dim),
    }
    for param in ("weight", "bias"):  # transformers 5 names (the lock pins it; _load_exactly checks them)
        state |= {f"{vit_name}.{param}": src[f"{timm_name}.{param}"] for vit_name, timm_name in _VIT_TOP}
        for i in range(len(trunk.blocks)):
            t, h = f"blocks.{i}.", f"layers.{i}."
            state |= {f"{h}{vit_name}.{param}": src[f"{t}{timm_name}.{param}"] for vit_name, timm_name in _VIT_BLOCK}
            for name, part in zip(("q_proj", "k_proj", "v_proj"), src[f"{t}attn.qkv.{param}"].chunk(3), strict=True):
                state[f"{h}attention.{name}.{param}"] = part
    _load_exactly(vit, state)
    return vit


def _check_vit(trunk) -> None:
    block = trunk.blocks[0]
    problems = []
    if trunk.global_pool != "token" or trunk.cls_token is None:
        problems.append(f"pooling {trunk.global_pool!r} (only the class token maps to ViTModel's pooler)")
    if getattr(trunk, "num_reg_tokens", 0) or getattr(trunk, "no_embed_class", False):
        problems.append("register tokens or a class token without position embedding")
    if not isinstance(trunk.norm_pre, nn.Identity) or not isinstance(trunk.fc_norm, nn.Identity):
        problems.append("a pre-norm or fc_norm")
    for b in trunk.blocks:
        if not (isinstance(b.ls1, nn.Identity) and isinstance(b.ls2, nn.Identity)):
            problems.append("layer scale")
        if b.attn.qkv.bias is None or not isinstance(b.attn.q_norm, nn.Identity):
            problems.append("attention without qkv bias or with q/k norm")
        if not isinstance(b.mlp.act, nn.GELU) or b.mlp.act.approximate != "none":
            problems.append(f"MLP activation {b.mlp.act}")
    if trunk.patch_embed.proj.bias is None or getattr(trunk, "dynamic_img_size", False):
        problems.append("a bias-free or dynamic-size patch embedding")
    if not (hasattr(block.attn, "num_heads") and hasattr(block.mlp, "fc1")):
        problems.append("a non-standard block")
    if problems:
        raise TowerNotExportable(f"the timm ViT uses {'; '.join(sorted(set(problems)))}: ViTModel cannot hold it")


def _text_model(model: BiomedCLIP):
    from transformers import ElectraConfig, ElectraForSequenceClassification

    tower = model.text
    bert = tower.transformer
    if bert.config.model_type != "bert":
        raise TowerNotExportable(f"text encoder {bert.config.model_type!r} is not BERT")
    if tower.pooler_type != "cls_last_hidden_state_pooler":
        raise TowerNotExportable(
            f"text pooler {tower.pooler_type!r} (only the class token's last hidden state maps to ELECTRA's head)"
        )
    if not isinstance(tower.proj, nn.Sequential) or len(tower.proj) != 3:
        raise TowerNotExportable("the text projection must be open_clip's 'mlp' (linear, GELU, linear)")
    first, act, second = tower.proj
    hf = bert.config
    if first.out_features > hf.hidden_size or first.bias is not None or second.bias is not None:
        raise TowerNotExportable("the text MLP must be bias-free and no wider than the encoder")
    if not isinstance(act, nn.GELU) or act.approximate != "none" or hf.hidden_act != "gelu":
        raise TowerNotExportable("the text MLP and encoder must use exact (erf) GELU")
    config = ElectraConfig(
        vocab_size=hf.vocab_size,
        embedding_size=hf.hidden_size,
        hidden_size=hf.hidden_size,
        num_hidden_layers=hf.num_hidden_layers,
        num_attention_heads=hf.num_attention_heads,
        intermediate_size=hf.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=hf.max_position_embeddings,
        type_vocab_size=hf.type_vocab_size,
        layer_norm_eps=hf.layer_norm_eps,
        pad_token_id=hf.pad_token_id,
        num_labels=model.embed_dim,
        problem_type="regression",
        classifier_dropout=0.0,
    )
    electra = ElectraForSequenceClassification(config).eval()
    state = {f"electra.{k}": v for k, v in bert.state_dict().items() if not k.endswith("position_ids")}
    hidden, mlp_width = hf.hidden_size, first.out_features
    dense = torch.zeros(hidden, hidden)
    dense[:mlp_width] = first.weight.detach()  # padded rows give GELU(0) = 0, which the zero columns ignore
    out_proj = torch.zeros(model.embed_dim, hidden)
    out_proj[:, :mlp_width] = second.weight.detach()
    state |= {
        "classifier.dense.weight": dense,
        "classifier.dense.bias": torch.zeros(hidden),
        "classifier.out_proj.weight": out_proj,
        "classifier.out_proj.bias": torch.zeros(model.embed_dim),
    }
    _load_exactly(electra, state)
    return electra


def _load_exactly(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` and fail unless it covers every parameter (buffers such as ``position_ids`` excepted)."""
    own = {k for k, _ in module.named_parameters()}
    missing, unexpected = own - set(state), set(state) - set(module.state_dict())
    if missing or unexpected:
        raise TowerNotExportable(
            f"weight mapping incomplete: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    module.load_state_dict({k: v.detach().clone().contiguous() for k, v in state.items()}, strict=False)


def _image_processor(model: BiomedCLIP):
    from transformers import CLIPImageProcessor

    preprocess, size = model.config.preprocess, model.image_size
    if preprocess.resize_mode != "shortest" or preprocess.interpolation not in _RESAMPLE:
        raise TowerNotExportable(
            f"preprocessing {preprocess.resize_mode}/{preprocess.interpolation} has no CLIPImageProcessor form"
        )
    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": size},
        resample=_RESAMPLE[preprocess.interpolation],
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(preprocess.mean),
        image_std=list(preprocess.std),
        do_convert_rgb=True,
    )


def _set_max_length(folder: Path, context_length: int) -> None:
    """Let ``AutoTokenizer`` pad and truncate to the model's context length."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    config["model_max_length"] = context_length
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
