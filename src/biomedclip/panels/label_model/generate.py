"""Training glyphs for the label model, rendered from the fonts on this machine (no data downloaded).

Each sample is drawn onto a small canvas the way panel letters appear in figures (dark on white, white on dark
micrographs, grey or coloured ink, textured backgrounds, neighbouring text and axes), degraded (rescaling, blur,
JPEG, noise), and then cut out by the same ``glyphs`` functions the reader uses. Some letters have a bracket run
into them, as low-resolution serif type prints "(A)". Negatives (class ``OTHER``) are symbols, Greek letters,
letter fragments, plot marks and texture blobs. Everything follows one seed.
"""

from __future__ import annotations

import importlib.util
import io
import string
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from biomedclip.panels.glyphs import components, glyph_bitmap, ink_masks, merged
from biomedclip.panels.label_model.net import CLASSES, OTHER
from biomedclip.panels.labels import attach_parts

HELD_OUT_FONTS = frozenset({"cmss10.ttf"})
"""Fonts never used for training, kept for testing the reader on a design it has not seen."""
_SKIPPED_FONTS = ("STIXSiz", "STIXNonUni", "cmex", "cmsy", "cmmi", "LastResort", "Display")
"""Symbol, math-extension and fallback fonts whose code points do not draw Latin letters."""
_SYMBOLS = "%+-*#&@?/\\<>=~^°µαβγδεηθλπσφψωΔΣΩ±×→←↑↓■□●○▲△★|[]{}!$§"
_TOUCHING_BRACKETS = 0.08
"""Share of letter samples drawn with a bracket run into them."""
_WORDS = ("Ctrl", "WT", "KO", "n=5", "p<0.05", "10", "0.5", "μm", "Day 7", "IL-6", "log2", "%", "kDa", "***")


def font_paths(include_held_out: bool = False) -> list[Path]:
    """The TrueType fonts found on this machine (system fonts and matplotlib's), by file name, without the
    symbol fonts and, unless asked, without ``HELD_OUT_FONTS``."""
    roots = [Path("/usr/share/fonts")]
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        roots.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    found: dict[str, Path] = {}
    for root in roots:
        for path in sorted(root.rglob("*.ttf")):
            name = path.name
            if name in found or any(s in name for s in _SKIPPED_FONTS):
                continue
            if name in HELD_OUT_FONTS and not include_held_out:
                continue
            found[name] = path
    return [found[name] for name in sorted(found)]


@lru_cache(maxsize=2048)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def text_alpha(text: str, font_path: Path, size: int, stroke: int = 0) -> Image.Image:
    """``text`` drawn in ``font_path`` at ``size`` as an ink-coverage image cropped to its ink."""
    font = _font(font_path, size)
    x0, y0, x1, y1 = font.getbbox(text, stroke_width=stroke)
    alpha = Image.new("L", (max(1, x1 - x0) + 4, max(1, y1 - y0) + 4), 0)
    ImageDraw.Draw(alpha).text((2 - x0, 2 - y0), text, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    box = alpha.getbbox()
    return alpha.crop(box) if box else alpha


def _background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, bool]:
    """A grey background and whether ink on it is light (True on dark backgrounds)."""
    kind = rng.choice(["white", "tint", "dark", "texture", "gradient"], p=[0.45, 0.12, 0.15, 0.18, 0.10])
    if kind == "white":
        return np.full((height, width), 255.0 - rng.uniform(0, 8)), False
    if kind == "tint":
        return np.full((height, width), rng.uniform(185, 245)), False
    if kind == "dark":
        return np.full((height, width), rng.uniform(0, 70)), True
    light = bool(rng.random() < 0.5)
    if kind == "gradient":
        ramp = np.linspace(0, 1, width)[None, :] * np.ones((height, 1))
        low, span = (rng.uniform(0, 40), rng.uniform(20, 80)) if light else (rng.uniform(150, 215), rng.uniform(20, 40))
        return low + span * (ramp if rng.random() < 0.5 else ramp[:, ::-1]), light
    noise = Image.fromarray((rng.random((height, width)) * 255).astype(np.uint8))
    smooth = np.asarray(noise.filter(ImageFilter.GaussianBlur(rng.uniform(1, 4))), dtype=np.float64)
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-6)
    base, amp = (rng.uniform(10, 60), rng.uniform(5, 25)) if light else (rng.uniform(180, 235), rng.uniform(5, 25))
    return np.clip(base + amp * smooth, 0, 255), light


