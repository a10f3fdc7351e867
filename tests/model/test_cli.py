"""``biomedclip model list`` and ``train-tokenizer`` on WebDataset shards made by the test."""

import json

import pytest
import webdataset as wds

from biomedclip.model import get_tokenizer

CAPTIONS = [
    "Axial CT of the chest showing ground-glass opacities in the right lower lobe.",
    "Hematoxylin and eosin staining of the liver biopsy, original magnification x200.",
    "Western blot of phosphorylated ERK in HeLa cells after treatment.",
    "Kaplan-Meier survival curves of patients stratified by tumour grade.",
]


def _write_shards(folder, per_shard=20):
    folder.mkdir()
    for shard in range(2):
        with wds.TarWriter(str(folder / f"train-{shard:06d}.tar")) as sink:
            for i in range(per_shard):
                key = f"{shard:03d}{i:05d}"
                record = {"pmcid": f"PMC{i}", "caption": CAPTIONS[i % 4]}
                sink.write({"__key__": key, "jpg": b"\xff\xd8\xff", "txt": CAPTIONS[i % 4], "json": record})


RELEASED = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


def test_model_list_separates_trained_checkpoints_from_architectures(run_cli, model_cli):
    out = run_cli("model", "list").stdout
    trained, untrained = out.split("Untrained architectures")
    assert RELEASED in trained and "Trained checkpoints" in trained
    for name in ("biomedclip-base", "biomedclip-384", "tiny", "small"):
        assert name in untrained and f"  {name} " not in trained
    rows = json.loads(model_cli("list", "--json").output)
    assert {r["name"]: r["trained"] for r in rows} == {
        RELEASED: True,
        "biomedclip-base": False,
        "biomedclip-384": False,
        "small": False,
        "tiny": False,
    }
    assert {r["name"]: r["embed_dim"] for r in rows}["biomedclip-base"] == 512


@pytest.mark.parametrize("command", [["embed"], ["classify"], ["serve"], ["index", "build"]])
def test_inference_commands_default_to_the_released_checkpoint(command):
    from click.testing import CliRunner

    from biomedclip.cli import main

    help_text = " ".join(CliRunner().invoke(main, [*command, "--help"], terminal_width=400).output.split())
    assert RELEASED in help_text and "biomedclip-base" not in help_text


def test_train_tokenizer_on_shards(model_cli, tmp_path):
    _write_shards(tmp_path / "shards")
    out = tmp_path / "vocab"
    spec = str(tmp_path / "shards" / "train-{000000..000001}.tar")
    result = model_cli("train-tokenizer", "-s", spec, "--vocab-size", "300", "--min-frequency", "1", "-o", out)
    assert "40 captions from 2 shard(s)" in result.output
    summary = json.loads((out / "train_tokenizer.json").read_text())
    assert summary["captions"] == 40 and summary["vocab_size"] <= 300
    tokenizer = get_tokenizer(str(out))
    assert tokenizer.vocab_size == summary["vocab_size"] and tokenizer.context_length == 256
    ids = tokenizer(["ground-glass opacities"])[0]
    assert ids[0] == tokenizer.backend.token_to_id("[CLS]")
    assert tokenizer.backend.token_to_id("[UNK]") not in ids[1:6].tolist()  # all in the trained vocabulary


def test_train_tokenizer_bad_input_is_a_clear_error(model_cli, tmp_path):
    result = model_cli("train-tokenizer", "--shards", str(tmp_path / "none-*.tar"), "--out", tmp_path, expect_ok=False)
    assert result.exit_code == 2 and "no shards match" in result.output
    (tmp_path / "empty").mkdir()
    with wds.TarWriter(str(tmp_path / "empty" / "train-000000.tar")) as sink:
        sink.write({"__key__": "a", "jpg": b"\xff\xd8\xff"})
    result = model_cli("train-tokenizer", "--shards", tmp_path / "empty", "--out", tmp_path / "v", expect_ok=False)
    assert result.exit_code == 1 and "no captions" in result.output
