"""Sentence boundaries in scientific prose, robust to "Fig. 2", "et al.", "e.g.", "i.e.", decimals and initials.

A sentence ends at ``.``, ``!`` or ``?`` (with any closing quotes or brackets after it) followed by white space
and a character that can start a sentence (an upper-case letter, a digit, an opening bracket or quote), unless

* the word before the period is a known abbreviation (``Fig.``, ``Figs.``, ``et al.``, ``e.g.``, ``i.e.``,
  ``cf.``, ``vs.``, ``approx.``, ``Ref.``, ``Eq.``, ``No.``, ``Dr.``, ``spp.``, ... see ``ABBREVIATIONS``), or
* the period sits inside a matched pair of brackets (``(see Fig. 2. Note ...)``), or
* the period sits inside a span the caller protects (a citation being located).

Decimals (``0.05``) and ``E. coli`` never split (no space, or a lower-case word, after the period).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ABBREVIATIONS = frozenset(
    {
        "fig", "figs", "ref", "refs", "eq", "eqs", "eqn", "eqns", "no", "nos", "vol", "vols", "pp", "p", "e.g", "eg",
        "i.e", "ie", "cf", "vs", "viz", "al", "approx", "ca", "dr", "mr", "mrs", "ms", "prof", "st", "suppl", "supp",
        "tab", "tabs", "inc", "ltd", "corp", "jr", "sr", "sp", "spp", "var", "subsp", "resp", "eds", "chap", "seq",
    }
)  # fmt: skip
END = re.compile(r"[.!?]+[\"'”’)\]]*\s+(?=[A-Z0-9(\[\"'“‘])")
WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)\.$")
OPENING = {"(": ")", "[": "]"}
MAX_BRACKET_SPAN = 600  # a bracket not closed within this many characters is a stray one, not a parenthesis


def _bracketed(text: str) -> list[tuple[int, int]]:
    """The spans of matched ``()``/``[]`` pairs (unmatched brackets ignored)."""
    spans, stack = [], []
    for i, ch in enumerate(text):
        if ch in OPENING:
            stack.append((ch, i))
        elif ch in (")", "]"):
            while stack and OPENING[stack[-1][0]] != ch:
                stack.pop()
            if stack:
                _, start = stack.pop()
                if i - start <= MAX_BRACKET_SPAN:
                    spans.append((start, i))
    return spans


def sentence_spans(text: str, protected: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text`` (ends exclusive, trailing white space left out)."""
    blocked = [*_bracketed(text), *protected]
    spans, start = [], 0
    for match in END.finditer(text):
        stop = match.start()
        if text[stop] == "." and text[stop - 1 : stop].isalpha():
            word = WORD_BEFORE.search(text[max(start, stop - 20) : stop + 1])
            if word and word.group(1).lower() in ABBREVIATIONS:
                continue
        end = stop + len(match.group().rstrip())
        if any(lo < stop and end <= hi for lo, hi in blocked):
            continue
        spans.append((start, end))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def sentences_holding(text: str, spans: Iterable[tuple[int, int]]) -> list[str]:
    """The distinct sentences of ``text`` that overlap any of ``spans``, in text order."""
    spans = list(spans)
    found = []
    for lo, hi in sentence_spans(text, spans):
        if any(start < hi and end > lo for start, end in spans):
            found.append(text[lo:hi].strip())
    return list(dict.fromkeys(s for s in found if s))
