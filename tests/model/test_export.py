"""Interoperability: every registry model and a training output load in open_clip 3.x offline from the bundle alone
(no hub, no hub cache), from any working directory, with the same embeddings, tokens and preprocessing; a moved
bundle is named and rewritten in place; ONNX encoders match PyTorch under onnxruntime and ``onnx_config.json``
carries the whole preprocessing."""

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from biomedclip.model import create_model_and_transforms, get_tokenizer, list_models, save_pretrained
from biomedclip.model.pretrained import MovedBundleWarning, builtin_tokenizer_dir

BIOMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
SLOW = {"small", "biomedclip-base", "biomedclip-384"}  # size cap: only tiny (6M parameters) in the fast suite
CAPTIONS = ["a", "lung CT, axial", "H&amp;E “stain”", "x " * 300]


def _inputs(size: int):
    torch.manual_seed(1)
    return torch.randn(3, 3, size, size), Image.new("RGB", (size * 2 + 7, size + 3), (200, 30, 60))


def _assert_open_clip_matches(bundle, monkeypatch, cut_network, tmp_path):
    """open_clip, run from an unrelated working directory with no hub and no cache, by absolute and by relative
    name, gives our tokens, pixels and embeddings."""
    import open_clip

    calls = cut_network()
    ours, _, our_eval = create_model_and_transforms(f"local-dir:{bundle}")
    our_tokens = get_tokenizer(f"local-dir:{bundle}")(CAPTIONS)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    pixels, image = _inputs(ours.image_size)
    for name in (f"local-dir:{bundle.resolve()}", f"local-dir:{os.path.relpath(bundle, elsewhere)}"):
        theirs, _, their_eval = open_clip.create_model_and_transforms(name)
        their_tokens = open_clip.get_tokenizer(name)(CAPTIONS)
        theirs.eval()
        assert torch.equal(their_tokens, our_tokens)
        assert torch.allclose(their_eval(image), our_eval(image), atol=1e-6)
        with torch.no_grad():
            assert (theirs.encode_image(pixels) - ours.encode_image(pixels)).abs().max() < 1e-5
            assert (theirs.encode_text(our_tokens) - ours.encode_text(our_tokens)).abs().max() < 1e-5
    assert calls == []
    root = str(bundle.resolve())
    for path in bundle.rglob("*.json"):  # every machine path points into the bundle itself
        if path.name != "tokenizer.json":  # the vocabulary itself holds "/" as a token
            for value in _strings(json.loads(path.read_text())):
                value = value.removeprefix("local-dir:")
                if value.startswith(("/", "~")):
                    assert value in (f"{root}/text", f"{root}/vision"), (path, value)


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in list_models()])
def test_model_export_of_every_registry_model_loads_in_open_clip(
    name, tmp_path, model_cli, hub_cache, monkeypatch, cut_network
):
    vocab = builtin_tokenizer_dir("pmc-fixtures-wordpiece")
    hub_cache.add(BIOMEDBERT, {p.name: p for p in vocab.iterdir()})  # the base models' tokenizer, for the export
    out = tmp_path / "open_clip"
    result = model_cli("export", "-m", name, "--format", "open_clip", "-o", out)
    assert "exported" in result.output and f"local-dir:{out.resolve()}" in result.output
    _assert_open_clip_matches(out, monkeypatch, cut_network, tmp_path)


def test_training_output_loads_in_open_clip(tiny, tmp_path, monkeypatch, cut_network):
    from biomedclip.train.loop import _export  # what `biomedclip train` writes as OUTPUT/final

    model, _, _, tokenizer = tiny
    final = tmp_path / "run" / "final"
    _export(model, tokenizer, final)
    _assert_open_clip_matches(final, monkeypatch, cut_network, tmp_path)


def test_a_moved_bundle_is_named_and_export_in_place_makes_open_clip_follow_it(
    tiny, tmp_path, model_cli, monkeypatch, cut_network
):
    model, _, _, tokenizer = tiny
    written = save_pretrained(model, tokenizer, tmp_path / "written", bin_copy=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MovedBundleWarning)
        create_model_and_transforms(f"local-dir:{written}")  # where it was written: no warning
    moved = tmp_path / "copied"
    shutil.copytree(written, moved)
    shutil.rmtree(written)
    with pytest.warns(MovedBundleWarning, match=f"{written}/vision.*-o {moved}"):
        loaded, _, _ = create_model_and_transforms(f"local-dir:{moved}")  # biomedclip still loads it
    ids = tokenizer(CAPTIONS)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))
    model_cli("export", "-m", f"local-dir:{moved}", "--format", "open_clip", "-o", moved)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MovedBundleWarning)
        _assert_open_clip_matches(moved, monkeypatch, cut_network, tmp_path)


