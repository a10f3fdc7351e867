"""Zero-shot classifier construction and evaluation against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from biomedclip.evaluate.embeddings import embed_images, embed_texts
from biomedclip.evaluate.prompts import PAPER_PROMPTS, PromptSet
from biomedclip.evaluate.zeroshot import (
    build_zeroshot_classifier,
    evaluate_zeroshot,
    zeroshot_logits,
    zeroshot_probabilities,
)


def test_paper_prompts_are_the_papers() -> None:
    assert PAPER_PROMPTS["pcam"].classnames == ("normal lymph node", "lymph node metastasis")
    assert PAPER_PROMPTS["pcam"].templates == ("this is an image of {}", "{} presented in image")
    assert PAPER_PROMPTS["lc25000_lung"].templates == PAPER_PROMPTS["pcam"].templates
    assert PAPER_PROMPTS["lc25000_lung"].classnames[2] == "lung squamous cell carcinomas"
    for name in ("lc25000_colon", "tcga_til", "rsna_pneumonia"):
        assert PAPER_PROMPTS[name].templates == ("{} presented in image", "a photo of {}")
    assert PAPER_PROMPTS["tcga_til"].classnames == ("none", "tumor infiltrating lymphocytes")
    assert PAPER_PROMPTS["rsna_pneumonia"].classnames == ("normal lung", "pneumonia")
    with pytest.raises(ValueError, match="exactly one"):
        PromptSet(("a",), ("no placeholder",))


def test_classifier_is_the_normalised_mean_of_prompt_embeddings(toy) -> None:
    toy_model, toy_tokenizer, _ = toy
    classnames = ["normal lung", "pneumonia", "effusion"]
    templates = ["{} presented in image", "a photo of {}"]
    classifier = build_zeroshot_classifier(toy_model, toy_tokenizer, classnames, templates, batch_size=2)
    with torch.no_grad():
        for c, name in enumerate(classnames):
            rows = [toy_model.encode_text(toy_tokenizer([t.format(name)]))[0].numpy() for t in templates]
            mean = np.mean([r / np.linalg.norm(r) for r in rows], axis=0)
            np.testing.assert_allclose(classifier[c], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    assert classifier.shape == (3, 16) and classifier.dtype == np.float32


def test_evaluation_on_embeddings_with_known_answer() -> None:
    rng = np.random.default_rng(0)
    classifier = np.eye(3, 8, dtype=np.float32)
    labels = rng.integers(0, 3, 90)
    images = classifier[labels] + 0.05 * rng.normal(size=(90, 8)).astype(np.float32)
    images[:9] = classifier[(labels[:9] + 1) % 3]  # exactly nine wrong
    result = evaluate_zeroshot(images, labels, classifier, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(81 / 90)
    assert np.trace(result["confusion_matrix"]) == 81
    probabilities = zeroshot_probabilities(images, classifier)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(1), zeroshot_logits(images, classifier).argmax(1))
    with pytest.raises(ValueError, match="class names"):
        evaluate_zeroshot(images, labels, classifier, ["a", "b"])


def test_embedding_helpers_match_direct_calls(toy) -> None:
    toy_model, toy_tokenizer, transform = toy
    images = [Image.fromarray(np.full((20, 20, 3), v, dtype=np.uint8)) for v in (0, 60, 120, 250, 30)]
    got = embed_images(toy_model, images, transform, batch_size=2)
    with torch.no_grad():
        direct = toy_model.encode_image(torch.stack([transform(i) for i in images[1:]])).numpy()
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(got[1:], direct, rtol=1e-5, atol=1e-6)
    raw = embed_texts(toy_model, toy_tokenizer, ["x ray", "ct"], normalize=False)
    assert raw.shape == (2, 16) and not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
