"""Figure citations in running text: which figures (label numbers) and panels ``Figs. 2B–D and 3`` names.

``parse_citation`` reads a citation from its start: an optional ``Fig.``/``Figure(s)`` word, a label number
(``3``, ``S1``), then panels in any of the printed forms: attached (``2B``), ranges (``2B–D``, ``9A-9B``), lists
(``2A, B, and D``, ``3a,b``), in brackets (``2(b, c)``) or after ``panel(s)``, then further figures (``and 3C``,
``–4``). Panel letters are returned upper case, whatever case they were printed in. A letter after a separator is
a panel only when what follows it closes or continues the list, so ``Fig. 2c, p < 0.05``, ``Figure 1G; S.G.``
and ``Figures 1D and S1`` name no panel P, S. ``label_number`` reads a figure label the same way
(``Figure 3`` -> ``3``), and ``MENTION`` finds a citation's start in plain text.
"""

from __future__ import annotations

import re

MAX_PANEL_RANGE = 12  # "B–D" expands; a "range" wider than this many letters is read as its two ends
MAX_FIGURE_RANGE = 20  # "Figures 2–4" expands likewise

FIG_WORD = r"(?:Fig(?:ure)?s?\.?)"
NUMBER = r"S?\d+"
LABEL_NUMBER = re.compile(rf"^\s*(?:{FIG_WORD}\s*)?({NUMBER})\s*[.:]?\s*$", re.I)
FIGURE_NUMBER = re.compile(rf"\s*(?:{FIG_WORD}\s*)?({NUMBER})", re.I)
MENTION = re.compile(rf"(?<![A-Za-z]){FIG_WORD}\s*(?=S?\d)", re.I)
NOT_THIS_ARTICLE = re.compile(r"(?:supplementa\w*|suppl\.?|supporting|extended\s+data|additional)\s*$", re.I)
SEPARATOR = re.compile(r"\s*(?:,\s*and|,\s*or|,|and|or|&)\s*", re.I)
WORD_SEPARATOR = re.compile(r"(?:,\s*)?(?:and|or|&)", re.I)
LIST_GOES_ON = re.compile(r"\s*(?:$|[)\],;:–—&-]|(?:and|or)\b)", re.I)
DASH = re.compile(r"\s*[-–—]\s*")
PANEL_WORD = re.compile(r",?\s*panels?\s+", re.I)


def _letter(text: str, i: int, case: str | None) -> str | None:
    """The panel letter at ``text[i]`` (a lone letter, not the start of a word or of ``S1``; of ``case`` when
    given), else None."""
    if i >= len(text) or not text[i].isalpha() or not text[i].isascii():
        return None
    if i + 1 < len(text) and text[i + 1].isalnum():  # a word, or a figure number ("S1")
        return None
    if (case == "upper" and not text[i].isupper()) or (case == "lower" and not text[i].islower()):
        return None
    return text[i]


def _ends_panel(text: str, k: int, closing: bool) -> bool:
    """Whether a letter ending at ``k`` that follows a separator is a panel: what comes next closes or continues
    the list (``)``, ``,``, ``and``, a sentence's end), or the letter closes a range or an "and" list ("2B and C
    show", "2B–D too"); ``Fig. 2c, p < 0.05`` and ``Fig. 1G; S.G. provided`` name no panel P or S."""
    if text.startswith(".", k):
        return not text[k + 1 : k + 2].isalnum()
    return bool(LIST_GOES_ON.match(text, k)) or closing


def _expand(first: str, last: str) -> list[str]:
    lo, hi = ord(first.upper()), ord(last.upper())
    if lo < hi <= lo + MAX_PANEL_RANGE:
        return [chr(c) for c in range(lo, hi + 1)]
    return [first.upper(), last.upper()]


def _panel_list(text: str, i: int, number: str, case: str | None) -> tuple[list[str], int]:
    """Panels ``text[i:]`` names, as lone letters joined by commas, "and" or dashes, each optionally preceded by
    ``number`` again (``2A–2C``); returns them and where they end."""
    first = _letter(text, i, case)
    if first is None:
        return [], i
    case = case or ("upper" if first.isupper() else "lower")
    panels, i = [first.upper()], i + 1
    while True:
        dash = DASH.match(text, i)
        sep = dash or SEPARATOR.match(text, i)
        if not sep:
            return panels, i
        j = sep.end()
        if text.startswith(number, j) and _letter(text, j + len(number), case):
            j += len(number)
        letter = _letter(text, j, case)
        closing = bool(dash) or bool(WORD_SEPARATOR.fullmatch(sep.group().strip()))  # "B–D", "B and D" end a list
        if letter is None or not _ends_panel(text, j + 1, closing):
            return panels, i
        panels.extend(_expand(panels.pop(), letter) if dash else [letter.upper()])
        i = j + 1


def _panels_after(text: str, i: int, number: str) -> tuple[list[str], int]:
    """Panels right after a figure number: ``2B``, ``2B–D``, ``2(b, c)``, ``2, panels A and B``."""
    bracket = re.compile(r"\s*\(\s*").match(text, i)
    if bracket:
        panels, end = _panel_list(text, bracket.end(), number, None)
        close = re.compile(r"\s*\)").match(text, end)
        return (panels, close.end()) if panels and close else ([], i)
    word = PANEL_WORD.match(text, i)
    if word:
        panels, end = _panel_list(text, word.end(), number, None)
        if panels:
            return panels, end
    return _panel_list(text, i, number, None)


def parse_citation(text: str) -> list[tuple[str, list[str]]]:
    """The figures (label numbers) and panels a citation names, e.g. ``Figs. 2B–D and 3`` ->
    ``[("2", ["B", "C", "D"]), ("3", [])]``, ``Figures 2–4`` -> 2, 3, 4; a citation of panels only (``b``) gives
    ``[("", ["B"])]``."""
    number = FIGURE_NUMBER.match(text)
    if number is None:
        start = len(text) - len(text.lstrip())
        panels, end = _panel_list(text, start, "", None)
        return [("", panels)] if panels and not text[end:].strip(" )];,.") else []
    found: list[tuple[str, list[str]]] = []
    while number is not None:
        label = number.group(1).upper()
        panels, i = _panels_after(text, number.end(), number.group(1))
        found.append((label, panels))
        dash = DASH.match(text, i)
        sep = dash or SEPARATOR.match(text, i)
        number = FIGURE_NUMBER.match(text, sep.end()) if sep else None
        if number is not None and dash and not panels:
            last = number.group(1).upper()
            if label.isdigit() and last.isdigit() and int(label) < int(last) <= int(label) + MAX_FIGURE_RANGE:
                found.extend((str(n), []) for n in range(int(label) + 1, int(last)))
    return found


def label_number(label: str) -> str:
    """The number a figure label gives (``Figure 3`` -> ``3``, ``Fig. S1.`` -> ``S1``), else ``""``."""
    match = LABEL_NUMBER.match(label or "")
    return match.group(1).upper() if match else ""
