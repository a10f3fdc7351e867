"""Synthetic compound figures with known panel boxes and printed labels, for measuring the label reader.

Panels are real single images (micrographs, radiographs) or simple charts drawn here (axes, bars, tick numbers,
titles); labels vary in case, style ("A", "(a)", "A."), size, font, place (top-left, top-right, above a plot) and
polarity (white letters on dark images). Passing ``fonts`` restricted to fonts the model never trained on
measures how it generalises to unseen type.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from biomedclip.panels.types import Box

_TITLES = ("Control", "Treated", "Day 7", "WT vs KO", "IL-6 (pg/ml)", "Survival", "Expression", "log2 FC", "n = 12")


@dataclass
class SyntheticFigure:
    """A compound figure, its panel boxes (reading order) and the label printed on each (None if unlabelled)."""

    image: Image.Image
    boxes: list[Box]
    labels: list[str | None]


def _chart(rng: np.random.Generator, width: int, height: int, font: ImageFont.FreeTypeFont) -> Image.Image:
    """A white panel with axes, tick numbers, bars or a line, and a title."""
    panel = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(panel)
    left, top, right, bottom = int(width * 0.22), int(height * 0.22), width - 8, height - int(height * 0.18)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black", width=2)
    for i in range(4):
        y = bottom - (i + 1) * (bottom - top) // 5
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((left - 6, y), str(int(rng.integers(0, 100)) * 5), fill="black", font=font, anchor="rm")
    if rng.random() < 0.6:
        bars = int(rng.integers(2, 6))
        step = (right - left) / (bars + 1)
        for i in range(bars):
            x = left + (i + 0.6) * step
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            draw.rectangle([x, bottom - rng.uniform(0.2, 0.9) * (bottom - top), x + step * 0.7, bottom], fill=colour)
    else:
        points = [(left + i * (right - left) / 9, bottom - rng.uniform(0.1, 0.9) * (bottom - top)) for i in range(10)]
        draw.line(points, fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=2)
    draw.text(
        ((left + right) // 2, top - 6), _TITLES[int(rng.integers(len(_TITLES)))], fill="black", font=font, anchor="md"
    )
    return panel


def _photo(rng: np.random.Generator, width: int, height: int, images: list[Path]) -> Image.Image:
    """A random crop of a real image, scaled to the panel."""
    with Image.open(images[int(rng.integers(len(images)))]) as source:
        photo = source.convert("RGB")
    scale = max(width / photo.width, height / photo.height)
    photo = photo.resize((max(width, round(photo.width * scale)), max(height, round(photo.height * scale))))
    x, y = int(rng.integers(0, photo.width - width + 1)), int(rng.integers(0, photo.height - height + 1))
    return photo.crop((x, y, x + width, y + height))


def make_figure(rng: np.random.Generator, fonts: list[Path], images: list[Path]) -> SyntheticFigure:
    """One compound figure: a grid of 2-8 panels with labels in one style, case and font."""
    rows, cols = int(rng.integers(1, 3)), int(rng.integers(2, 5))
    cell_w, cell_h = int(rng.integers(140, 300)), int(rng.integers(120, 260))
    gutter = int(rng.choice([0, 4, 12, 24]))
    width, height = cols * cell_w + (cols + 1) * gutter, rows * cell_h + (rows + 1) * gutter
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    label_font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(14, 34)))
    text_font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(9, 13)))
    letters = string.ascii_uppercase if rng.random() < 0.65 else string.ascii_lowercase
    style = str(rng.choice(["{}", "({})", "{}."], p=[0.6, 0.25, 0.15]))
    right_side = rng.random() < 0.15
    labelled = rng.random() < 0.9
    stroke = int(rng.random() < 0.5)
    boxes: list[Box] = []
    labels: list[str | None] = []
    for index in range(rows * cols):
        row, col = divmod(index, cols)
        x0, y0 = gutter + col * (cell_w + gutter), gutter + row * (cell_h + gutter)
        photo = rng.random() < 0.45 and images
        panel = _photo(rng, cell_w, cell_h, images) if photo else _chart(rng, cell_w, cell_h, text_font)
        figure.paste(panel, (x0, y0))
        boxes.append((x0, y0, x0 + cell_w, y0 + cell_h))
        if not labelled:
            labels.append(None)
            continue
        letter = letters[index]
        text = style.format(letter)
        left, top, right, _ = draw.textbbox((0, 0), text, font=label_font, stroke_width=stroke)
        margin = int(rng.integers(2, 10))
        x = x0 + cell_w - margin - (right - left) if right_side else x0 + margin
        corner = np.asarray(panel.convert("L").crop((0, 0, min(cell_w, 60), min(cell_h, 40))), dtype=float).mean()
        ink = "white" if corner < 110 else "black"
        draw.text((x - left, y0 + margin - top), text, font=label_font, fill=ink, stroke_width=stroke, stroke_fill=ink)
        labels.append(letter)
    return SyntheticFigure(figure, boxes, labels)
