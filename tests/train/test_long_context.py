"""configs/paper-long.yaml: the paper's recipe with a 512-token text context; its tiny variant trains on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomedclip.errors import InputError
from biomedclip.train import loop
from biomedclip.train.config import load_config, parse_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_paper_long_is_the_paper_recipe_with_a_512_token_context() -> None:
    paper, long = load_config(CONFIGS / "paper.yaml"), load_config(CONFIGS / "paper-long.yaml")
    assert (paper.model.context_length, long.model.context_length) == (0, 512)
    assert long.run.output_dir != paper.run.output_dir
    long.model.context_length, long.run.output_dir = 0, paper.run.output_dir
    assert long == paper


def test_tiny_paper_long_trains_a_few_steps_on_cpu(train_shards, tiny_args, tmp_path) -> None:
    from biomedclip.model import create_model, get_tokenizer

    extra = {"optim.max_steps": 2, "data.workers": 0, "data.val": "", "eval.retrieval": False,
             "model.pretrained_text": "", "model.pretrained_image": ""}  # fmt: skip
    config = load_config(
        CONFIGS / "paper-long.yaml", parse_overrides(tiny_args(train_shards, tmp_path / "run", **extra))
    )
    model, _, _, tokenizer = loop.build_model(config)
    assert model.context_length == tokenizer.context_length == 512
    assert model.text.transformer.config.max_position_embeddings == 512  # tiny's 128-row table grown to fit
    result = loop.train(config)
    assert result.steps == 2
    final = tmp_path / "run" / "final"
    saved = json.loads((final / "open_clip_config.json").read_text())
    assert saved["model_cfg"]["text_cfg"]["context_length"] == 512
    trained = create_model(f"local-dir:{final}")
    assert trained.context_length == 512 and get_tokenizer(f"local-dir:{final}")(["x " * 600]).shape == (1, 512)


def test_a_trained_model_with_too_few_positions_is_refused(tmp_path) -> None:
    from biomedclip.model import create_model, get_tokenizer, save_pretrained
    from biomedclip.train.config import build_config

    save_pretrained(create_model("tiny"), get_tokenizer("tiny"), tmp_path / "trained")
    config = build_config(overrides={"model.name": f"local-dir:{tmp_path / 'trained'}", "model.context_length": 256})
    with pytest.raises(InputError, match="extend-context"):
        loop.build_model(config)
