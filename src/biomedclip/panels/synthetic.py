"""Synthetic compound figures with known panel boxes and labels, for measuring (and training) panel splitting.

A figure is a grid (even or uneven, one cell may span two columns) of panels: real single images (photos,
radiographs, micrographs from the fixtures and the bundled sample) and charts rendered with matplotlib (bar,
line, scatter, heat map, each with axes). Gutters are none, thin or thick, the background white, black or grey,
divider lines optional; each panel carries a letter in one of the styles papers use (A, a, (a), A., bold or not)
inside its top-left corner or above it. Everything follows from the seed, so a figure is the same on every run.

Source images are split once by a hash of their file name: ``held_out_figures`` uses only images that
``training_figures`` never does, so a learned part is always measured on images it has not seen.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from biomedclip.panels.types import Box

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HELD_OUT_PERCENT = 30  # share of source images (by file-name hash) reserved for measuring
LABEL_STYLES = ("A", "a", "(a)", "(A)", "A.", "a.")
FONT_FILES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif.ttf")
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (200, 200, 200)}
CHART_KINDS = ("bar", "line", "scatter", "heatmap")


@dataclass
class SyntheticFigure:
    """One synthetic figure: the image and, per panel in reading order, its box and printed label."""

    image: Image.Image
    boxes: list[Box]
    labels: list[str | None]
    layout: dict = field(default_factory=dict)

    def as_gt_row(self, figure_id: str = "synthetic") -> dict:
        """The figure as a ground-truth row of ``panels eval`` (no caption: shared_caption and subcaptions null)."""
        return {
            "id": figure_id,
            "compound": len(self.boxes) > 1,
            "shared_caption": None,
            "panels": [
                {"box": list(box), "label": label, "subcaption": None}
                for box, label in zip(self.boxes, self.labels, strict=True)
            ],
        }


def source_images(roots: list[Path]) -> list[Path]:
    """Image files under the given folders, sorted, so the same folders give the same list everywhere."""
    found = []
    for root in roots:
        if root.is_dir():
            found += [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: (p.name, str(p)))


def default_sources(fixtures: Path) -> list[Path]:
    """Single images of the shared fixtures and of the bundled sample (``data/sample`` beside ``src``)."""
    repo = Path(__file__).resolve().parents[3]
    return source_images([fixtures / "images", repo / "data" / "sample" / "imagefolder"])


def is_held_out(path: Path) -> bool:
    """Whether a source image is reserved for measuring (decided by a hash of its file name alone)."""
    return int(hashlib.sha1(path.name.encode()).hexdigest(), 16) % 100 < HELD_OUT_PERCENT


def held_out_figures(count: int, fixtures: Path, seed: int = 0) -> list[SyntheticFigure]:
    """``count`` figures built only from held-out source images."""
    sources = [p for p in default_sources(fixtures) if is_held_out(p)]
    return [make_figure(random.Random(f"held-out-{seed}-{i}"), sources) for i in range(count)]


def training_figures(count: int, fixtures: Path, seed: int = 0) -> list[SyntheticFigure]:
    """``count`` figures built only from source images that are not held out."""
    sources = [p for p in default_sources(fixtures) if not is_held_out(p)]
    return [make_figure(random.Random(f"train-{seed}-{i}"), sources) for i in range(count)]


def _font(rng: random.Random, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return ImageFont.truetype(str(folder / rng.choice(FONT_FILES)), size)


def _label_text(style: str, index: int) -> tuple[str, str]:
    """The printed text of the index-th label in a style, and the bare label ("(b)" -> "b")."""
    letter = chr(ord("A") + index)
    bare = letter.lower() if style[0 if style[0] != "(" else 1].islower() else letter
    return style.replace("a", bare).replace("A", bare), bare


def _chart(rng: random.Random, kind: str, width: int, height: int) -> Image.Image:
    """A matplotlib chart with axes, tick labels and a title, rendered to an RGB image of the given size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = np.random.default_rng(rng.randrange(2**32))
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if kind == "bar":
        names = [f"term {i}" for i in range(rng.randint(3, 8))]
        if rng.random() < 0.5:
            axes.barh(names, data.uniform(1, 10, len(names)), color=rng.choice(["C0", "C1", "C2", "0.3"]))
        else:
            axes.bar(names, data.uniform(1, 10, len(names)), color=rng.choice(["C0", "C1", "C2", "0.3"]))
    elif kind == "line":
        x = np.linspace(0, 10, 50)
        for k in range(rng.randint(1, 3)):
            axes.plot(x, np.cumsum(data.normal(0, 1, 50)) + k, label=f"group {k + 1}")
        axes.legend(fontsize=6)
    elif kind == "scatter":
        axes.scatter(data.normal(0, 1, 120), data.normal(0, 1, 120), s=6, c=data.uniform(0, 1, 120), cmap="coolwarm")
    else:
        image = axes.imshow(data.normal(0, 1, (rng.randint(6, 20), rng.randint(4, 12))), cmap="RdBu_r", aspect="auto")
        figure.colorbar(image, ax=axes)
    axes.set_title(rng.choice(["Control", "Treated", "Expression", "Enrichment", "Survival"]), fontsize=8)
    axes.set_xlabel(rng.choice(["Time (h)", "log2 FC", "Score", "Dose"]), fontsize=7)
    axes.tick_params(labelsize=6)
    figure.tight_layout(pad=0.4)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return Image.open(buffer).convert("RGB").resize((width, height))


