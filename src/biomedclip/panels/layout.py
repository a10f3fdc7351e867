"""Panel detection by layout analysis: compound or single, and the box of each panel.

The figure is cut recursively (an XY cut) at the widest gutter: rows or columns of background as flat as a gutter
(not a path between the cells of a micrograph), flat bands of any colour, thin divider lines (not grid lines
crossed by bars, not the sides of frames), or seams where two abutting images meet (brightness jumps along most
of a straight line while each side changes little beside it; not a line of a lattice, whose edges continue across
it, as a heat map's cells). A cut is kept only when both sides look like panels: big enough for the figure (a share
of its width and height) and holding more than lines of text, so legends, tick labels and titles stay with their
plot. Narrow gaps between frame lines of the same extent are facets of one plot, not gutters; a framed region is
also looked at inside its frame. Strips of text that block every cut (a figure-wide title, row headers) are peeled
off and given back to the one panel they lie along, or to none; a piece of one flat colour (a bar that letterboxes
an image) is no panel.

Pieces are then grouped by their letters, read once by the glyph model (``labels.top_letters``) along each
piece's top: letters on a piece's first line or at its left edge that spell the figure's sequence (A, B, C... in
one case) head panels; a head letter below a piece's first line re-cuts the piece there, a second sequence letter
on its first line splits it, and a piece between two heads whose letter was missed gets it. Every other piece
joins the nearest head above or to its left (the sub-plots of one lettered panel), unless it is a photo or shows
a letter-shaped glyph at its corner. Without such a sequence, a shape test for a letter at each piece's corner
decides instead (when most pieces have one). The letters read are returned with the boxes
(``detect_panels_and_letters``), so label reading does not repeat the pass.

The analysis runs on a foreground mask (pixels away from the background colour) of a copy downscaled to at most
``ANALYSIS_MAX_SIDE`` pixels, with prefix sums so every profile is one subtraction; boxes are mapped back to the
original pixels. Chosen over a learned detector by measurement on the real
development set (benchmarks/panels_detect.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image

from biomedclip.panels.labels import BAR, CASELESS, Letter, top_letters
from biomedclip.panels.types import Box

ANALYSIS_MAX_SIDE = 1000
FOREGROUND_DISTANCE = 28  # max channel difference from the background colour that still counts as background
MIN_PANEL_FRACTION = 0.15  # a panel spans at least this fraction of the figure's width and of its height
MIN_PANEL_PX = 20
MIN_PANEL_AREA_FRACTION = 0.03
LINE_FILL = 0.9  # a divider line covers this fraction of the region it crosses
LINE_MAX_PX = 4
TEXT_MIN_PX = 16  # a line of text is at most this tall (or this fraction of the figure's longer side)
TEXT_FRACTION = 0.025
FACET_GAP_FRACTION = 0.03  # facets of one plot sit closer than this fraction of the figure's longer side
STROKE_TEXT_RATIO = 4  # a stroke this many text heights long is a bar or a line, not a word
SEAM_RATIO = 4  # a seam between filled images steps this many times more than a typical neighbour pair
SEAM_MIN_STEP = 12  # and at least this many grey levels on average along its length
SEAM_STRIP = 3  # pixels on each side of a seam averaged (skipping the 2 px at the seam itself)
SEAM_STEP = 25  # grey levels between the two strips for a row to step
SEAM_SHARE = 0.9  # share of the seam's length that steps
SEAM_FILLED = 0.6  # share of foreground on both sides of a seam: two images, not an axis on white
MAX_SEAM_LINES = 8
ABUT_STEP = 6  # grey levels across 2 px at a seam between abutting images, at one position along it
ABUT_LOCAL = 2  # and this many times the step over the 2 px just beside it on either side (not a gradient)
ABUT_SHARE = 0.75  # share of the seam's filled positions (foreground on either side) that step
ABUT_RATIO = 6  # mean step across the seam over the larger mean step beside it
LATTICE_STEP = 15  # grey levels between neighbours along a seam's side: an edge that meets the seam
LATTICE_MIN_CROSSINGS = 3  # this many edges crossing a seam (and this share of all meeting it) make it a lattice
LATTICE_SHARE = 0.2
BORDER_MAJORITY = 0.6  # the border's commonest colour is the background when it covers this share of the border
MIN_BACKGROUND_SHARE = 0.1  # white or black covers this share of a figure whose border has no majority colour
UNIFORM_VARIANCE = 25  # grey-level variance of a row or column of one flat colour (JPEG noise included): a gutter,
# empty or coloured, is this flat (a path of background between the cells of a micrograph is not)
EDGE_VARIANCE = 100  # a row or column just beside a flat-colour gutter varies at least this much (panel content)
EDGE_PX = 3  # within this many pixels on each side
PHOTO_DENSITY = 0.75  # a piece this full of foreground is a photo or micrograph, a panel on its own
LETTERED_SHARE = 0.6  # pieces are joined to lettered neighbours when this share of them starts with a letter
CONFIDENT_GAP_PX = 12  # a gutter this wide (analysis pixels) leaves no doubt about a cut
FRAME_CORNER_PX = 8  # a frame's corner: a perpendicular line this long leaves the end of a side
LETTER_BAND_TEXT = 3  # panel letters are read in a band this many text heights deep along each piece's top
HEAD_TEXT = 1.0  # a panel's letter starts within this many text heights of its piece's top
ROW_LETTER_TEXT = 2.0  # or, on one line with another panel's letter, this many of its piece's left edge
MAX_SEQUENCE_GAP = 1  # letters of a figure's sequence may skip this many unread letters (A, C: B was missed)
MAX_THIN_BANDS = 4  # more 1-2 px gaps than this along one axis is a grid of cells (a heat map), not panels


_Item = TypeVar("_Item", bound=tuple)  # a tuple whose first item is a box


@dataclass
class _Piece:
    box: Box  # analysis pixels
    gap: int  # width of the narrowest gutter that delimits it (analysis pixels); large when the figure is single


class _Mask:
    """A foreground mask with prefix sums, so any region's row or column profile costs one subtraction."""

    def __init__(self, fg: np.ndarray, gray: np.ndarray, workspace: _Workspace | None = None):
        """``workspace``, if given, holds the tables (until its next use) instead of newly allocated memory."""
        self.fg = fg
        self.height, self.width = fg.shape
        tables = [  # (values, axis, squared, dtype): counts of at most a side's length fit uint16 (half the memory)
            (fg, 1, False, np.uint16), (fg, 0, False, np.uint16), (gray, 1, False, np.int32),
            (gray, 1, True, np.int32), (gray, 0, False, np.int32), (gray, 0, True, np.int32),
        ]  # fmt: skip
        specs = [(axis, dtype) for _, axis, _, dtype in tables]
        outs = workspace.tables(fg.shape, specs) if workspace is not None else [None] * len(tables)
        self.rows, self.cols, self.row_sums, self.row_squares, self.col_sums, self.col_squares = (
            _prefix(values, axis, squared, dtype, out)
            for (values, axis, squared, dtype), out in zip(tables, outs, strict=True)
        )
        self.gray = gray

    def row_profile(self, box: Box) -> np.ndarray:
        x0, y0, x1, y1 = box
        return self.rows[y0:y1, x1] - self.rows[y0:y1, x0]

    def col_profile(self, box: Box) -> np.ndarray:
        x0, y0, x1, y1 = box
        return self.cols[y1, x0:x1] - self.cols[y0, x0:x1]

    def variance(self, box: Box, axis: int) -> np.ndarray:
        """Per row (axis 0) or column (axis 1) of ``box``: the variance of its grey levels."""
        x0, y0, x1, y1 = box
        if axis == 0:
            n = x1 - x0
            total = self.row_sums[y0:y1, x1] - self.row_sums[y0:y1, x0]
            squares = self.row_squares[y0:y1, x1] - self.row_squares[y0:y1, x0]
        else:
            n = y1 - y0
            total = self.col_sums[y1, x0:x1] - self.col_sums[y0, x0:x1]
            squares = self.col_squares[y1, x0:x1] - self.col_squares[y0, x0:x1]
        mean = total / n
        return squares / n - mean * mean

    def flat(self, box: Box) -> bool:
        """Whether the box is one flat colour (its grey levels vary no more than a gutter's): a bar of a colour
        the background test did not take for background, holding nothing."""
        x0, y0, x1, y1 = box
        n = (x1 - x0) * (y1 - y0)
        total = int((self.row_sums[y0:y1, x1] - self.row_sums[y0:y1, x0]).sum())
        squares = int((self.row_squares[y0:y1, x1] - self.row_squares[y0:y1, x0]).sum())
        return n > 0 and squares / n - (total / n) ** 2 <= UNIFORM_VARIANCE

    def trim(self, box: Box) -> Box | None:
        """The smallest box holding all foreground of ``box``, or None when it holds none."""
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            return None
        rows = self.rows[y0:y1, x1] != self.rows[y0:y1, x0]  # rows with foreground: their prefix sums differ
        first = int(rows.argmax())
        if not rows[first]:
            return None
        y0, y1 = y0 + first, y1 - int(rows[::-1].argmax())
        cols = self.cols[y1, x0:x1] != self.cols[y0, x0:x1]
        return x0 + int(cols.argmax()), y0, x1 - int(cols[::-1].argmax()), y1

    def trim_strips(self, box: Box, axis: int, runs: list[tuple[int, int]]) -> list[Box]:
        """``trim`` of each strip of ``box`` across its rows (axis 0) or columns (axis 1) ``runs``, all at once:
        every row (column) of a run holds foreground, so only the extent along the strip is left to find."""
        x0, y0, x1, y1 = box
        starts, ends = (np.array(side) for side in zip(*runs, strict=True))
        if axis == 0:
            ink = self.cols[y0 + ends, x0:x1] != self.cols[y0 + starts, x0:x1]  # one row per strip
            extents = zip(
                ink.argmax(axis=1).tolist(), (ink.shape[1] - ink[:, ::-1].argmax(axis=1)).tolist(), strict=True
            )
            return [(x0 + a, y0 + s, x0 + b, y0 + e) for (s, e), (a, b) in zip(runs, extents, strict=True)]
        ink = self.rows[y0:y1, x0 + ends] != self.rows[y0:y1, x0 + starts]  # one column per strip
        extents = zip(ink.argmax(axis=0).tolist(), (ink.shape[0] - ink[::-1].argmax(axis=0)).tolist(), strict=True)
        return [(x0 + s, y0 + a, x0 + e, y0 + b) for (s, e), (a, b) in zip(runs, extents, strict=True)]


