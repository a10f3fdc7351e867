"""Zero-shot scoring cases that mutation testing showed untested (docs/MUTATION.md): the CLIP default scale of
100, the softmax per row (against scipy), the float32 output, and the batch size and device reaching the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from biomedclip.evaluate.zeroshot import (
    build_zeroshot_classifier,
    evaluate_zeroshot,
    zeroshot_logits,
    zeroshot_probabilities,
)


def unit_rows(rows: list[list[float]]) -> np.ndarray:
    array = np.array(rows, dtype=np.float64)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


CLASSIFIER = unit_rows([[1, 0, 0], [0, 1, 0]])
IMAGES = unit_rows([[1, 0, 0], [-1, -1, 0.2], [0.3, 0.4, 0.5], [0.5, 0.51, 0.7]])  # row 1: far from every class


def test_logits_default_to_clip_scale_100_in_float32() -> None:
    expected = 100.0 * IMAGES @ CLASSIFIER.T  # float64 reference: CLIP's logit scale is capped at 100
    got = zeroshot_logits(IMAGES, CLASSIFIER)
    assert got.dtype == np.float32  # float64 inputs too: scores and caches are float32 throughout
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert zeroshot_logits(IMAGES.astype(np.float32), CLASSIFIER).dtype == np.float32
    assert zeroshot_logits(IMAGES, CLASSIFIER.astype(np.float32)).dtype == np.float32


def test_probabilities_are_the_row_softmax_even_for_far_rows() -> None:
    """Row 1's best logit is ~-70 while row 0's is 100: a max over the whole matrix would underflow row 1."""
    expected = softmax(100.0 * IMAGES @ CLASSIFIER.T, axis=1)
    got = zeroshot_probabilities(IMAGES, CLASSIFIER)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert 0.7 < got[3, 1] < 0.75  # a close call: the scale decides how sure it is
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(zeroshot_probabilities(IMAGES, CLASSIFIER, 2.0), softmax(2.0 * IMAGES @ CLASSIFIER.T, 1),
                               rtol=1e-5)  # fmt: skip


def test_evaluation_names_its_classes_and_rows() -> None:
    got = evaluate_zeroshot(IMAGES[[0, 2]], np.array([0, 1]), CLASSIFIER, ["normal", "tumor"])
    assert got["classnames"] == ["normal", "tumor"]
    assert got["accuracy"] == 1.0
    with pytest.raises(ValueError, match="classifier has 2 rows for 3 class names"):
        evaluate_zeroshot(IMAGES, np.array([0, 1, 0]), CLASSIFIER, ["a", "b", "c"])


class CountingModel(torch.nn.Module):
    """Text embedding = one-hot of the first token id; records the size of every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[int] = []

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        self.batches.append(tokens.shape[0])
        return torch.nn.functional.one_hot(tokens[:, 0], 4).float() + 0 * self.anchor


def first_letter_tokenizer(texts: list[str]) -> torch.Tensor:
    return torch.tensor([["abcd".index(text[0])] for text in texts])


def test_classifier_batches_and_device_reach_the_model() -> None:
    model = CountingModel()
    classifier = build_zeroshot_classifier(model, first_letter_tokenizer, ["a", "b"], ["{} x", "{} y", "{} z"],
                                           batch_size=2)  # fmt: skip
    assert model.batches == [2, 2, 2]
    np.testing.assert_array_equal(classifier, np.eye(4, dtype=np.float32)[:2])
    with pytest.raises((RuntimeError, NotImplementedError)):  # token ids sent to "meta" cannot meet CPU weights
        build_zeroshot_classifier(model, first_letter_tokenizer, ["a"], ["{}"], device="meta")


def test_no_class_names_is_an_input_error() -> None:
    from biomedclip.errors import InputError

    with pytest.raises(InputError, match=r"^give at least one class name$"):
        build_zeroshot_classifier(CountingModel(), first_letter_tokenizer, [], ["{}"])
