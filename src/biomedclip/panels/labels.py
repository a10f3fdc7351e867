"""Panel labels: the letter printed on each panel ("A", "b", "A1"; "(c)" and "A." read as "c" and "A").

For each panel box, a band at the top of the box (starting a little above it) is thresholded at Otsu's level
and at strong-ink levels, in both polarities (so white letters on micrographs count); its glyph-sized connected
components are grouped into short tokens, each glyph is classified by the small CNN in ``label_model`` (trained
here from rendered fonts), and tokens that parse as a label are scored by the model's confidence, their place
in the panel (labels sit at the top, mostly at the left) and their size. Across the figure, labels form a
sequence in one case: sure readings fix it, weaker readings of its letters beat stray letters, a letter is
used once, ambiguous shapes (c/C, o/O, s/S...) take the figure's case, and one panel left out of an otherwise
read sequence gets the missing letter.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass

import numpy as np
from PIL import Image

from biomedclip.panels.glyphs import Component, components, glyph_bitmap, ink_masks, merged
from biomedclip.panels.label_model import CLASSES, load_classifier
from biomedclip.panels.types import Box

MIN_GLYPH_HEIGHT = 6
"""Smaller marks are tick labels and body text, not panel letters."""
MAX_SIDE = 1600
"""Larger figures are read at this size (their letters stay far above the smallest readable glyph)."""
MIN_SCORE = 0.25
"""A panel whose best reading scores below this gets no label."""
_SINGLE_MIN_SCORE = 0.6
"""A figure of one panel rarely prints a letter: a bare letter must be surer there (a bracketed one need not)."""
_SEQUENCE_BONUS = 1.6
"""Weight of a reading whose letter belongs to the figure's sequence (A up to its panel count)."""
CORNER_REACH = 0.2
"""A letter within this fraction of a box's width and height around its top-left corner may mark that box."""
_FILLED_SCORE = 0.2
"""Confidence of a letter given to a panel only because the figure's sequence lacks it."""
_BAND_FRACTION = 0.35
_MIN_BAND = 48
_ABOVE_FRACTION = 0.1
"""The band starts this fraction of the box height above the box: letters often sit just over a plot's frame."""
_LEFT_FRACTION = 0.08
"""The band also reaches this fraction of the box width to its left, where letters stand in the gutter."""
_WHITE = 235
_PHOTO_WHITE_SHARE = 0.35
"""A panel with less than this share of near-white (``_WHITE``) pixels is a photo: its bottom is read too."""
_TOKEN_GAP = 0.25
"""Glyphs closer than this many glyph heights belong to one token (a word, "(a)", "A1")."""
_MAX_TOKEN = 4
_BRACKET_FLOOR = 0.5
_BRACKET_BONUS = 1.5
"""A letter in brackets is rarely anything but a panel label."""
"""A bracket-shaped glyph framing a letter costs the reading at most this factor, however unsure its class."""
CASELESS = frozenset("COPSUVWXZK")
"""Letters whose upper and lower case differ only in size, which a cut-out glyph does not show."""
BAR = frozenset("Il")
"""Upper-case I and lower-case l: one glyph (a plain bar) in most sans-serif type, so read as either; it names
the figure's ninth letter in an upper-case figure (I) and its twelfth in a lower-case one (l), never L."""
_UPPER = np.arange(26)
_LOWER = np.arange(26, 52)
_DIGITS = np.arange(52, 62)
_OPEN, _CLOSE = CLASSES.index("("), CLASSES.index(")")


@dataclass(frozen=True)
class Reading:
    """One way to read a panel's label: the text, its score, whether its case is a guess, and where it was read
    (x0, y0, x1, y1 in the pixels of the grey image read; None when given, not read)."""

    text: str
    score: float
    case_known: bool
    bracketed: bool = False
    where: Box | None = None