class _Workspace(threading.local):
    """Memory for one figure's prefix sums, reused by the next figure analysed in the same thread: the tables of a
    1000-px figure take ~8 MB, whose fresh pages cost more in page faults (~2 ms) than summing into them."""

    def __init__(self) -> None:
        self.buffer = np.empty(0, np.uint8)

    def tables(self, shape: tuple[int, int], specs: list[tuple[int, type]]) -> list[np.ndarray]:
        """Uninitialised arrays for ``_prefix`` of an array of ``shape``, one per ``(axis, dtype)``: one longer along
        the axis, in C order across the rows (axis 1) and in Fortran order down the columns (axis 0)."""
        height, width = shape
        layouts = [((height, width + 1), "C") if axis == 1 else ((height + 1, width), "F") for axis, _ in specs]
        bytes_each = [r * c * np.dtype(d).itemsize for ((r, c), _), (_, d) in zip(layouts, specs, strict=True)]
        sizes = [-(-n // 64) * 64 for n in bytes_each]  # 64-byte aligned
        if self.buffer.size < sum(sizes):
            self.buffer = np.empty(sum(sizes), np.uint8)
        offsets = np.cumsum([0, *sizes[:-1]]).tolist()
        return [
            np.ndarray(size, dtype, buffer=self.buffer, offset=offset, order=order)
            for (size, order), (_, dtype), offset in zip(layouts, specs, offsets, strict=True)
        ]


_WORKSPACE = _Workspace()


def _run_starts(fg: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Pixels where a straight run of at least ``length`` foreground pixels starts along an axis (1: rightwards,
    0: downwards), by erosion with doubling shifts."""
    eroded = fg.copy()
    covered = 1
    while covered < length:
        shift = min(covered, length - covered)
        if axis == 1:
            eroded[:, :-shift] &= eroded[:, shift:]
            eroded[:, -shift:] = False
        else:
            eroded[:-shift, :] &= eroded[shift:, :]
            eroded[-shift:, :] = False
        covered += shift
    return eroded


def _prefix(
    values: np.ndarray, axis: int, squared: bool = False, dtype: type = np.int32, out: np.ndarray | None = None
) -> np.ndarray:
    """Cumulative sums of the values (or of their squares) along an axis with a leading zero, in int32 (enough for
    1000 squared grey levels) or ``dtype`` (uint16 holds a count of foreground pixels along one side); written
    into ``out`` (of that shape and dtype, any contents) when given."""
    shape = list(values.shape)
    shape[axis] += 1
    # summed along the array's memory order: down the columns of a C array, cumsum strides a whole row per step,
    # several times slower (and far slower at power-of-two widths, as 512-px figures have, by cache aliasing)
    if out is None:
        out = np.empty(shape, dtype, order="F" if axis == 0 else "C")
    if axis == 0:
        out[0, :] = 0
    else:
        out[:, 0] = 0
    inner = out[1:, :] if axis == 0 else out[:, 1:]
    inner[...] = values  # summing in place is several times faster than casting bool or int16 on the way
    if squared:
        np.multiply(inner, inner, out=inner)  # squared in place: no image-sized temporary
    np.cumsum(inner, axis=axis, out=inner)
    return out


def _rgb_array(image: Image.Image) -> np.ndarray:
    """The image as an RGB uint8 array; transparency is composited on white, high bit depths are rescaled."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        gray = np.zeros(values.shape, np.uint8) if hi <= lo else ((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "La":  # premultiplied alpha converts only to LA
        image = image.convert("LA")
    if image.mode in ("RGBA", "RGBa", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _dominant_colour(pixels: np.ndarray) -> np.ndarray:
    """The median colour of the most populated 16-level RGB bin."""
    bins = (pixels[:, 0] >> 4).astype(np.int32) << 8 | (pixels[:, 1] >> 4).astype(np.int32) << 4 | pixels[:, 2] >> 4
    return np.median(pixels[bins == int(np.argmax(np.bincount(bins, minlength=4096)))], axis=0).astype(np.int16)


def _foreground(rgb: np.ndarray) -> np.ndarray:
    """Pixels that differ from the background colour (the most frequent colour), isolated specks removed."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = _dominant_colour(border)
    if np.mean(np.abs(border.astype(np.int16) - background).max(axis=1) <= FOREGROUND_DISTANCE) < BORDER_MAJORITY:
        # panels reach the edges: of the border's commonest colour, white and black (if common enough), the one that
        # runs across most whole rows and columns (gutters, margins); none of them: white or black if common enough;
        # else no background (gutters are then flat bands)
        r, g, b = (rgb[::2, ::2, channel] for channel in range(3))  # channel by channel: min(axis=2) is ~15x slower
        white = np.mean(np.minimum(np.minimum(r, g), b) >= 255 - FOREGROUND_DISTANCE)
        black = np.mean(np.maximum(np.maximum(r, g), b) <= FOREGROUND_DISTANCE)
        extremes = _line_extremes(rgb)
        candidates = [(_clear_lines(extremes, background), -1.0, background)]  # the border's commonest colour
        for share, level in ((white, 255), (black, 0)):
            if share >= MIN_BACKGROUND_SHARE:
                colour = np.full(3, level, np.int16)
                candidates.append((_clear_lines(extremes, colour), share, colour))
        lines, share, best = max(candidates, key=lambda c: c[:2])
        if lines == 0 and share < MIN_BACKGROUND_SHARE:
            return np.ones(rgb.shape[:2], bool)
        background = best
    fg = np.zeros(rgb.shape[:2], bool)
    for channel in range(3):  # |value - background| > distance, compared in uint8 (no wider copies of the image)
        values, level = rgb[:, :, channel], int(background[channel])
        if level - FOREGROUND_DISTANCE > 0:
            fg |= values < level - FOREGROUND_DISTANCE
        if level + FOREGROUND_DISTANCE < 255:
            fg |= values > level + FOREGROUND_DISTANCE
    neighbours = np.zeros(fg.shape, bool)
    neighbours[1:, :] |= fg[:-1, :]
    neighbours[:-1, :] |= fg[1:, :]
    neighbours[:, 1:] |= fg[:, :-1]
    neighbours[:, :-1] |= fg[:, 1:]
    return fg & neighbours


def _line_extremes(rgb: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row and per column of the image, each channel's least and greatest value (rows first)."""
    return _row_reduce(rgb, np.minimum), _row_reduce(rgb, np.maximum), rgb.min(axis=0), rgb.max(axis=0)


def _row_reduce(rgb: np.ndarray, op: np.ufunc) -> np.ndarray:
    """``op`` (minimum or maximum) over each row of an (H, W, C) array, as ``op.reduce(rgb, axis=1)`` but folding
    halves of the rows onto each other: whole-block operations instead of a per-pixel strided scan (~20x faster)."""
    folded = rgb
    while folded.shape[1] > 1:
        half = folded.shape[1] // 2
        odd = folded[:, 2 * half :]
        folded = op(folded[:, :half], folded[:, half : 2 * half])
        if odd.shape[1]:
            folded[:, :1] = op(folded[:, :1], odd)
    return folded[:, 0]


def _clear_lines(extremes: tuple[np.ndarray, ...], colour: np.ndarray) -> int:
    """How many whole rows and columns of the image (given by ``_line_extremes``) are of one colour: gutters and
    margins, if it is the background."""
    low, high = colour - FOREGROUND_DISTANCE, colour + FOREGROUND_DISTANCE
    row_min, row_max, col_min, col_max = extremes
    rows = ((row_min >= low) & (row_max <= high)).all(axis=1)
    cols = ((col_min >= low) & (col_max <= high)).all(axis=1)
    return int(rows.sum() + cols.sum())


def _uniform(variance: np.ndarray) -> np.ndarray:
    """Per row or column of a box, given the ``variance`` of each: whether it is one flat colour (a gutter of any
    colour)."""
    flat = variance <= UNIFORM_VARIANCE
    for start, end in _runs(flat):
        before, after = variance[max(0, start - EDGE_PX) : start], variance[end : end + EDGE_PX]
        if any(side.size and side.max() < EDGE_VARIANCE for side in (before, after)):
            flat[start:end] = False  # fades into its surroundings: a flat area of a photo, not a gutter
    return flat


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges where ``flags`` is true."""
    padded = np.zeros(np.size(flags) + 2, bool)  # false on both ends: every run has a rising and a falling edge
    padded[1:-1] = flags
    edges = (padded[1:] != padded[:-1]).nonzero()[0].tolist()
    return list(zip(edges[::2], edges[1::2], strict=True))


class _Splitter:
    def __init__(self, mask: _Mask):
        self.mask = mask
        self.min_w = max(MIN_PANEL_PX, MIN_PANEL_FRACTION * mask.width)
        self.min_h = max(MIN_PANEL_PX, MIN_PANEL_FRACTION * mask.height)
        self.min_area = MIN_PANEL_AREA_FRACTION * mask.width * mask.height
        self.text_px = max(TEXT_MIN_PX, TEXT_FRACTION * max(mask.width, mask.height))
        stroke = STROKE_TEXT_RATIO * self.text_px
        self.long_h = _run_starts(mask.fg, int(stroke), axis=1)
        self.long_v = _run_starts(mask.fg, int(stroke), axis=0)
        self.facet_px = FACET_GAP_FRACTION * max(mask.width, mask.height)
        self.decorations: list[Box] = []  # strips peeled off a region that was then cut
        self.pending: list[Box] = []  # strips peeled off the region under examination
        self._graphic: dict[Box, bool] = {}  # answers by box: the recursive cuts ask about the same sides again
        self._cuts: dict[Box, tuple[int, Box, Box] | None] = {}

    def big_enough(self, box: Box) -> bool:
        w, h = box[2] - box[0], box[3] - box[1]
        return w >= self.min_w and h >= self.min_h and w * h >= self.min_area

    def graphic(self, box: Box) -> bool:
        """Whether the box holds more than lines of text: cut at every gap, some block is thicker than a line of
        text, or a thin block carries a stroke too long for text (a bar, an axis). A frame does not count: a
        framed box of text is a legend."""
        if box not in self._graphic:
            self._graphic[box] = self._holds_graphic(box)
        return self._graphic[box]

    def _holds_graphic(self, box: Box) -> bool:
        stack = [self.unframe(box) or box]
        while stack:
            x0, y0, x1, y1 = stack.pop()
            w, h = x1 - x0, y1 - y0
            if min(w, h) <= self.text_px:
                strokes = self.long_h if w >= h else self.long_v
                if strokes[y0:y1, x0:x1].any():  # a thin box: scanning it beats a summed-area table of the figure
                    return True
                continue
            for axis in (0, 1):
                profile = (
                    self.mask.row_profile((x0, y0, x1, y1)) if axis == 0 else self.mask.col_profile((x0, y0, x1, y1))
                )
                filled = _runs(profile > 0)
                if len(filled) > 1:
                    stack.extend(self.mask.trim_strips((x0, y0, x1, y1), axis, filled))
                    break
            else:
                return True
        return False

    def panel_like(self, box: Box | None) -> bool:
        return box is not None and self.big_enough(box) and self.graphic(box)

    def bands(self, box: Box, axis: int) -> list[tuple[int, int]]:
        """Gutters across ``box``: runs of empty rows (axis 0) or columns (axis 1), and thin full-length lines."""
        profile = self.mask.row_profile(box) if axis == 0 else self.mask.col_profile(box)
        span = (box[2] - box[0]) if axis == 0 else (box[3] - box[1])
        variance = self.mask.variance(box, axis)
        empty = (profile == 0) & (variance <= UNIFORM_VARIANCE)
        for start, end in _runs(_uniform(variance)):
            if start > 0 and end < len(profile):
                thick = end - start > LINE_MAX_PX
                between_images = min(profile[start - 1], profile[end]) >= SEAM_FILLED * span
                if thick or between_images:
                    empty[start:end] = True  # a flat band of any colour; a thin flat line in a frame is not
        full = profile >= LINE_FILL * span
        origin = box[1] if axis == 0 else box[0]
        for start, end in _runs(full):
            if end - start <= LINE_MAX_PX and start > 0 and end < len(profile):
                near = np.concatenate([profile[max(0, start - 3) : start], profile[end : end + 3]])
                line = (origin + start, origin + end)
                quiet = near.max() <= 0.5 * profile[start:end].min()
                if quiet and not self.crossed(box, axis, *line) and not self.frame_side(box, axis, *line):
                    empty[start:end] = True
        runs = [(s, e) for s, e in _runs(empty) if s > 0 and e < len(profile)]
        thin = [r for r in runs if r[1] - r[0] <= 2]
        if len(thin) > MAX_THIN_BANDS:
            runs = [r for r in runs if r[1] - r[0] > 2]
        return [(origin + s, origin + e) for s, e in runs if not self.facet_gap(box, axis, origin + s, origin + e)]

    def _edge(self, box: Box, axis: int, index: int) -> np.ndarray:
        """The mask's row (axis 0) or column (axis 1) ``index`` within ``box``."""
        if axis == 0:
            return self.mask.fg[index, box[0] : box[2]]
        return self.mask.fg[box[1] : box[3], index]

    def crossed(self, box: Box, axis: int, start: int, end: int) -> bool:
        """Whether ink runs through a line (a grid line under bars), rather than the line dividing two panels."""
        through = self._edge(box, axis, start - 1) & self._edge(box, axis, end)
        return int(through.sum()) > 0.1 * through.size

    def frame_side(self, box: Box, axis: int, start: int, end: int) -> bool:
        """Whether a line is the side of a frame: at one of its ends a perpendicular line leaves it on one side only
        (a corner), where a divider ends free, meets other dividers in a cross, or meets the edge of an image."""
        along = self._edge(box, axis, start)
        ink = np.flatnonzero(along)
        lo = box[0] if axis == 0 else box[1]
        reach = FRAME_CORNER_PX
        for tip, inward in ((int(ink[0]), 1), (int(ink[-1]), -1)):
            sides = []
            for at in (tip, tip + inward * (LINE_MAX_PX + 1)):  # at the tip, and just inside it
                if axis == 0:  # a horizontal line: look up and down
                    before = self.mask.fg[max(box[1], start - reach) : start, lo + at]
                    after = self.mask.fg[end : min(box[3], end + reach), lo + at]
                else:  # a vertical line: look left and right
                    before = self.mask.fg[lo + at, max(box[0], start - reach) : start]
                    after = self.mask.fg[lo + at, end : min(box[2], end + reach)]
                sides.append((before.size and before.all(), after.size and after.all()))
            (tip_before, tip_after), (in_before, in_after) = sides
            # a corner: a thin perpendicular line on one side only (just inside the tip, that side is no longer ink;
            # a filled image's edge there is not a line)
            if tip_before != tip_after and not (in_before if tip_before else in_after):
                return True
        return False

    def facet_gap(self, box: Box, axis: int, start: int, end: int) -> bool:
        """Whether a narrow gap separates facets of one plot: frame lines of the same extent face each other."""
        if end - start > self.facet_px:
            return False
        spans = []
        for index, inward in ((start - 1, start - 4), (end, end + 3)):
            runs = [r for r in _runs(self._edge(box, axis, index)) if r[1] - r[0] >= 0.3 * (box[2 + axis] - box[axis])]
            if not runs:
                return False
            span = max(runs, key=lambda r: r[1] - r[0])
            lo, hi = (box[1], box[3]) if axis == 0 else (box[0], box[2])
            if lo <= inward < hi and self._edge(box, axis, inward)[span[0] : span[1]].mean() > 0.5:
                return False  # filled on: the edge of an image, not a frame line
            spans.append(span)
        (a0, a1), (b0, b1) = spans
        overlap = min(a1, b1) - max(a0, b0)
        return overlap >= 0.9 * max(a1 - a0, b1 - b0)

    def sides(self, box: Box, axis: int, band: tuple[int, int]) -> tuple[Box | None, Box | None]:
        x0, y0, x1, y1 = box
        if axis == 0:
            return self.mask.trim((x0, y0, x1, band[0])), self.mask.trim((x0, band[1], x1, y1))
        return self.mask.trim((x0, y0, band[0], y1)), self.mask.trim((band[1], y0, x1, y1))

    def best_cut(self, box: Box) -> tuple[int, Box, Box] | None:
        """The widest gutter across the box with a panel-like region on each side, or None (asked once per box)."""
        if box not in self._cuts:
            self._cuts[box] = self._widest_cut(box)
        return self._cuts[box]

    def _widest_cut(self, box: Box) -> tuple[int, Box, Box] | None:
        """The widest band whose sides are both panel-like, the first found (rows before columns, in order) among
        equally wide ones: bands are tried widest first, so the narrower ones are never looked at once one holds."""
        bands = [(band[1] - band[0], axis, band) for axis in (0, 1) for band in self.bands(box, axis)]
        for width, axis, band in sorted(bands, key=lambda b: -b[0]):  # a stable sort: ties keep their order
            first, second = self.sides(box, axis, band)
            if self.panel_like(first) and self.panel_like(second):
                return width, first, second
        return None

    def peel(self, box: Box) -> Box | None:
        """The box without the thin text strips along its edges, or None when nothing is peeled."""
        core = box
        for axis in (0, 1):
            bands = self.bands(core, axis)
            if not bands:
                continue
            lo, hi = (core[1], core[3]) if axis == 0 else (core[0], core[2])
            edges = [lo] + [b for band in bands for b in band] + [hi]
            segments = [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
            limit = self.min_h if axis == 0 else self.min_w
            first, last = 0, len(segments) - 1
            while first < last and segments[first][1] - segments[first][0] < limit:
                first += 1
            while last > first and segments[last][1] - segments[last][0] < limit:
                last -= 1
            new_lo, new_hi = segments[first][0], segments[last][1]
            if (new_lo, new_hi) == (lo, hi):
                continue
            if axis == 0:
                strips = [(core[0], lo, core[2], new_lo), (core[0], new_hi, core[2], hi)]
                inner = (core[0], new_lo, core[2], new_hi)
            else:
                strips = [(lo, core[1], new_lo, core[3]), (new_hi, core[1], hi, core[3])]
                inner = (new_lo, core[1], new_hi, core[3])
            trimmed = self.mask.trim(inner)
            if trimmed is None:
                return None
            self.pending.extend(s for s in (self.mask.trim(s) for s in strips) if s is not None)
            core = trimmed
        return None if core == box else core

    def unframe(self, box: Box) -> Box | None:
        """The inside of a rectangular frame drawn around the box, or None when the box has no frame."""
        x0, y0, x1, y1 = box
        rows, cols = self.mask.row_profile(box), self.mask.col_profile(box)
        edges = (rows[:LINE_MAX_PX], rows[::-1][:LINE_MAX_PX], cols[:LINE_MAX_PX], cols[::-1][:LINE_MAX_PX])
        spans = (x1 - x0, x1 - x0, y1 - y0, y1 - y0)
        depth = []
        for edge, span in zip(edges, spans, strict=True):
            full = edge >= LINE_FILL * span
            if full.all() or not full.any():
                return None  # no line along this edge (faint anti-aliased rows may come first), or a filled image
            depth.append(int(np.flatnonzero(full)[-1]) + 1)
        return self.mask.trim((x0 + depth[2], y0 + depth[0], x1 - depth[3], y1 - depth[1]))

    def seam(self, box: Box) -> tuple[int, Box, Box] | None:
        """A straight edge where two abutting images meet (no gutter): a column (or row) where, in most rows, the
        strips of pixels on its two sides differ in brightness. A thin line (an axis, a frame) is skipped over by
        the strips, so only a change of content counts; at least one side must be filled (an image)."""
        x0, y0, x1, y1 = box
        if int(self.mask.row_profile(box).sum()) < SEAM_FILLED * (x1 - x0) * (y1 - y0) / 2:
            return None  # mostly background: gutters, not seams, separate its parts
        best = None
        gray, fg = self.mask.gray[y0:y1, x0:x1], self.mask.fg[y0:y1, x0:x1]
        for axis in (0, 1):
            n, w = gray.shape[axis], SEAM_STRIP
            if n < 2 * w + 4:
                continue
            fill = fg.mean(axis=1 - axis)
            # cumulative sums along the axis, in the grey array's own layout; ``sums`` holds one line per row
            table = np.zeros((n + 1, gray.shape[1]) if axis == 0 else (gray.shape[0], n + 1), np.int32)
            np.cumsum(gray, axis=axis, out=table[1:] if axis == 0 else table[:, 1:])
            sums = table.T if axis == 0 else table
            k = np.arange(w + 1, n - w)  # candidate seams; the strips are [k - 1 - w, k - 1) and [k + 1, k + 1 + w)
            left = sums[:, w : n - w - 1] - sums[:, : n - 2 * w - 1]
            right = sums[:, 2 * w + 2 :] - sums[:, w + 2 : n - w + 1]
            share = (np.abs(left - right) > SEAM_STEP * w).mean(axis=0)
            peaks = (share >= np.maximum(np.roll(share, 1), np.roll(share, -1))) & (share >= SEAM_SHARE / 2)
            if np.count_nonzero(peaks) > MAX_SEAM_LINES:
                continue  # edges everywhere: cells of a heat map or a table, not a few abutting images
            for i in np.flatnonzero(peaks & (share >= SEAM_SHARE)):
                cut = int(k[i])
                if max(fill[cut - 2], fill[cut + 1]) < SEAM_FILLED:
                    continue
                first, second = self.sides(box, axis, ((y0 if axis == 0 else x0) + cut,) * 2)
                better = best is None or share[i] > best[0]
                if better and self.panel_like(first) and self.panel_like(second):
                    best = (float(share[i]), first, second)
        return None if best is None else (0, best[1], best[2])

    def texture_seam(self, box: Box) -> tuple[int, Box, Box] | None:
        """A straight edge between two abutting images that both fill their side: a column (or row) whose mean
        change of brightness stands out from the image's own texture."""
        x0, y0, x1, y1 = box
        ink = int(self.mask.row_profile(box).sum())
        if ink < SEAM_FILLED * (x1 - x0) * (y1 - y0) / 2:
            return None  # mostly background: gutters, not seams, separate its parts
        gray = self.mask.gray[y0:y1, x0:x1]
        best = None
        for axis in (0, 1):
            step = np.abs(np.diff(gray, axis=axis)).mean(axis=1 - axis)
            if step.size < 3:
                continue
            share = step / max(float(np.median(step)), SEAM_MIN_STEP / SEAM_RATIO)
            if np.count_nonzero(share >= SEAM_RATIO / 2) > MAX_SEAM_LINES:
                continue  # edges everywhere: cells of a heat map or a table, not a few abutting images
            filled = self.mask.fg[y0:y1, x0:x1].mean(axis=1 - axis)
            for index in np.flatnonzero(share >= SEAM_RATIO):
                cut = int(index) + 1
                if index < 2 or cut + 2 >= filled.size or min(filled[index - 2], filled[cut + 2]) < SEAM_FILLED:
                    continue  # an image edge against background is a frame or an axis, not a seam
                first, second = self.sides(box, axis, ((y0 if axis == 0 else x0) + cut,) * 2)
                better = best is None or share[index] > best[0]
                if better and self.panel_like(first) and self.panel_like(second):
                    best = (float(share[index]), first, second)
        return None if best is None else (0, best[1], best[2])

    def abutting_seam(self, box: Box) -> tuple[int, Box, Box] | None:
        """A straight edge where two images meet with no gutter, or an image meets the blank margin of a plot:
        along most of its length one side or both are foreground, and there the brightness jumps across it while
        it changes little just beside it on either side (a discontinuity, not the steep part of a gradient inside
        one image; a thin line, an axis or a frame, is stepped over by the 2-pixel window and does not count)."""
        x0, y0, x1, y1 = box
        if int(self.mask.row_profile(box).sum()) < SEAM_FILLED * (x1 - x0) * (y1 - y0) / 2:
            return None  # mostly background: gutters, not seams, separate its parts
        best = None
        for axis in (0, 1):
            gray = self.mask.gray[y0:y1, x0:x1]
            fg = self.mask.fg[y0:y1, x0:x1]
            if axis == 0:
                gray, fg = gray.T, fg.T
            length, n = gray.shape  # positions along a candidate seam, candidates across
            if n < 12:
                continue
            step = np.abs(gray[:, 2:] - gray[:, :-2])  # step[:, j]: across pixels j .. j + 2
            centre, before, after = step[:, 2:-2], step[:, :-4], step[:, 4:]
            filled = fg[:, 2:-4] | fg[:, 4:-2]  # foreground at either end of the window
            edge = filled & (centre >= ABUT_STEP) & (centre >= ABUT_LOCAL * np.maximum(before, after))
            n_filled = filled.sum(axis=0)
            n_edge = edge.sum(axis=0)
            weight = filled.astype(np.int16)
            jump = (centre * weight).sum(axis=0)
            beside = np.maximum((before * weight).sum(axis=0), (after * weight).sum(axis=0))
            share = n_edge / np.maximum(n_filled, 1)
            ok = (
                (n_filled >= SEAM_FILLED * length)
                & (share >= ABUT_SHARE)
                & (jump >= ABUT_RATIO * np.maximum(beside, n_filled))
            )
            weak = (n_filled >= SEAM_FILLED * length) & (share >= ABUT_SHARE / 2)
            peaks = weak & (share >= np.maximum(np.roll(share, 1), np.roll(share, -1)))
            if np.count_nonzero(peaks) > MAX_SEAM_LINES:
                continue  # edges everywhere: cells of a heat map or a table, not a few abutting images
            for i in np.flatnonzero(ok & peaks):
                j = int(i) + 2  # the window covers pixels j .. j + 2: the seam is after j or after j + 1
                single = np.abs(np.diff(gray[:, j : j + 3], axis=1)).sum(axis=0)
                cut = j + 1 if single[0] >= single[1] else j + 2
                first, second = self.sides(box, axis, ((y0 if axis == 0 else x0) + cut,) * 2)
                better = best is None or share[i] > best[0]
                crossed = better and _crossed_lattice(gray[:, j - 2], gray[:, j + 4])
                if better and not crossed and self.panel_like(first) and self.panel_like(second):
                    best = (float(share[i]), first, second)
        return None if best is None else (0, best[1], best[2])

    def split(self, box: Box, gap: int) -> list[_Piece]:
        inner = self.unframe(box)
        if inner is not None and inner != box:
            pieces = self.split(inner, gap)
            return pieces if len(pieces) > 1 else [_Piece(box, gap)]
        cut = self.best_cut(box) or self.abutting_seam(box) or self.texture_seam(box) or self.seam(box)
        if cut is not None:
            width, first, second = cut
            return self.split(first, min(gap, width)) + self.split(second, min(gap, width))
        self.pending = []
        core = self.peel(box)
        strips = self.pending
        if core is not None and self.best_cut(core) is not None:
            self.decorations.extend(strips)
            return self.split(core, gap)
        return [_Piece(box, gap)]


def _crossed_lattice(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether edges across a seam continue through it: the lines of pixels just before and after the seam
    (along it) both step at the same places (one pixel apart at most), as the row boundaries of a heat map or a
    table cross its column boundaries, where two independent images have their edges at unrelated places."""
    first = np.abs(np.diff(before)) >= LATTICE_STEP
    second = np.abs(np.diff(after)) >= LATTICE_STEP
    near = second.copy()
    near[1:] |= second[:-1]
    near[:-1] |= second[1:]
    crossings = int(np.count_nonzero(first & near))
    return crossings >= LATTICE_MIN_CROSSINGS and crossings >= LATTICE_SHARE * int(np.count_nonzero(first | second))


def _attach_decorations(pieces: list[_Piece], decorations: list[Box]) -> None:
    """Give each peeled strip to the one panel it lies along, or to none when it spans several."""
    for d in decorations:
        touching = []
        for piece in pieces:
            b = piece.box
            x_overlap = min(b[2], d[2]) - max(b[0], d[0])
            y_overlap = min(b[3], d[3]) - max(b[1], d[1])
            if x_overlap > 0 or y_overlap > 0:
                gap = max(b[0] - d[2], d[0] - b[2], b[1] - d[3], d[1] - b[3])
                touching.append((gap, piece, x_overlap, y_overlap))
        if not touching:
            continue
        nearest_gap = min(t[0] for t in touching)
        nearest = [t for t in touching if t[0] <= nearest_gap + 4]
        if len(nearest) != 1:
            continue
        _, piece, x_overlap, y_overlap = nearest[0]
        d_w, d_h = d[2] - d[0], d[3] - d[1]
        if (x_overlap > 0 and x_overlap >= 0.6 * d_w) or (y_overlap > 0 and y_overlap >= 0.6 * d_h):
            b = piece.box
            piece.box = (min(b[0], d[0]), min(b[1], d[1]), max(b[2], d[2]), max(b[3], d[3]))


def _has_letter(mask: _Mask, box: Box, text_px: float) -> bool:
    """Whether the box starts with a panel letter: a small glyph group at its top-left corner, apart from the
    next ink on its own rows."""
    x0, y0, x1, y1 = box
    first_line = _runs(mask.row_profile((x0, y0, x1, min(y1, y0 + int(2 * text_px)))) > 0)
    if not first_line:
        return False
    top, bottom = y0 + first_line[0][0], y0 + first_line[0][1]
    glyphs = _runs(mask.col_profile((x0, top, x1, bottom)) > 0)
    if not glyphs or glyphs[0][0] > max(6, 0.08 * (x1 - x0)):
        return False
    # the leftmost glyph's own rows: lines below it may touch the first line's rows further right
    leftmost = mask.trim((x0 + glyphs[0][0], top, x0 + glyphs[0][1], bottom))
    if leftmost is None:
        return False
    top, bottom = leftmost[1], leftmost[3]
    glyphs = _runs(mask.col_profile((x0, top, x1, bottom)) > 0)
    height = bottom - top
    words = [list(glyphs[0])]  # glyphs closer than a third of the line height are one word
    for start, end in glyphs[1:]:
        if start - words[-1][1] < max(2, height / 3):
            words[-1][1] = end
        else:
            words.append([start, end])
    word = mask.trim((x0 + words[0][0], top, x0 + words[0][1], bottom))
    if word is None:
        return False
    w, h = word[2] - word[0], word[3] - word[1]
    if not (5 <= h <= 1.5 * text_px and w <= 2.6 * h):
        return False
    return len(words) == 1 or words[1][0] - words[0][1] >= h


def _head_letters(letters: list[list[Letter]], boxes: list[Box], text_px: float) -> list[list[Letter]]:
    """The letters that may head their piece: those on its first line or at its left edge (letters further in
    name parts of plots), and those on one line with another piece's such letter (a row of panels whose letters
    sit below a title that runs across their pieces' tops)."""
    reach = HEAD_TEXT * text_px
    near = [
        [t for t in found if min(t.box[1] - box[1], t.box[0] - box[0]) <= reach]
        for found, box in zip(letters, boxes, strict=True)
    ]
    lines = [(t.box[1], t.box[3]) for found in near for t in found]
    return [
        kept
        + [
            t
            for t in found
            if t not in kept
            and t.box[0] - box[0] <= ROW_LETTER_TEXT * text_px
            and any(min(y1, t.box[3]) - max(y0, t.box[1]) > 0.5 * (t.box[3] - t.box[1]) for y0, y1 in lines)
        ]
        for found, kept, box in zip(letters, near, boxes, strict=True)
    ]


def _sequence_heads(letters: list[list[Letter]]) -> tuple[list[Letter | None], list[tuple[int, Letter]]]:
    """The letter heading each piece when the pieces' top letters spell the figure's sequence (A, B, C... in the
    figure's case, ``MAX_SEQUENCE_GAP`` unread letters skipped): each letter in turn goes to the piece reading it
    most surely that has none yet; a stray letter past the run (a "T" of a title) heads nothing. Also returned: the
    run's letters read only on pieces that already have a head (two panels in one piece), with their piece."""
    cased = [
        (t.text[0].isupper(), t.score)
        for found in letters
        for t in found
        if t.text[0].upper() not in CASELESS and t.text[0] not in BAR
    ]
    upper = sum(s for is_upper, s in cased if is_upper) >= sum(s for is_upper, s in cased if not is_upper)
    heads: list[Letter | None] = [None] * len(letters)
    extras: list[tuple[int, Letter]] = []
    missed = 0
    for code in range(ord("A"), ord("Z") + 1):
        wanted = chr(code) if upper else chr(code).lower()
        options = [
            (heads[i] is None, letter.score, i, letter)
            for i, found in enumerate(letters)
            for letter in found
            if letter.text == wanted
            or (chr(code) in CASELESS and letter.text.upper() == chr(code))
            or (wanted in BAR and letter.text in BAR)
        ]
        if not options:
            missed += 1
            if missed > MAX_SEQUENCE_GAP:
                break
            continue
        missed = 0
        free, _, index, letter = max(options, key=lambda option: option[:2])
        letter = Letter(wanted, letter.box, letter.score)  # in the figure's case (c/C, s/S... read alike)
        if free:
            heads[index] = letter
        else:
            extras.append((index, letter))
    return heads, extras


def _fill_gaps(pieces: list[_Piece], heads: list[Letter | None]) -> list[Letter | None]:
    """Heads for letters the sequence skips (A before a found B, C between found B and D): when exactly one
    unheaded piece lies between the neighbouring letters' pieces in reading order, the missing letter is its."""
    order = [i for (_, i) in _reading_order([(p.box, i) for i, p in enumerate(pieces)])]
    rank = {i: r for r, i in enumerate(order)}
    codes = {ord(h.text.upper()): i for i, h in enumerate(heads) if h is not None}
    filled = list(heads)
    for code in range(ord("A"), max(codes, default=ord("A"))):
        if code in codes:
            continue
        before = [rank[i] for c, i in codes.items() if c < code]
        after = [rank[i] for c, i in codes.items() if c > code]
        lo, hi = max(before, default=-1), min(after)
        between = [order[r] for r in range(lo + 1, hi) if filled[order[r]] is None]
        if len(between) == 1:
            text = chr(code) if next(h for h in heads if h is not None).text.isupper() else chr(code).lower()
            filled[between[0]] = Letter(text, pieces[between[0]].box, 0.0)
    return filled


def _cut_at_letters(
    splitter: _Splitter, pieces: list[_Piece], heads: list[Letter | None], extras: list[tuple[int, Letter]]
) -> tuple[list[_Piece], list[Letter | None]]:
    """Pieces re-cut by their letters: a head letter standing below a piece's first line at its left edge starts
    its panel there when another piece lies above (what lies above the letter is left unheaded, to join that
    piece's panel); a second letter of the sequence
    on a piece's first line, right of its head, starts a panel of its own (two panels without a gutter)."""
    mask, text = splitter.mask, splitter.text_px
    out_pieces, out_heads = [], []
    second = dict(extras)
    for index, (piece, head) in enumerate(zip(pieces, heads, strict=True)):
        x0, y0, x1, y1 = piece.box
        above = any(p.box[3] <= y0 + 2 and min(p.box[2], x1) - max(p.box[0], x0) > 0 for p in pieces)
        if head is not None and head.box[1] > y0 + HEAD_TEXT * text and above:
            upper, lower = mask.trim((x0, y0, x1, head.box[1] - 1)), mask.trim((x0, head.box[1] - 1, x1, y1))
            if upper is not None and lower is not None and splitter.big_enough(lower):
                out_pieces.append(_Piece(upper, piece.gap))
                out_heads.append(None)
                piece = _Piece(lower, piece.gap)
                x0, y0, x1, y1 = piece.box
        extra = second.get(index)
        if head is not None and extra is not None and extra.box[0] > head.box[2] + text:
            left, right = mask.trim((x0, y0, extra.box[0] - 1, y1)), mask.trim((extra.box[0] - 1, y0, x1, y1))
            near_top = extra.box[1] <= y0 + HEAD_TEXT * text
            if near_top and left and right and splitter.big_enough(left) and splitter.big_enough(right):
                out_pieces += [_Piece(left, piece.gap), _Piece(right, 0)]
                out_heads += [head, extra]
                continue
        out_pieces.append(piece)
        out_heads.append(head)
    return out_pieces, out_heads


def _density(mask: _Mask, box: Box) -> float:
    """Share of foreground pixels in the box."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    return float(mask.row_profile(box).sum()) / area if area else 0.0


def _merge_unlettered(pieces: list[_Piece], lettered: list[bool | None]) -> list[_Piece]:
    """When most pieces start with a letter, join each piece without one (False; None stands alone) to its
    lettered neighbour above or left."""
    groups = [(piece, has) for piece, has in zip(pieces, lettered, strict=True)]
    while True:
        heads = [g for g in groups if g[1] is True]
        orphans = [g for g in groups if g[1] is False]
        if not orphans or not heads:
            return [g[0] for g in groups]
        merged = False
        for orphan in orphans:
            o = orphan[0].box
            candidates = []
            for head in heads:
                b = head[0].box
                x_overlap = min(b[2], o[2]) - max(b[0], o[0])
                y_overlap = min(b[3], o[3]) - max(b[1], o[1])
                # above: starts higher and ends before the orphan's middle (boxes may overlap by a margin)
                above = b[1] < o[1] and b[3] <= (o[1] + o[3]) / 2 and x_overlap > 0.3 * min(b[2] - b[0], o[2] - o[0])
                left = b[0] < o[0] and b[2] <= (o[0] + o[2]) / 2 and y_overlap > 0.3 * min(b[3] - b[1], o[3] - o[1])
                if above or left:
                    candidates.append((max(0, o[1] - b[3] if above else o[0] - b[2]), id(head), head))
            for _, _, best in sorted(candidates, key=lambda c: c[:2]):  # the nearest head it can join
                head = best[0]
                union = _union(head.box, o)
                swallowed = [orphan]
                grown = True
                while grown:  # unlettered pieces the union reaches join it too
                    grown = False
                    for g in groups:
                        if g[1] is False and g not in swallowed and _overlaps(union, g[0].box):
                            swallowed.append(g)
                            union = _union(union, g[0].box)
                            grown = True
                if any(_overlaps(union, g[0].box) for g in groups if g[0] is not head and g not in swallowed):
                    continue  # never over another lettered panel or a photo
                head.box = union
                for g in swallowed:
                    head.gap = min(head.gap, g[0].gap)
                    groups.remove(g)
                merged = True
                break
            if merged:
                break
        if not merged:
            return [g[0] for g in groups]


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _overlaps(a: Box, b: Box) -> bool:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w > 4 and h > 4 and w * h > 0.2 * min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _reading_order(boxes: list[_Item]) -> list[_Item]:
    """Top-to-bottom rows (boxes whose vertical centre falls in a row's span), left-to-right inside a row."""
    rows: list[list[_Item]] = []
    for item in sorted(boxes, key=lambda b: (b[0][1], b[0][0])):
        box = item[0]
        centre = (box[1] + box[3]) / 2
        for row in rows:
            if row[0][0][1] <= centre < row[0][0][3]:
                row.append(item)
                break
        else:
            rows.append([item])
    return [item for row in rows for item in sorted(row, key=lambda b: b[0][0])]


def detect_panels(image: Image.Image) -> list[tuple[Box, float]]:
    """Panel boxes of a figure in original pixels, in reading order, each with a score in [0, 1].

    A single-panel figure (or one that cannot be split) gives exactly one box covering the figure.
    """
    return [(box, score) for box, score, _ in detect_panels_and_letters(image)]


def detect_panels_and_letters(
    image: Image.Image, caption_letters: frozenset[str] = frozenset()
) -> list[tuple[Box, float, str | None]]:
    """``detect_panels``'s boxes and scores, each with the letter of the figure's sequence (A, B, C...) read at
    the top of the panel while grouping its parts (or the one letter the sequence skips, given to the one panel
    between its neighbours), None where there is none (the label reader may still find one): one glyph pass
    shared by detection and labels. ``caption_letters`` (upper case), the panel letters the caption names: when
    the image's letters include them all, every other piece is part of a lettered panel."""
    width, height = image.size
    whole: Box = (0, 0, width, height)
    if width < 2 * MIN_PANEL_PX or height < 2 * MIN_PANEL_PX:
        return [(whole, 1.0, None)]
    factor = max(1, int(np.ceil(max(width, height) / ANALYSIS_MAX_SIDE)))
    if factor == 1:
        rgb = _rgb_array(image)
    elif image.mode in ("L", "RGB"):
        rgb = _rgb_array(image.reduce(factor))
    else:
        rgb = _rgb_array(Image.fromarray(_rgb_array(image)).reduce(factor))
    gray = rgb[:, :, 0].astype(np.int16)
    gray += rgb[:, :, 1]
    gray += rgb[:, :, 2]
    gray //= 3
    mask = _Mask(_foreground(rgb), gray, _WORKSPACE)
    start = mask.trim((0, 0, mask.width, mask.height))
    if start is None:
        return [(whole, 1.0, None)]
    splitter = _Splitter(mask)
    pieces = [p for p in splitter.split(start, gap=10**6) if not mask.flat(p.box)]  # a flat bar is no panel
    if len(pieces) < 2:
        return [(whole, 0.9, None)]
    _attach_decorations(pieces, splitter.decorations)
    letters = top_letters(mask.gray.astype(np.uint8), [p.box for p in pieces], int(LETTER_BAND_TEXT * splitter.text_px))
    # a panel's letter stands on its first line (or at its left edge); letters further in name parts of plots
    letters = _head_letters(letters, [p.box for p in pieces], splitter.text_px)
    heads, extras = _sequence_heads(letters)
    read: dict[int, str] = {}  # id of a head piece -> its letter (read, or the sequence's skipped one)
    if sum(head is not None for head in heads) >= 2:
        pieces, heads = _cut_at_letters(splitter, pieces, heads, extras)
        heads = _fill_gaps(pieces, heads)
        # the figure's letters (A, B, C... in a run) head panels; every other piece but a photo is part of one
        # (a piece with a letter-shaped glyph at its corner has a letter the model missed: it stands alone too,
        # unless the caption's letters are all read already)
        found = {h.text.upper() for h in heads if h is not None}
        complete = len(caption_letters) >= 2 and caption_letters <= found
        alone = [
            not complete and (_density(mask, p.box) >= PHOTO_DENSITY or _has_letter(mask, p.box, splitter.text_px))
            for p in pieces
        ]
        lettered: list[bool | None] = [
            True if head is not None else (None if solo else False) for head, solo in zip(heads, alone, strict=True)
        ]
        read = {id(p): h.text for p, h in zip(pieces, heads, strict=True) if h is not None}
        pieces = _merge_unlettered(pieces, lettered)
    else:
        # photos (dense pieces) often carry their letter inside, unreadable here: they stand alone, never merged
        dense = [_density(mask, piece.box) >= PHOTO_DENSITY for piece in pieces]
        flags = [None if d else _has_letter(mask, p.box, splitter.text_px) for p, d in zip(pieces, dense, strict=True)]
        drawn = [flag for flag in flags if flag is not None]
        if sum(drawn) >= 2 and sum(drawn) >= LETTERED_SHARE * len(drawn):
            pieces = _merge_unlettered(pieces, flags)
    if len(pieces) < 2:
        return [(whole, 0.9, None)]
    result = []
    for piece in pieces:
        x0, y0, x1, y1 = piece.box
        box = (x0 * factor, y0 * factor, min(width, x1 * factor), min(height, y1 * factor))
        result.append((box, _score(mask, piece, splitter.text_px), read.get(id(piece))))
    return _reading_order(result)


def _score(mask: _Mask, piece: _Piece, text_px: float) -> float:
    """Confidence of one panel of a compound figure: wider gutters around it, and a letter at its corner or a
    photo's solid fill, make it surer."""
    confirmed = _density(mask, piece.box) >= PHOTO_DENSITY or _has_letter(mask, piece.box, text_px)
    return round(0.5 + 0.25 * min(1.0, piece.gap / CONFIDENT_GAP_PX) + 0.25 * confirmed, 4)
