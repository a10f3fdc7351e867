"""One figure in, its panels out: detection, label reading, subcaption splitting and alignment.

``split_figure`` is the pure interface the corpus workers and ``biomedclip panels detect`` call. The detector and
the label reader default to ``biomedclip.panels.layout.detect_panels`` and ``biomedclip.panels.labels.read_labels``
and may be replaced (tests, other detectors) by functions of the same signatures.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable

from PIL import Image

from biomedclip.panels.align import align
from biomedclip.panels.subcaptions import Subcaptions, split_caption
from biomedclip.panels.types import Box, FigurePanels, Panel

Detector = Callable[[Image.Image], list[tuple[Box, float]]]
LabelReader = Callable[[Image.Image, list[Box]], list[tuple[str | None, float]]]


def split_figure(
    image: Image.Image,
    caption: str | None,
    *,
    detector: Detector | None = None,
    reader: LabelReader | None = None,
    single_labels: bool = True,
    uncited_labels: bool = False,
) -> FigurePanels:
    """Split one figure into panels, each with its box, read letter, own subcaption and detection score.

    A single-panel figure gives ``compound=False`` and one panel with the whole caption as its subcaption (or,
    when its printed letter names one part of a caption covering several image files, that part's text).
    With ``single_labels=False`` a single-panel figure's letter is not read (its label is None): for callers
    that keep only compound figures' panels, the reading would be thrown away. The label reader runs only where
    the caption names panel letters (and keeps only readings of those, or of A onwards as far as there are
    panels), or where there is no caption: a figure whose caption names none keeps the letters detection read
    while grouping its panels, or none (on such figures, a chemical scheme or charts titled in words, the reader
    mostly finds atoms and axis words); ``uncited_labels`` runs it there too.
    """
    shared_pass = detector is None and reader is None
    subcaptions = split_caption(caption)
    named = frozenset(label.upper() for label in subcaptions.parts if len(label) == 1 and label.isalpha())
    cited = frozenset(label[0].upper() for label in subcaptions.parts if label[:1].isalpha())  # "A1" cites A
    if detector is None:
        from biomedclip.panels.layout import detect_panels_and_letters

        found = detect_panels_and_letters(image, named)
        detector = lambda _image: [(box, score) for box, score, _ in found]  # noqa: E731
        letters = {tuple(box): letter for box, _, letter in found}
    if reader is None:
        from biomedclip.panels.labels import read_labels as reader
    width, height = image.size
    detected = [(box, score) for box, score in detector(image) if box[2] > box[0] and box[3] > box[1]]
    if not detected:
        detected = [((0, 0, width, height), 0.0)]
    boxes = [tuple(int(v) for v in box) for box, _ in detected]
    if len(boxes) == 1 and not single_labels:
        return _single(boxes[0], detected[0][1], None, caption, subcaptions)
    read = uncited_labels or bool(cited) or caption is None
    # the caption's letters, and A onwards as far as there are panels (a letter the caption's wording hid)
    allowed = cited | frozenset(string.ascii_uppercase[: len(boxes)]) if cited else frozenset()
    if shared_pass:
        known = [letters.get(tuple(box)) for box, _ in detected]
        labels = (
            _shared_labels(image, boxes, known, functools.partial(reader, known=known, allowed=allowed), named)
            if read
            else known
        )
    else:
        labels = [label for label, _ in reader(image, boxes)] if read else [None] * len(boxes)
    if len(boxes) == 1:
        return _single(boxes[0], detected[0][1], labels[0], caption, subcaptions)
    joins = align(boxes, labels, subcaptions)
    panels = [
        Panel(box, label, joined.subcaption, float(score), joined.alignment)
        for box, (_, score), label, joined in zip(boxes, detected, labels, joins, strict=True)
    ]
    return FigurePanels(True, subcaptions.shared if caption else None, panels)


def _shared_labels(
    image: Image.Image, boxes: list[Box], letters: list[str | None], reader: LabelReader,
    caption_letters: frozenset[str] = frozenset(),
) -> list[str | None]:  # fmt: skip
    """Labels from detection's letter pass where it read one, the label reader's elsewhere (it runs only when a
    panel lacks a letter and the caption names a letter detection did not read); a reading that repeats a letter
    detection gave another panel is dropped."""
    read_already = {letter.upper() for letter in letters if letter is not None}
    if all(letter is not None for letter in letters) or (caption_letters and caption_letters <= read_already):
        return list(letters)
    read = [label for label, _ in reader(image, boxes)]
    taken = {letter.upper() for letter in letters if letter is not None}
    return [
        letter if letter is not None else (label if label is None or label.upper() not in taken else None)
        for letter, label in zip(letters, read, strict=True)
    ]


def _single(box: Box, score: float, label: str | None, caption: str | None, subcaptions: Subcaptions) -> FigurePanels:
    own = subcaptions.text_for(label) if label and caption else None
    if own is not None:
        return FigurePanels(False, subcaptions.shared, [Panel(box, label, own, float(score), "label")])
    return FigurePanels(False, None, [Panel(box, label, caption or None, float(score), "whole" if caption else None)])