def test_bundle_from_a_local_text_folder_keeps_no_machine_path(tiny, tmp_path):
    """A run started from a local PubMedBERT-like folder: the bundle names neither that folder nor its tokenizer."""
    tokenizer = tiny[3]
    bert = tmp_path / "my-bert"
    tiny[0].text.transformer.save_pretrained(bert)
    tokenizer.save(bert)
    model, _, _ = create_model_and_transforms("tiny", pretrained_text=str(bert))
    assert model.config.text.hf_model_name == str(bert)
    bundle = save_pretrained(model, tokenizer, tmp_path / "bundle", bin_copy=False)
    written = (bundle / "open_clip_config.json").read_text()
    own = written.count(f"{bundle.resolve()}/text") + written.count(f"{bundle.resolve()}/vision")
    assert str(bert) not in written and written.count(str(tmp_path)) == own == 2
    loaded, _, _ = create_model_and_transforms(f"local-dir:{bundle}")
    ids = tokenizer(CAPTIONS)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))


def _preprocess_from_config(image: Image.Image, steps: list[dict]) -> np.ndarray:
    """An independent implementation of ``onnx_config.json``'s preprocessing with PIL and numpy only."""
    interpolation = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
    array = None
    for step in steps:
        if step["op"] == "convert":
            image = image.convert(step["mode"])
        elif step["op"] == "resize":
            short, long = sorted(image.size)
            target = step["shortest_edge"]
            other = int(target * long / short)
            size = (target, other) if image.width <= image.height else (other, target)
            image = image.resize(size, interpolation[step["interpolation"]])
        elif step["op"] == "center_crop":
            height, width = step["size"]
            top, left = round((image.height - height) / 2), round((image.width - width) / 2)
            image = image.crop((left, top, left + width, top + height))
        elif step["op"] == "to_float":
            array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) * step["scale"]
        elif step["op"] == "normalize":
            array = (array - np.array(step["mean"])[:, None, None]) / np.array(step["std"])[:, None, None]
    return array.astype(np.float32)


def test_export_onnx_matches_pytorch(tiny, tmp_path, model_cli):
    import onnxruntime as ort

    model, _, eval_tf, tokenizer = tiny
    bundle = save_pretrained(model, tokenizer, tmp_path / "bundle", bin_copy=False)
    out = tmp_path / "onnx"
    model_cli("export", "--model", bundle, "--format", "onnx", "--out", out)
    meta = json.loads((out / "onnx_config.json").read_text())
    assert (meta["image_size"], meta["context_length"]) == (64, 64)
    for width, height in ((200, 97), (97, 200), (64, 64), (333, 301)):
        image = Image.new("RGB", (width, height))
        image.putdata([((x * 7) % 256, (y * 3) % 256, (x + y) % 256) for y in range(height) for x in range(width)])
        expected = eval_tf(image).numpy()
        np.testing.assert_allclose(_preprocess_from_config(image, meta["preprocess"]), expected, atol=1e-5)
    pixels, _ = _inputs(model.image_size)
    ids = tokenizer(CAPTIONS)
    with torch.no_grad():
        image_emb, text_emb = model.encode_image(pixels).numpy(), model.encode_text(ids).numpy()
    image_session = ort.InferenceSession(str(out / "image_encoder.onnx"))
    text_session = ort.InferenceSession(str(out / "text_encoder.onnx"))
    assert np.abs(image_session.run(None, {"pixels": pixels.numpy()})[0] - image_emb).max() < 1e-4
    assert np.abs(text_session.run(None, {"token_ids": ids.numpy()})[0] - text_emb).max() < 1e-4


def test_export_of_a_missing_model_is_an_input_error(tmp_path, model_cli, cut_network):
    cut_network()
    result = model_cli(
        "export", "-m", str(tmp_path / "nope"), "--format", "onnx", "-o", tmp_path / "o", expect_ok=False
    )
    assert result.exit_code == 2 and "unknown model" in result.output and "nope" in result.output