def _degrade(rng: np.random.Generator, gray: np.ndarray) -> np.ndarray:
    """Rescaling, blur, JPEG and sensor noise, each with some probability."""
    image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
    width, height = image.size
    if rng.random() < 0.4:
        factor = rng.uniform(0.5, 0.95)
        small = image.resize((max(4, round(width * factor)), max(4, round(height * factor))), Image.Resampling.BILINEAR)
        image = small.resize((width, height), Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    if rng.random() < 0.6:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(25, 96)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    out = np.asarray(image, dtype=np.float64)
    if rng.random() < 0.3:
        out = out + rng.normal(0, rng.uniform(2, 10), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _distractors(rng: np.random.Generator, draw: ImageDraw.ImageDraw, fonts: list[Path], keep_out, size, ink) -> None:
    """Neighbouring text and axis lines drawn outside ``keep_out`` (the glyph's box grown by a gap)."""
    width, height = size
    kx0, ky0, kx1, ky1 = keep_out
    for _ in range(int(rng.integers(1, 3))):
        font = _font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(8, 40)))
        word = _WORDS[int(rng.integers(len(_WORDS)))]
        side = rng.integers(4)
        x = [kx1 + 1, int(kx0 - rng.integers(10, 60)), int(rng.integers(0, width)), int(rng.integers(0, width))][side]
        y = [int(rng.integers(0, height)), int(rng.integers(0, height)), ky1 + 1, int(ky0 - rng.integers(10, 40))][side]
        if rng.random() < 0.3:
            draw.line([(x, y), (x + int(rng.integers(-40, 40)), y + int(rng.integers(-40, 40)))], fill=ink, width=1)
        else:
            box = draw.textbbox((x, y), word, font=font)
            if box[2] <= kx0 or box[0] >= kx1 or box[3] <= ky0 or box[1] >= ky1:
                draw.text((x, y), word, font=font, fill=ink)


def _shape_alpha(rng: np.random.Generator, size: int) -> Image.Image:
    """A plot mark or texture blob of about ``size`` pixels: the negatives that are not characters."""
    alpha = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(alpha)
    kind = rng.integers(5)
    line = max(1, int(size * rng.uniform(0.05, 0.2)))
    if kind == 0:
        draw.ellipse([0, 0, size - 1, size - 1], outline=255, width=line, fill=255 if rng.random() < 0.5 else None)
    elif kind == 1:
        draw.rectangle([0, 0, size - 1, int(size * rng.uniform(0.3, 1)) - 1], outline=255, width=line)
    elif kind == 2:
        draw.line([(0, 0), (0, size - 1), (size - 1, size - 1)], fill=255, width=line)
        for tick in range(int(rng.integers(1, 5))):
            y = int((tick + 0.5) * size / 5)
            draw.line([(0, y), (line + 3, y)], fill=255, width=max(1, line // 2))
    elif kind == 3:
        points = [(int(rng.integers(size)), int(rng.integers(size))) for _ in range(int(rng.integers(3, 7)))]
        draw.line(points, fill=255, width=line)
    else:
        noise = Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8))
        blob = np.asarray(noise.filter(ImageFilter.GaussianBlur(size / rng.uniform(4, 10))), dtype=np.float64)
        return Image.fromarray(((blob > np.quantile(blob, rng.uniform(0.5, 0.85))) * 255).astype(np.uint8))
    return alpha


def _fragment_alpha(rng: np.random.Generator, alpha: Image.Image) -> Image.Image:
    """A letter with a random side cut away (a glyph clipped by a panel edge or another mark)."""
    pixels = np.asarray(alpha).copy()
    height, width = pixels.shape
    side, keep = rng.integers(4), rng.uniform(0.3, 0.5)
    if side == 0:
        pixels[:, int(width * keep) :] = 0
    elif side == 1:
        pixels[:, : int(width * (1 - keep))] = 0
    elif side == 2:
        pixels[int(height * keep) :] = 0
    else:
        pixels[: int(height * (1 - keep))] = 0
    return Image.fromarray(pixels)


