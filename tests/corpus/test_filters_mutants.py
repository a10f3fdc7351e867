"""Every filter threshold exactly at, just inside and just outside its limit (issue 14; docs/MUTATION.md)."""

from __future__ import annotations

import pytest

from biomedclip.corpus.filters import FilterConfig, caption_reason, image_reason
from biomedclip.errors import InputError

TEN = "abcdefghij"  # not a placeholder, exactly the default minimum of 10 characters


def test_caption_length_at_both_limits() -> None:
    assert caption_reason(TEN) is None
    assert caption_reason(TEN[:9]) == "caption_too_short"
    assert caption_reason(" " + TEN[:5] + " \n\t " + TEN[5:8] + " ") == "caption_too_short"  # 9 once collapsed
    assert caption_reason("x" * 20_000) is None
    assert caption_reason("x" * 20_001) == "caption_too_long"
    tight = FilterConfig(min_caption_chars=4, max_caption_chars=6)
    assert [caption_reason("y" * n, tight) for n in (3, 4, 6, 7)] == ["caption_too_short", None, None,
                                                                      "caption_too_long"]  # fmt: skip


def test_placeholder_caption_rule_comes_first_and_can_be_switched_off() -> None:
    assert caption_reason("Supplementary Figure 12") == "placeholder_caption"  # long enough, still a placeholder
    keep = FilterConfig(reject_placeholder_captions=False)
    assert caption_reason("Supplementary Figure 12", keep) is None
    assert caption_reason("Figure 1", keep) == "caption_too_short"


def test_image_side_and_aspect_at_their_limits() -> None:
    assert image_reason(32, 32) is None
    assert image_reason(31, 32) == "image_too_small" == image_reason(32, 31)
    assert image_reason(320, 32) is None and image_reason(32, 320) is None  # exactly 10:1
    assert image_reason(321, 32) == "extreme_aspect" == image_reason(32, 321)
    wide = FilterConfig(min_side=1, max_aspect=2.5)
    assert [image_reason(w, 2, wide) for w in (5, 6)] == [None, "extreme_aspect"]
    assert image_reason(1, 1, wide) is None and image_reason(0, 5, wide) == "image_too_small"


def test_settings_at_their_limits_are_accepted_and_beyond_refused() -> None:
    FilterConfig(min_caption_chars=0, max_caption_chars=0, min_side=0, max_aspect=1.0)
    for bad in ({"min_caption_chars": -1}, {"min_side": -1}, {"min_caption_chars": 11, "max_caption_chars": 10},
                {"max_aspect": 0.99}):  # fmt: skip
        message = "max_aspect must be at least 1" if "max_aspect" in bad else "out of range"
        with pytest.raises(InputError, match=message):
            FilterConfig(**bad)