def _photo(rng: random.Random, sources: list[Path], width: int, height: int) -> tuple[Image.Image, Box]:
    """A source image fitted into a cell (cropped by at most a quarter towards the cell's shape, never
    stretched) and its box inside the cell."""
    with Image.open(rng.choice(sources)) as opened:
        image = opened.convert("RGB")
    target = width / height
    if image.width / image.height > target:
        keep = round(max(0.75 * image.width, image.height * target))
        left = rng.randint(0, image.width - keep)
        image = image.crop((left, 0, left + keep, image.height))
    else:
        keep = round(max(0.75 * image.height, image.width / target))
        top = rng.randint(0, image.height - keep)
        image = image.crop((0, top, image.width, top + keep))
    scale = min(width / image.width, height / image.height)
    size = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    left, top = (width - size[0]) // 2, (height - size[1]) // 2
    return image.resize(size), (left, top, left + size[0], top + size[1])


def _cells(rng: random.Random, width: int, height: int, gutter: int) -> list[Box]:
    """Cells of an even or uneven grid in reading order; a cell may span the whole row's two first columns."""
    rows, cols = rng.choice([(1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 2), (3, 3), (1, 4), (2, 4), (4, 2)])
    uneven = rng.random() < 0.4
    col_weights = [rng.uniform(0.7, 1.3) if uneven else 1.0 for _ in range(cols)]
    row_weights = [rng.uniform(0.7, 1.3) if uneven else 1.0 for _ in range(rows)]
    xs = _cut_points(width, gutter, col_weights)
    ys = _cut_points(height, gutter, row_weights)
    span_row = rng.randrange(rows) if uneven and rows >= 2 and cols >= 2 and rng.random() < 0.5 else -1
    cells = []
    for r in range(rows):
        c = 0
        while c < cols:
            last = c + 1 if r == span_row and c == 0 else c
            cells.append((xs[c][0], ys[r][0], xs[last][1], ys[r][1]))
            c = last + 1
    return cells


def _cut_points(length: int, gutter: int, weights: list[float]) -> list[tuple[int, int]]:
    usable = length - gutter * (len(weights) - 1)
    total = sum(weights)
    spans, start = [], 0
    for i, weight in enumerate(weights):
        end = length if i == len(weights) - 1 else start + round(usable * weight / total)
        spans.append((start, end))
        start = end + gutter
    return spans


def make_figure(rng: random.Random, sources: list[Path]) -> SyntheticFigure:
    """One figure drawn from ``rng``: layout, gutters, background, dividers, panel contents and labels."""
    width, height = rng.randint(500, 1000), rng.randint(300, 900)
    if rng.random() < 0.15:
        if sources and rng.random() < 0.5:
            photo, _ = _photo(rng, sources, width, height)
            return SyntheticFigure(photo, [(0, 0, photo.width, photo.height)], [None], {"single": True})
        chart = _chart(rng, rng.choice(CHART_KINDS), width, height)
        return SyntheticFigure(chart, [(0, 0, width, height)], [None], {"single": True})
    gutter = rng.choice([0, 0, rng.randint(1, 4), rng.randint(8, 30)])
    background_name = rng.choice(["white", "white", "black", "grey"])
    background = BACKGROUNDS[background_name]
    photos_only = rng.random() < 0.3 and bool(sources)
    style = rng.choice(LABEL_STYLES) if rng.random() < 0.85 else None
    outside = style is not None and gutter >= 8 and rng.random() < 0.5
    dividers = gutter >= 5 and rng.random() < 0.3
    canvas = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    boxes, labels = [], []
    font_size = rng.randint(14, 26)
    font = _font(rng, font_size)
    cells = _cells(rng, width, height, gutter)
    for index, (x0, y0, x1, y1) in enumerate(cells):
        top = y0 + (font_size + 4 if outside else 0)
        is_photo = photos_only or (bool(sources) and rng.random() < 0.4)
        if is_photo:
            content, (px0, py0, px1, py1) = _photo(rng, sources, x1 - x0, y1 - top)
            canvas.paste(content, (x0 + px0, top + py0))
            box = (x0 + px0, top + py0, x0 + px1, top + py1)
        else:
            canvas.paste(_chart(rng, rng.choice(CHART_KINDS), x1 - x0, y1 - top), (x0, top))
            box = (x0, top, x1, y1)
        label = None
        if style is not None:
            text, label = _label_text(style, index)
            corner = (box[0] + 3, y0 + 2 if outside else box[1] + 2)
            colour = (255 - background[0],) * 3 if outside else ((255, 255, 255) if is_photo else (0, 0, 0))
            draw.text(corner, text, font=font, fill=colour)
            if outside:
                box = (box[0], y0, box[2], box[3])
        boxes.append(box)
        labels.append(label)
    if dividers:
        colour = (128, 128, 128) if background_name != "grey" else (0, 0, 0)
        for x0, y0, x1, y1 in cells:
            if x1 < width:
                draw.line([(x1 + gutter // 2, y0), (x1 + gutter // 2, y1)], fill=colour, width=1)
            if y1 < height:
                draw.line([(x0, y1 + gutter // 2), (x1, y1 + gutter // 2)], fill=colour, width=1)
    layout = {
        "gutter": gutter,
        "background": background_name,
        "dividers": dividers,
        "label_style": style,
        "label_outside": outside,
        "photos_only": photos_only,
    }
    return SyntheticFigure(canvas, boxes, labels, layout)