def attach_parts(main: Component, parts: list[Component], boxes: np.ndarray | None = None) -> list[Component]:
    """``main`` with the dot just above it when it is a narrow stem (an i or a j); other glyphs alone. ``boxes``
    may hold the parts' ``(x0, y0, x1, y1)`` rows, computed once for many calls."""
    if main.width > 0.6 * main.height or not parts:
        return [main]
    if boxes is None:
        boxes = _boxes(parts)
    x0, y0, x1, y1 = boxes.T
    centre = (x0 + x1) / 2
    dots = (
        (y1 - y0 <= 0.4 * main.height)
        & (x1 - x0 <= 1.5 * main.width + 2)
        & (y1 <= main.y0 + 1)
        & (main.y0 - y1 <= 0.5 * main.height)
        & (centre >= main.x0)
        & (centre <= main.x1)
    )
    return [main, *(parts[i] for i in np.flatnonzero(dots) if parts[i] is not main)]


def _boxes(parts: list[Component]) -> np.ndarray:
    return np.array([(p.x0, p.y0, p.x1, p.y1) for p in parts], dtype=np.int64).reshape(-1, 4)


def _on_background(component: Component, ink: np.ndarray) -> bool:
    """Whether the ring just outside the component is mostly background (not ink of its own polarity);
    ``ink`` is the ink mask the component was found in."""
    height, width = ink.shape
    y0, y1 = max(0, component.y0 - 2), min(height, component.y1 + 2)
    x0, x1 = max(0, component.x0 - 2), min(width, component.x1 + 2)
    window = int(np.count_nonzero(ink[y0:y1, x0:x1]))
    ring_size = (y1 - y0) * (x1 - x0) - component.height * component.width
    return ring_size <= 0 or window - component.area <= 0.3 * ring_size


def _enclosed(component: Component, others: list[Component]) -> bool:
    """Whether a glyph-sized blob of the other polarity surrounds the component (the hole of an O or A)."""
    return any(
        o.x0 < component.x0 and component.x1 < o.x1 and o.y0 < component.y0 and component.y1 < o.y1 for o in others
    )


def _glyphs(band: np.ndarray, max_height: int) -> tuple[list[list[Component]], list[Component]]:
    """Glyph-sized components in a band, one list per ink mask (both polarities, every ink level; counters
    excluded), and the small marks that may belong to them (dots)."""
    levels = [(mask, components(mask, light, 2, max_height)) for mask, light in ink_masks(band)]
    per_level, marks = [], []
    for level, (mask, parts) in enumerate(levels):
        opposite = levels[level ^ 1][1] if level < 2 else []
        others = [c for c in opposite if c.height >= MIN_GLYPH_HEIGHT]
        glyphs = []
        for part in parts:
            if part.height < MIN_GLYPH_HEIGHT:
                marks.append(part)
            elif _on_background(part, mask) and not _enclosed(part, others):
                glyphs.append(part)
        per_level.append(glyphs)
    return per_level, marks