def _touching_bracket(rng: np.random.Generator, letter: Image.Image, bracket: Image.Image, right: bool) -> Image.Image:
    """``letter`` with a bracket pushed into it (serif type at low resolution prints "A)" as one blob); the
    sample keeps the letter's class, so the reader still reads "(" + "A)" as "A"."""
    height = max(bracket.height, letter.height)
    overlap = int(rng.integers(1, max(2, bracket.width // 2) + 1))
    overlap = max(0, min(overlap, letter.width // 2, bracket.width - 1))
    width = letter.width + bracket.width - overlap
    canvas = np.zeros((height, width), dtype=np.uint8)
    top = max(0, min(height - letter.height, round(0.8 * height) - letter.height))
    letter_x, bracket_x = (0, letter.width - overlap) if right else (bracket.width - overlap, 0)
    canvas[top : top + letter.height, letter_x : letter_x + letter.width] = np.asarray(letter)
    region = canvas[: bracket.height, bracket_x : bracket_x + bracket.width]
    np.maximum(region, np.asarray(bracket), out=region)
    return Image.fromarray(canvas)


def glyph_alpha(rng: np.random.Generator, label: str, fonts: list[Path]) -> Image.Image:
    """Ink coverage of one sample of class ``label``, in a random font, size, width and weight."""
    cap_height = float(np.exp(rng.uniform(np.log(9), np.log(60))))
    size = max(6, round(cap_height / 0.73))
    font = fonts[int(rng.integers(len(fonts)))]
    stroke = int(rng.integers(1, 3)) if cap_height > 20 and rng.random() < 0.2 else 0
    if label != OTHER:
        alpha = text_alpha(label, font, size, stroke)
        if label in string.ascii_letters and rng.random() < _TOUCHING_BRACKETS:
            right = bool(rng.random() < 0.7)
            alpha = _touching_bracket(rng, alpha, text_alpha(")" if right else "(", font, size, stroke), right)
    else:
        kind = rng.random()
        if kind < 0.4:
            alpha = text_alpha(_SYMBOLS[int(rng.integers(len(_SYMBOLS)))], font, size, stroke)
        elif kind < 0.5:
            letter = string.ascii_letters[int(rng.integers(52))]
            alpha = _fragment_alpha(rng, text_alpha(letter, font, size, stroke))
        else:
            alpha = _shape_alpha(rng, max(6, round(cap_height)))
    if rng.random() < 0.5:
        stretch = rng.uniform(0.75, 1.25)
        alpha = alpha.resize((max(1, round(alpha.width * stretch)), alpha.height), Image.Resampling.BILINEAR)
    return alpha


def draw_sample(rng: np.random.Generator, alpha: Image.Image, fonts: list[Path]) -> tuple[np.ndarray, tuple, bool]:
    """Place ``alpha`` on a background with neighbours and degrade it: (grey canvas, ink box, light ink)."""
    pad = max(8, alpha.height)
    width, height = alpha.width + 2 * pad, alpha.height + 2 * pad
    background, light = _background(rng, width, height)
    ink = rng.uniform(185, 255) if light else rng.uniform(0, 110)
    context = Image.new("L", (width, height), 0)
    x, y = pad + int(rng.integers(-pad // 2, pad // 2 + 1)), pad + int(rng.integers(-pad // 2, pad // 2 + 1))
    if rng.random() < 0.5:
        gap = max(3, alpha.height // 2)
        keep_out = (x - gap, y - gap, x + alpha.width + gap, y + alpha.height + gap)
        _distractors(rng, ImageDraw.Draw(context), fonts, keep_out, (width, height), 255)
    context.paste(alpha, (x, y))
    coverage = np.asarray(context, dtype=np.float64) / 255.0
    gray = _degrade(rng, background * (1 - coverage) + ink * coverage)
    return gray, (x, y, x + alpha.width, y + alpha.height), light


def cut_glyph(gray: np.ndarray, box: tuple, light: bool) -> np.ndarray | None:
    """The bitmap the reader would see for the ink in ``box``: its largest component of the right polarity plus
    the parts the reader attaches to it, or None when thresholding lost it."""
    masks = [mask for mask, is_light in ink_masks(gray) if is_light == light]
    if not masks:
        return None
    parts = components(masks[0], light, 1, gray.shape[0])
    x0, y0, x1, y1 = box
    inside = [c for c in parts if x0 - 1 <= (c.x0 + c.x1) / 2 <= x1 + 1 and y0 - 1 <= (c.y0 + c.y1) / 2 <= y1 + 1]
    if not inside:
        return None
    main = max(inside, key=lambda c: int(c.mask.sum()))
    if main.height < 0.4 * (y1 - y0) and main.width < 0.4 * (x1 - x0):
        return None
    return glyph_bitmap(merged(attach_parts(main, parts)).mask)


def class_counts(per_class: int) -> dict[str, int]:
    """Samples per class: ``per_class`` for letters, half that for digits and brackets, ten times for OTHER."""
    counts = {c: per_class for c in CLASSES}
    counts.update({c: per_class // 2 for c in string.digits + "()"})
    counts[OTHER] = per_class * 10
    return counts


def generate(per_class: int, seed: int, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(bitmaps uint8 (N, GLYPH_SIZE, GLYPH_SIZE), class indices (N,)), the same for the same arguments."""
    rng = np.random.default_rng(seed)
    fonts = font_paths()
    bitmaps, targets = [], []
    for index, (label, count) in enumerate(class_counts(per_class).items()):
        made = 0
        while made < count:
            gray, box, light = draw_sample(rng, glyph_alpha(rng, label, fonts), fonts)
            bitmap = cut_glyph(gray, box, light)
            if bitmap is None:
                continue
            bitmaps.append(np.round(bitmap * 255).astype(np.uint8))
            targets.append(index)
            made += 1
        if progress:
            progress(index)
    return np.stack(bitmaps), np.asarray(targets, dtype=np.int64)
