"""The Python API: ``biomedclip.load`` and the Embedder's embed / classify / similarity."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from biomedclip.api import ImageDecodeError


@pytest.fixture(scope="module")
def image_paths(shared_fixtures):
    return sorted((shared_fixtures / "images" / "bccd" / "JPEGImages").glob("*.jpg"))[:5]


def test_import_is_light_and_load_is_exported():
    code = "import sys, biomedclip; assert 'torch' not in sys.modules; print(biomedclip.load.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "biomedclip.model.inference"


def test_embed_images_accepts_paths_bytes_and_pil_alike(embedder, image_paths):
    from_paths = embedder.embed_images(image_paths)
    from_bytes = embedder.embed_images([p.read_bytes() for p in image_paths])
    from_pil = embedder.embed_images([Image.open(p) for p in image_paths])
    assert from_paths.shape == (5, embedder.dim) and from_paths.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(from_paths, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(from_bytes, from_paths, atol=1e-6)
    np.testing.assert_allclose(from_pil, from_paths, atol=1e-6)
    np.testing.assert_allclose(embedder.embed_images(image_paths[0])[0], from_paths[0], atol=1e-6)


def test_embeddings_match_the_model_run_by_hand(embedder, image_paths):
    pixels = torch.stack([embedder.transform(Image.open(p).convert("RGB")) for p in image_paths[:2]])
    tokens = embedder.tokenizer(["a blood smear", "a chest x-ray"])
    with torch.no_grad():
        image = torch.nn.functional.normalize(embedder.model.encode_image(pixels), dim=-1).numpy()
        text = torch.nn.functional.normalize(embedder.model.encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(embedder.embed_images(image_paths[:2]), image, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_texts(["a blood smear", "a chest x-ray"]), text, atol=1e-5)


def test_batching_does_not_change_results(embedder, image_paths):
    embedder.batch_size = 2
    try:
        small_batches = embedder.embed_images(image_paths)
    finally:
        embedder.batch_size = 32
    np.testing.assert_allclose(small_batches, embedder.embed_images(image_paths), atol=1e-5)
    texts = [f"figure {i} shows cells" for i in range(7)]
    np.testing.assert_allclose(embedder.embed_texts(texts)[3], embedder.embed_texts(texts[3])[0], atol=1e-5)


def test_classify_is_prompt_ensembled_softmax(embedder, image_paths):
    labels = ["white blood cell", "red blood cell", "platelet"]
    templates = ["a photo of {}", "{} presented in image"]
    probabilities = embedder.classify(image_paths[:3], labels, templates)
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # independent computation: mean of normalised template embeddings per label, renormalised, then softmax
    class_vectors = np.stack([embedder.embed_texts([t.format(label) for t in templates]).mean(0) for label in labels])
    class_vectors /= np.linalg.norm(class_vectors, axis=1, keepdims=True)
    logits = embedder.logit_scale * embedder.embed_images(image_paths[:3]) @ class_vectors.T
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True), atol=1e-4)
    # label order is respected
    np.testing.assert_allclose(
        embedder.classify(image_paths[:3], labels[::-1], templates), probabilities[:, ::-1], atol=1e-5
    )


def test_similarity_is_the_cosine_matrix(embedder, image_paths):
    texts = ["blood smear", "brain MRI"]
    similarity = embedder.similarity(image_paths[:2], texts)
    assert similarity.shape == (2, 2)
    np.testing.assert_allclose(
        similarity, embedder.embed_images(image_paths[:2]) @ embedder.embed_texts(texts).T, atol=1e-5
    )


def test_bad_inputs_raise_clear_errors(embedder, tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    with pytest.raises(ImageDecodeError, match=r"notes\.txt"):
        embedder.embed_images([text_file])
    with pytest.raises(ImageDecodeError, match=r"missing\.png"):
        embedder.embed_images([tmp_path / "missing.png"])
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="PNG")
    with pytest.raises(ImageDecodeError, match="uploaded bytes"):
        embedder.embed_images([buffer.getvalue()[:40]])  # truncated PNG
    with pytest.raises(ValueError, match="at least one non-empty label"):
        embedder.classify([buffer.getvalue()], [" "])
    with pytest.raises(ValueError, match="distinct"):
        embedder.classify([buffer.getvalue()], ["a", "a"])
    with pytest.raises(ValueError, match="exactly one"):
        embedder.classify([buffer.getvalue()], ["a", "b"], ["no placeholder"])
    assert embedder.embed_images([]).shape == (0, embedder.dim)
    assert embedder.embed_texts([]).shape == (0, embedder.dim)
