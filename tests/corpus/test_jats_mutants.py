"""Caption rendering cases that mutation testing showed untested (docs/MUTATION.md). Each expected caption is
written by hand from the rules in the jats module docstring; the raw-text budget is ``4 x max_chars`` characters
of rendered pieces (a ``<caption>`` block adds one space before and one after its content)."""

from __future__ import annotations

import pytest
from lxml import etree

from biomedclip.corpus.jats import caption_text


def caption(inner: str, max_chars: int = 20_000) -> tuple[str, str]:
    return caption_text(etree.fromstring(f"<caption>{inner}</caption>"), max_chars)


def test_raw_budget_is_exact() -> None:
    """max_chars 5: 20 raw characters pass (18 of text plus the two block spaces), 21 do not."""
    assert caption("a" + " " * 16 + "b", 5) == ("a b", "")
    assert caption("a" + " " * 17 + "b", 5) == ("a b", "caption_too_long")


def test_the_overflowing_piece_keeps_exactly_the_remaining_budget() -> None:
    # one block space, then 19 of the text's characters fit: "a", 17 spaces, "b"
    assert caption("a" + " " * 17 + "bcdefgh", 5) == ("a b", "caption_too_long")


def test_the_budget_counts_every_piece() -> None:
    many = "a" + "<italic>    </italic>    " * 3 + "b"  # 28 raw characters in nine pieces of at most 4
    assert caption(many, 5) == ("a", "caption_too_long")  # the budget of 20 runs out in the spaces before "b"
    assert caption(many, 7) == ("a b", "")  # a budget of 28: exactly enough


def test_a_superscript_past_the_budget_is_dropped_whole() -> None:
    """The superscript is rendered in its own budget (what is left, 16 here); past it, nothing of it is kept."""
    assert caption("abc<sup>" + "d" * 20 + "</sup>", 5) == ("abc", "caption_too_long")
    assert caption("abc<sup>" + "d" * 100 + "</sup>", 5) == ("abc", "caption_too_long")
    assert caption("abc<sup>" + "d" * 15 + "</sup>", 5) == ("abcdd", "caption_too_long")  # fits its budget


@pytest.mark.parametrize(
    ("inner", "text"),
    [
        ("Seen<alt-text>alternative text</alt-text> here", "Seen here"),
        ("Seen<!-- an editor's note --> here", "Seen here"),
        ("Empty<alternatives></alternatives> choice", "Empty choice"),
        ("Cited<sub><xref>3</xref></sub>.", "Cited 3."),  # a citation in a subscript is set apart too
        ("x<sup><italic>a</italic></sup>", "xa"),  # markup in a superscript is not a citation
        ("x<sup></sup>y", "xy"),
        ("10<sup>4</sup> cells", "10^4 cells"),  # an exponent right at the start of the caption
        ("x<sup>2 </sup>y", "x2 y"),  # one trailing space inside is kept
        ("x<sup>ab </sup>y", "xab y"),
        ("x<sup> a</sup>", "x a"),  # one leading space inside is kept
        ("10<sup></sup><sup>4</sup>", "10^4"),  # an empty superscript adds nothing, not even a break
        ("<p>First finding</p><p>Second</p>", "First finding. Second"),  # a paragraph followed by another
        ("<list><list-item>one</list-item></list><p>two</p>", "one two"),  # only titles and paragraphs end so
        ("x<sup> <xref>1</xref></sup>", "x 1"),  # leading space kept as one space
        ("x<sup>text<xref>1</xref></sup>", "xtext1"),  # text beside the reference: not a citation
    ],
)
def test_inline_markup(inner: str, text: str) -> None:
    assert caption(inner) == (text, "")


def test_no_period_after_a_title_ending_in_punctuation_then_space() -> None:
    assert caption("<title>Growth curves. </title><p>Body</p>") == ("Growth curves. Body", "")
    assert caption("<title>Growth curves</title><p>Body</p>") == ("Growth curves. Body", "")
    assert caption("<title>Panel X</title><p>Body</p>") == ("Panel X. Body", "")


def test_a_too_deep_caption_is_refused_empty() -> None:
    assert caption("<bold>" * 120 + "deep" + "</bold>" * 120) == ("", "caption_too_deep")