def _tokens(glyphs: list[Component]) -> list[list[Component]]:
    """Glyphs grouped into tokens, left to right: same polarity, similar heights, sharing a top or a baseline,
    gaps under ``_TOKEN_GAP`` heights (so "G" stays apart from a lower "CSF2" written right after it)."""
    order = sorted(range(len(glyphs)), key=lambda i: glyphs[i].x0)
    parent = list(range(len(glyphs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    reach = _TOKEN_GAP * max((g.height for g in glyphs), default=0)
    for a_pos, a in enumerate(order):
        ga = glyphs[a]
        ax1, ay0, ay1, ah = ga.x1, ga.y0, ga.y1, ga.height
        for b in order[a_pos + 1 :]:
            gb = glyphs[b]
            gap = gb.x0 - ax1
            if gap > reach:
                break
            tall, short = (ah, gb.height) if ah >= gb.height else (gb.height, ah)
            if gap > _TOKEN_GAP * tall or tall > 2.2 * short or ga.light != gb.light:
                continue
            overlap = min(ay1, gb.y1) - max(ay0, gb.y0)
            aligned = min(abs(ay0 - gb.y0), abs(ay1 - gb.y1)) <= 0.35 * tall
            if aligned and overlap >= 0.5 * short:
                parent[root(b)] = root(a)
    groups: dict[int, list[Component]] = {}
    for i in order:
        groups.setdefault(root(i), []).append(glyphs[i])
    return list(groups.values())


def _parse(token: list[Component], probs: np.ndarray) -> Reading | None:
    """Read a token as a label ("(A)", "A", "A1", "a."), or None when it is not one (a word, a number). A thin
    last glyph after an opening bracket closes it even when the model is unsure (a bracket cut from a letter)."""
    kinds = probs.argmax(axis=1)
    start, stop = 0, len(token)
    paren_height = 0
    if stop - start > 1 and kinds[start] == _OPEN:
        paren_height = token[start].height
        start += 1
    last = token[stop - 1]
    closing = kinds[stop - 1] == _CLOSE or (
        start == 1 and last.width < 0.5 * last.height and probs[stop - 1, _DIGITS].max() < 0.5
    )
    if stop - start > 1 and closing:
        paren_height = max(paren_height, token[stop - 1].height)
        stop -= 1
    if not 1 <= stop - start <= 2:
        return None
    letter = probs[start]
    by_letter = letter[_UPPER] + letter[_LOWER]
    index = int(by_letter.argmax())
    score = float(by_letter[index])
    char = string.ascii_uppercase[index]
    case_known = char not in CASELESS
    if case_known:
        upper = letter[_UPPER[index]] >= letter[_LOWER[index]]
    elif paren_height:
        upper = token[start].height >= 0.68 * paren_height
        case_known = True
    else:
        upper = letter[_UPPER[index]] >= letter[_LOWER[index]]
    text = char if upper else char.lower()
    if text in BAR:  # a bar tells neither its case nor, therefore, its letter
        case_known = False
    if stop - start == 2:
        digit = probs[start + 1]
        text += str(int(digit[_DIGITS].argmax()))
        score *= float(digit[_DIGITS].max())
    if start:
        score *= max(_BRACKET_FLOOR, float(probs[0, _OPEN]))
    if stop < len(token):
        score *= max(_BRACKET_FLOOR, float(probs[-1, _CLOSE]))
    bracketed = start > 0 or stop < len(token)
    return Reading(text, score * _BRACKET_BONUS if bracketed else score, case_known, bracketed)


def _place_weight(token: list[Component], width: int, band_height: int, bottom: bool = False) -> float:
    """Prior for a label's place in its panel: near the top (or, read along a photo's bottom, the bottom), and near
    the left (or right) edge."""
    x0, x1 = min(g.x0 for g in token), max(g.x1 for g in token)
    from_edge = band_height - max(g.y1 for g in token) if bottom else min(g.y0 for g in token)
    vertical = max(0.2, 1.0 - 1.5 * from_edge / band_height)
    side = min(x0, width - x1) / width
    horizontal = max(0.4, 1.0 - 1.2 * side)
    return vertical * horizontal


def _may_be_label(token: list[Component]) -> bool:
    """Shape test before classifying: one glyph, two ("A1", "a)"), or three or four with bracket-thin ends."""
    if len(token) <= 2:
        return True
    if len(token) > _MAX_TOKEN:
        return False
    thin = [g.width < 0.6 * g.height for g in (token[0], token[-1])]
    return thin[0] or thin[1] if len(token) == 3 else thin[0] and thin[1]


def _read_box(gray: np.ndarray, box: Box, allowed: frozenset[str] = frozenset()) -> list[Reading]:
    """Candidate readings of one panel's label, best first (empty when nothing parses), of the ``allowed`` letters
    only if any are given: along its top, or, for a photo with no sure one there and letters to look for, along its
    bottom too, where clinical images often print them (beside marks such as a radiograph's L and R)."""
    height, width = gray.shape
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(width, int(box[2])), min(height, int(box[3]))
    if x1 - x0 < MIN_GLYPH_HEIGHT or y1 - y0 < MIN_GLYPH_HEIGHT:
        return []

    def read(bottom: bool) -> list[Reading]:
        found = _read_band(gray, (x0, y0, x1, y1), bottom)
        return [r for r in found if r.text[0].upper() in allowed] if allowed else found

    top = read(bottom=False)
    if any(r.score >= MIN_SCORE for r in top) or not allowed:
        return top
    if np.mean(gray[y0:y1, x0:x1] >= _WHITE) >= _PHOTO_WHITE_SHARE:  # not a photo
        return top
    bottom = read(bottom=True)
    if any(r.score >= MIN_SCORE for r in bottom):
        return sorted(bottom + top, key=lambda r: -r.score)
    return top or bottom


def _read_band(gray: np.ndarray, box: Box, bottom: bool) -> list[Reading]:
    """Readings in the band along a box's top (from a little above it) or bottom (to a little below it), reaching
    a little left of it; a bottom reading has no place (``where``): corners name boxes by their tops."""
    height, _ = gray.shape
    x0, y0, x1, y1 = box
    margin = max(8, min(32, round(_ABOVE_FRACTION * (y1 - y0))))
    depth = min(y1 - y0, max(_MIN_BAND, round(_BAND_FRACTION * (y1 - y0))))
    if bottom:
        top, below = y1 - depth, min(height - y1, margin)
        band_height = depth + below
    else:
        above = min(y0, margin)
        top, band_height = y0 - above, depth + above
    left = min(x0, max(8, min(40, round(_LEFT_FRACTION * (x1 - x0)))))
    band = gray[top : top + band_height, x0 - left : x1]
    band_width = x1 - x0 + left
    max_height = max(MIN_GLYPH_HEIGHT, min(band_height, round(0.4 * min(x1 - x0, y1 - y0)), 160))
    per_level, marks = _glyphs(band, max_height)
    if top > 0:  # ink cut by the band's top edge is the tail of text above (or a photo's content), not a letter
        per_level = [[g for g in glyphs if g.y0 > 0] for glyphs in per_level]
    if bottom and top + band_height < height:  # likewise ink cut by a bottom band's lower edge
        per_level = [[g for g in glyphs if g.y1 < band_height] for glyphs in per_level]
    if x0 - left > 0:  # and by its left edge
        per_level = [[g for g in glyphs if g.x0 > 0] for glyphs in per_level]
    heights = [g.height for glyphs in per_level for g in glyphs]
    if not heights:
        return []
    typical = float(np.median(heights))
    tokens, seen = [], set()
    for glyphs in per_level:
        for token in _tokens(glyphs):
            key = tuple((g.x0, g.y0, g.x1, g.y1, g.light) for g in token)
            place = _place_weight(token, band_width, band_height, bottom)
            if key not in seen and _may_be_label(token) and place >= MIN_SCORE:
                seen.add(key)
                tokens.append(token)
    if not tokens:
        return []
    mark_boxes = _boxes(marks)
    flat = [merged(attach_parts(g, marks, mark_boxes)) for t in tokens for g in t]
    probs = load_classifier().probabilities(np.stack([glyph_bitmap(g.mask) for g in flat]))
    readings, offset = [], 0
    for token in tokens:
        reading = _parse(token, probs[offset : offset + len(token)])
        offset += len(token)
        if reading is None:
            continue
        size = min(1.0, 0.7 + 0.3 * max(g.height for g in token) / typical)
        score = reading.score * size * _place_weight(token, band_width, band_height, bottom)
        dx, dy = x0 - left, top
        where = (token[0].x0 + dx, min(g.y0 for g in token) + dy, token[-1].x1 + dx, max(g.y1 for g in token) + dy)
        readings.append(Reading(reading.text, score, reading.case_known, reading.bracketed, None if bottom else where))
    return sorted(readings, key=lambda r: -r.score)


def _figure_case(choices: list[Reading | None]) -> bool | None:
    """The case most sure readings share (True for upper), or None when no reading tells."""
    votes = [(r.text[0].isupper(), r.score) for r in choices if r is not None and r.case_known]
    if not votes:
        return None
    upper = sum(s for is_upper, s in votes if is_upper)
    return upper >= sum(s for is_upper, s in votes if not is_upper)


def _with_case(reading: Reading, upper: bool | None) -> Reading:
    """The reading in the figure's case (letters of one figure share it; a bar is its I or l), or as read when the
    figure's case is unknown."""
    if upper is None:
        return reading
    if reading.text[0] in BAR:
        first = "I" if upper else "l"
    else:
        first = reading.text[0].upper() if upper else reading.text[0].lower()
    return Reading(first + reading.text[1:], reading.score, True, reading.bracketed)


def _pick(candidates: list[list[Reading]], bonus: frozenset[str], minimum: float) -> list[Reading | None]:
    """Greedy one-reading-per-panel choice, surest panel first, each label used once; readings of a letter in
    ``bonus`` count ``_SEQUENCE_BONUS`` times their score; choices below ``minimum`` are dropped."""

    def adjusted(reading: Reading) -> float:
        return reading.score * (_SEQUENCE_BONUS if reading.text.upper() in bonus else 1.0)

    best = [max((adjusted(r) for r in c), default=0.0) for c in candidates]
    chosen: list[Reading | None] = [None] * len(candidates)
    used: set[str] = set()
    for i in sorted(range(len(candidates)), key=lambda i: -best[i]):
        free = [r for r in candidates[i] if r.text.upper() not in used and adjusted(r) >= minimum]
        if free:
            top = max(free, key=adjusted)
            chosen[i] = Reading(top.text, min(1.0, adjusted(top)), top.case_known, top.bracketed)
            used.add(top.text.upper())
    return chosen


def _expected(chosen: list[Reading | None]) -> frozenset[str]:
    """The letters a lettered figure of this many panels should use (A onwards), or none when fewer than two
    panels read as single letters."""
    letters = [r.text.upper() for r in chosen if r is not None and len(r.text) == 1]
    if len(letters) < 2:
        return frozenset()
    return frozenset(string.ascii_uppercase[: len(chosen)])


def _resolve(candidates: list[list[Reading]]) -> list[Reading | None]:
    """One reading per panel. Sure readings fix the figure's letter sequence and case; a second pass prefers
    that sequence's letters (so a weak "C" beats a stray "T"), and a single panel left out of an otherwise
    complete sequence gets the one missing letter. Bars take the case the other readings show before the choice,
    so that they compete as the letter they stand for."""
    upper = _figure_case([c[0] if c else None for c in candidates])
    candidates = [[_with_case(r, upper) if r.text[0] in BAR else r for r in c] for c in candidates]
    if len(candidates) == 1:
        bracketed = [[r for r in candidates[0] if r.bracketed or r.score >= _SINGLE_MIN_SCORE]]
        chosen = _pick(bracketed, frozenset(), MIN_SCORE)
    else:
        expected = _expected(_pick(candidates, frozenset(), MIN_SCORE))
        chosen = _pick(candidates, expected, MIN_SCORE)
        missing = sorted(c for c in expected if string.ascii_uppercase.index(c) < len(chosen)) if expected else []
        missing = [c for c in missing if c not in {r.text.upper() for r in chosen if r is not None}]
        unread = [i for i, r in enumerate(chosen) if r is None]
        if len(missing) == 1 and len(unread) == 1 and len(chosen) >= 3:
            chosen[unread[0]] = Reading(missing[0], _FILLED_SCORE, False)
    upper = _figure_case(chosen)
    return [None if r is None else _with_case(r, upper) for r in chosen]


def _corner_owner(where: Box, boxes: list[Box], own: int) -> int:
    """The box whose top-left corner a reading at ``where`` marks: among its own box and those whose corner zone
    (``CORNER_REACH`` of the box's size around its top-left corner) holds the reading's top-left, the one with
    the nearest corner. A letter in a gutter or at a box's right edge so goes to the panel right of or below it."""
    lx, ly = where[0], where[1]
    best, best_distance = own, math.hypot(lx - boxes[own][0], ly - boxes[own][1])
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        reach_x, reach_y = CORNER_REACH * (x1 - x0), CORNER_REACH * (y1 - y0)
        if index == own or not (x0 - reach_x <= lx < x0 + reach_x and y0 - reach_y <= ly < y0 + reach_y):
            continue
        distance = math.hypot(lx - x0, ly - y0)
        if distance < best_distance:
            best, best_distance = index, distance
    return best


def _to_nearest_corner(candidates: list[list[Reading]], boxes: list[Box]) -> list[list[Reading]]:
    """Each box's readings, with every reading handed to the box whose top-left corner it marks (surest first)."""
    moved: list[list[Reading]] = [[] for _ in boxes]
    for index, readings in enumerate(candidates):
        for reading in readings:
            owner = index if reading.where is None else _corner_owner(reading.where, boxes, index)
            moved[owner].append(reading)
    return [sorted(readings, key=lambda r: -r.score) for readings in moved]


def _before(a: Box, b: Box) -> bool:
    """Whether box ``a`` comes before ``b`` in reading order: left of it when they share a row (overlap by half
    the shorter one's height), else above it."""
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    if overlap > 0.5 * min(a[3] - a[1], b[3] - b[1]):
        return a[0] < b[0]
    return a[1] + a[3] < b[1] + b[3]


def _order_agreement(chosen: list[Reading | None], boxes: list[Box]) -> int:
    """Pairs of single-letter labels in the order their boxes are read, less the pairs against it."""
    lettered = [
        (r.text.upper(), box) for r, box in zip(chosen, boxes, strict=True) if r is not None and len(r.text) == 1
    ]
    total = 0
    for i, (first, box_a) in enumerate(lettered):
        for second, box_b in lettered[i + 1 :]:
            if first != second:
                total += 1 if (first < second) == _before(box_a, box_b) else -1
    return total


def read_labels(
    image: Image.Image,
    boxes: list[Box],
    known: list[str | None] | None = None,
    allowed: frozenset[str] = frozenset(),
) -> list[tuple[str | None, float]]:
    """The label printed on each panel box with a confidence in (0, 1]; ``(None, 0.0)`` where none is read.
    Boxes are in ``image`` pixels (x1/y1 exclusive), in any order; empty or out-of-image boxes read as None.
    ``known`` may give some boxes' letters, already read elsewhere: those boxes are not read again, and their
    letters take part in the figure's sequence as sure readings. ``allowed`` (upper-case letters, say those the
    caption names) keeps only the readings of those letters: an "I" read on one of three panels A-C is a stroke."""
    if not boxes:
        return []
    if min(image.size) == 0:
        return [(None, 0.0)] * len(boxes)
    gray = image.convert("L")
    scale = min(1.0, MAX_SIDE / max(gray.size))
    if scale < 1.0:
        size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
        gray = gray.resize(size, Image.Resampling.BOX)
    scaled = [tuple(round(v * scale) for v in box) for box in boxes]
    known = known or [None] * len(boxes)
    pixels = np.asarray(gray)
    candidates = [
        _read_box(pixels, box, allowed) if letter is None else [Reading(letter, 1.0, True)]
        for box, letter in zip(scaled, known, strict=True)
    ]
    chosen = _resolve(candidates)
    moved = _to_nearest_corner(candidates, scaled)
    if moved != candidates:
        alternative = _resolve(moved)
        if _order_agreement(alternative, scaled) > _order_agreement(chosen, scaled):
            chosen = alternative
    return [(None, 0.0) if r is None else (r.text, round(min(1.0, r.score), 4)) for r in chosen]


@dataclass(frozen=True)
class Letter:
    """A panel letter read at the top of a region: its text (brackets dropped), its box in the pixels of the grey
    array it was read in (x1/y1 exclusive), and the classifier's confidence."""

    text: str
    box: Box
    score: float


_LETTER_MIN_SCORE = 0.5
"""A letter read at a region's top must be this sure (bracketed ones ``_BRACKET_BONUS`` times more) to count."""
_ISOLATION = 0.8
"""A panel letter has no glyph of its line within this many of its heights on either side (words do)."""


def _isolated(token: list[Component], others: np.ndarray) -> bool:
    """Whether no other glyph (rows of ``others``: x0, y0, x1, y1) stands on the token's line close beside it."""
    x0, x1 = token[0].x0, token[-1].x1
    y0, y1 = min(g.y0 for g in token), max(g.y1 for g in token)
    reach = _ISOLATION * (y1 - y0)
    ox0, oy0, ox1, oy1 = others.T
    same_line = (np.minimum(oy1, y1) - np.maximum(oy0, y0)) > 0.3 * (y1 - y0)
    beside = ((ox1 > x0 - reach) & (ox1 <= x0 + 1)) | ((ox0 < x1 + reach) & (ox0 >= x1 - 1))
    return not bool(np.any(same_line & beside))


def _band_tokens(band: np.ndarray, max_height: int, cut_top: bool, cut_left: bool) -> tuple[list, list[Component]]:
    """Candidate label tokens of one band (a letter and perhaps a digit or brackets, standing apart from the
    glyphs of its line, at least nearly as tall as the band's typical glyph) and the band's small marks."""
    per_level, marks = _glyphs(band, max_height)
    if cut_top:  # ink cut by the band's top or left edge belongs to something outside it
        per_level = [[g for g in glyphs if g.y0 > 0] for glyphs in per_level]
    if cut_left:
        per_level = [[g for g in glyphs if g.x0 > 0] for glyphs in per_level]
    heights = [g.height for glyphs in per_level for g in glyphs]
    if not heights:
        return [], marks
    floor = 0.8 * float(np.median(heights))
    tokens, seen = [], set()
    for glyphs in per_level:
        if not glyphs:
            continue
        boxes = _boxes(glyphs)
        index = {id(g): i for i, g in enumerate(glyphs)}
        for token in _tokens(glyphs):
            key = tuple((g.x0, g.y0, g.x1, g.y1, g.light) for g in token)
            if key in seen or max(g.height for g in token) < floor or not _may_be_label(token):
                continue
            others = np.delete(boxes, [index[id(g)] for g in token], axis=0)
            if _isolated(token, others):
                seen.add(key)
                tokens.append(token)
    return tokens, marks


def top_letters(gray: np.ndarray, boxes: list[Box], depth: int) -> list[list[Letter]]:
    """The panel letters printed along the top of each box of a grey figure (uint8), surest first: each box's
    band from a little above and left of it down ``depth`` pixels is read with one classifier pass for all
    boxes. Cheap by its pre-screen: only short tokens that stand apart on their line reach the classifier."""
    height, width = gray.shape
    per_box: list[tuple[list, int, int]] = []
    flat: list[Component] = []
    for box in boxes:
        x0, y0, x1, y1 = (int(v) for v in box)
        above, left = min(y0, depth // 4), min(x0, depth // 4)
        bottom = min(y1, y0 + depth, height)
        if bottom - y0 < MIN_GLYPH_HEIGHT or x1 - x0 < MIN_GLYPH_HEIGHT:
            per_box.append(([], 0, 0))
            continue
        band = gray[y0 - above : bottom, x0 - left : min(x1, width)]
        tokens, marks = _band_tokens(band, depth, y0 - above > 0, x0 - left > 0)
        mark_boxes = _boxes(marks)
        flat += [merged(attach_parts(g, marks, mark_boxes)) for t in tokens for g in t]
        per_box.append((tokens, x0 - left, y0 - above))
    if not flat:
        return [[] for _ in boxes]
    probs = load_classifier().probabilities(np.stack([glyph_bitmap(g.mask) for g in flat]))
    found: list[list[Letter]] = []
    offset = 0
    for tokens, dx, dy in per_box:
        letters = []
        for token in tokens:
            reading = _parse(token, probs[offset : offset + len(token)])
            offset += len(token)
            if reading is None or reading.score < _LETTER_MIN_SCORE * (_BRACKET_BONUS if reading.bracketed else 1.0):
                continue
            x0, x1 = token[0].x0 + dx, token[-1].x1 + dx
            y0, y1 = min(g.y0 for g in token) + dy, max(g.y1 for g in token) + dy
            letters.append(Letter(reading.text, (x0, y0, x1, y1), min(1.0, reading.score)))
        found.append(sorted(letters, key=lambda letter: -letter.score))
    return found
