"""The panel samples of one figure (``corpus build --unit panel|both``), made in the phase-1 worker.

The worker hands the normalised figure (the JPEG its shard holds, decoded) and its caption to
``biomedclip.panels.pipeline.split_figure``; each panel of a compound figure becomes a ``PanelRow`` keyed
``<figure key>_p<NN>`` (NN from 01, in the splitter's reading order) and a crop of the normalised image,
re-encoded as JPEG at the build's quality. The splitter sees the normalised pixels, so its boxes are scaled to the
parent's original pixels for the record (``box``), and the crop uses them as they are.

A panel's text is the shared caption followed by its own subcaption; without a subcaption, the shared caption
alone (``alignment`` ``none``), or the whole caption when the splitter found no shared part. ``alignment`` is the
splitter's (``Panel.alignment``: ``label``, ``order``, ``position``, ``none``). Panels pass the
figure filters (caption, size and aspect of the box in original pixels) or are rejected with their reason. A
figure the splitter fails on keeps its place: one rejected row ``<figure key>_p00`` (``panel_split_failed``)
says why. A single-panel figure gives no panel row, except with ``--unit panel``, where it is kept whole as its own
sample ``<figure key>_p01`` (``alignment`` ``figure``), so that the panel corpus alone loses no figure.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable
from dataclasses import fields

import imagehash
from PIL import Image

from biomedclip.corpus.filters import FilterConfig, caption_reason, image_reason
from biomedclip.corpus.images import ImageConfig
from biomedclip.corpus.rows import ACCEPTED, FigureRow, PanelRow
from biomedclip.panels.types import Box, FigurePanels, Panel

SPLIT_FAILED = "panel_split_failed"
EMPTY_PANEL = "empty_panel"
Splitter = Callable[[Image.Image, str], FigurePanels]


def default_splitter(keep_single: bool = True) -> Splitter:
    """``biomedclip.panels.pipeline.split_figure`` (imported when a build splits panels); without
    ``keep_single`` it does not read the letter of a single-panel figure, whose panel is not kept."""
    from biomedclip.panels.pipeline import split_figure

    return split_figure if keep_single else functools.partial(split_figure, single_labels=False)


def figure_panels(
    figure: FigureRow, jpeg: bytes, image: ImageConfig, filters: FilterConfig, *, keep_single: bool,
    splitter: Splitter | None = None,
) -> tuple[list[PanelRow], dict[str, bytes]]:  # fmt: skip
    """The panel rows of an accepted ``figure`` whose normalised image is ``jpeg``, and the crops by key.

    Never raises for a bad figure: a splitter failure is one rejected row, a panel that fails a filter a
    rejected row with its reason.
    """
    with Image.open(io.BytesIO(jpeg)) as decoded:
        normalised = decoded.convert("RGB")
    try:
        found = (splitter or default_splitter(keep_single))(normalised, figure.caption)
        panels = [_checked(p) for p in found.panels]
    except Exception as exc:  # a bug or a surprise in the splitter must not cost the figure
        row = _panel_row(figure, 0, alignment=None, caption=figure.caption)
        return [row.reject(SPLIT_FAILED, f"{type(exc).__name__}: {exc}")], {}
    if not found.compound or len(panels) < 2:
        if not keep_single:
            return [], {}
        box = [0, 0, figure.orig_width or normalised.width, figure.orig_height or normalised.height]
        row = _panel_row(figure, 1, alignment="figure", caption=figure.caption, box=box)
        _describe(row, normalised, jpeg, figure.orig_width, figure.orig_height)
        return [row], {row.key: jpeg}
    rows, crops = [], {}
    scale_x = (figure.orig_width or normalised.width) / normalised.width
    scale_y = (figure.orig_height or normalised.height) / normalised.height
    for number, panel in enumerate(panels, start=1):
        own = panel.subcaption.strip() if panel.subcaption and panel.subcaption.strip() else None
        shared = " ".join((found.shared_caption or "").split())
        text = " ".join(filter(None, [shared, own])) if own else (shared or figure.caption)
        x0, y0, x1, y1 = _clamp(panel.box, normalised.width, normalised.height)
        original = [round(x0 * scale_x), round(y0 * scale_y), round(x1 * scale_x), round(y1 * scale_y)]
        row = _panel_row(figure, number, alignment=_alignment(panel, own), caption=text, box=original,
                         label=panel.label, subcaption=own)  # fmt: skip
        rows.append(row)
        width, height = original[2] - original[0], original[3] - original[1]
        if x1 <= x0 or y1 <= y0:
            row.reject(EMPTY_PANEL, f"box {list(panel.box)} holds no pixel of the {normalised.width}x"
                                    f"{normalised.height} normalised image")  # fmt: skip
            continue
        reason = caption_reason(text, filters) or image_reason(width, height, filters)
        if reason:
            row.reject(reason, f"{width}x{height}" if reason in ("image_too_small", "extreme_aspect") else "")
            continue
        crop = normalised.crop((x0, y0, x1, y1))
        out = io.BytesIO()
        crop.save(out, format="JPEG", quality=image.jpeg_quality)
        crops[row.key] = out.getvalue()
        _describe(row, crop, crops[row.key], width, height)
    return rows, crops


def _checked(panel: Panel) -> Panel:
    if len(panel.box) != 4:
        raise ValueError(f"a panel box has 4 numbers, not {panel.box!r}")
    return panel


def _clamp(box: Box, width: int, height: int) -> Box:
    """``box`` (normalised pixels) cut to the image, as integers."""
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def _alignment(panel: Panel, own: str | None) -> str:
    """How the panel's text was found: the splitter's word (by its read label, in reading order, by position),
    ``none`` without a subcaption (the shared caption only)."""
    if own is None:
        return "none"
    return panel.alignment or ("label" if panel.label else "order")


def _panel_row(
    figure: FigureRow, number: int, *, alignment: str | None, caption: str, box: list[int] | None = None,
    label: str | None = None, subcaption: str | None = None,
) -> PanelRow:  # fmt: skip
    inherited = {f.name: getattr(figure, f.name) for f in fields(FigureRow)}
    inherited.update(key=f"{figure.key}_p{number:02d}", caption=caption, status=ACCEPTED, reason="", detail="",
                     width=None, height=None, orig_width=None, orig_height=None, sha256=None, phash=None,
                     caption_tokens=None, graphics=list(figure.graphics))  # fmt: skip
    return PanelRow(**inherited, parent=figure.key, box=box, panel_label=label, subcaption=subcaption,
                    alignment=alignment)  # fmt: skip


def _describe(row: PanelRow, image: Image.Image, jpeg: bytes, orig_width: int | None, orig_height: int | None) -> None:
    """Sizes and fingerprints of a panel's JPEG (its SHA-256: the crop's bytes; its perceptual hash, as a figure's)."""
    row.width, row.height = image.width, image.height
    row.orig_width, row.orig_height = orig_width, orig_height
    row.sha256 = hashlib.sha256(jpeg).hexdigest()
    row.phash = str(imagehash.phash(image.reduce(max(1, min(image.size) // 128))))
