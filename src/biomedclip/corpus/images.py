"""Figure images: find the file a ``<graphic>`` href names, decode it to RGB, shrink it and re-encode it as JPEG.

Every failure is an ``ImageRejected`` carrying a short reason code (the catalog's ``reason`` column):
``missing_image``, ``empty_file``, ``not_an_image``, ``decompression_bomb``, ``corrupt_image``.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import warnings
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

from biomedclip.corpus.pixels import content, thumbnail
from biomedclip.shards import IMAGE_EXTENSIONS

# Full-size formats first; PMC packages put a small ``.gif`` thumbnail beside each full-size ``.jpg``.
EXTENSION_RANK: tuple[str, ...] = tuple(f".{ext}" for ext in IMAGE_EXTENSIONS)
THUMBNAIL_EXTENSIONS = frozenset({".gif"})


@dataclass(frozen=True)
class ImageConfig:
    """How figure images are normalised.

    Attributes:
        max_short_side: resize so the shorter side is at most this (the paper trains at 224 px; 512 keeps
            head-room for random-resized-crop and higher-resolution fine-tuning).
        jpeg_quality: quality of the re-encoded JPEG.
        max_pixels: images with more pixels than this are refused before decoding (``decompression_bomb``);
            the largest genuine PMC figures are ~50 Mpx. This is the only pixel limit: Pillow's own
            (``Image.MAX_IMAGE_PIXELS``, 89.5 Mpx, a warning below twice that) is not applied on top of it,
            except that Pillow refuses outright above twice its limit (179 Mpx), so ``max_pixels`` may not
            exceed that.
    """

    max_short_side: int = 512
    jpeg_quality: int = 90
    max_pixels: int = 120_000_000

    def __post_init__(self) -> None:
        from biomedclip.errors import InputError

        pillow_hard_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) or None
        if self.max_short_side < 1 or not 1 <= self.jpeg_quality <= 100 or self.max_pixels < 1:
            raise InputError(f"image settings out of range: {self}")
        if pillow_hard_limit is not None and self.max_pixels > pillow_hard_limit:
            raise InputError(f"max_pixels {self.max_pixels} is above Pillow's hard limit of {pillow_hard_limit}")


@dataclass(frozen=True)
class ProcessedImage:
    """A decoded, resized, re-encoded figure image and its fingerprints."""

    jpeg: bytes
    width: int
    height: int
    orig_width: int
    orig_height: int
    sha256: str
    phash: str  # of the image without its uniform border (``pixels.content``), so a padded copy keeps it
    thumb: str  # ``pixels.thumbnail``, hex
    pixel_sha256: str  # SHA-256 of the decoded, normalised RGB pixels (and size): one picture in any file format


class ImageRejected(Exception):
    """An image that cannot become a training sample; ``reason`` is a short code, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _ext(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def resolve_media(href: str, media: list[str]) -> str | None:
    """Return the media file a graphic href names, or None.

    Rule: compare base names case-insensitively; an href without extension (``gr1_lrg``) matches any
    image file with that stem, and among several candidates the full-size format wins (jpg > png > tif > gif).
    An href naming a ``.gif`` thumbnail is upgraded to a full-size file of the same stem when one exists.
    """
    if not href:
        return None
    base = posixpath.basename(href.replace("\\", "/")).lower()
    by_name = {posixpath.basename(m).lower(): m for m in media}
    stem, ext = posixpath.splitext(base)
    if ext not in EXTENSION_RANK:
        stem = base  # dots inside names such as ``nihpp-2023.12.31.573776v1-f0002``
    candidates = [m for m in media if posixpath.splitext(posixpath.basename(m).lower())[0] == stem]
    candidates = [m for m in candidates if _ext(m) in EXTENSION_RANK]
    if base in by_name and (ext not in THUMBNAIL_EXTENSIONS or not candidates):
        return by_name[base]
    if not candidates:
        return None
    return min(candidates, key=lambda m: (EXTENSION_RANK.index(_ext(m)), m))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (16-bit, float, CMYK, palette, alpha, 1-bit) to 8-bit RGB; alpha over white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _target_size(width: int, height: int, max_short_side: int) -> tuple[int, int]:
    short = min(width, height)
    if short <= max_short_side:
        return width, height
    scale = max_short_side / short
    return max(1, round(width * scale)), max(1, round(height * scale))


def process_image(data: bytes, config: ImageConfig = ImageConfig()) -> ProcessedImage:
    """Decode ``data`` (first frame of multi-page files), convert to RGB, resize, re-encode as JPEG.

    Raises:
        ImageRejected: empty, not an image, a decompression bomb, or corrupt/truncated.
    """
    if not data:
        raise ImageRejected("empty_file", "zero-byte image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels is the limit, below
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageRejected("not_an_image", f"unknown format, starts with {data[:16]!r}") from exc
    except Image.DecompressionBombError as exc:  # above Pillow's hard limit, itself above max_pixels
        raise ImageRejected("decompression_bomb", f"more than {config.max_pixels} pixels: {exc}") from exc
    except Exception as exc:  # any decoder failure is a corrupt file
        raise ImageRejected("corrupt_image", f"{type(exc).__name__}: {exc}") from exc
    orig_w, orig_h = img.size
    if orig_w * orig_h > config.max_pixels:
        raise ImageRejected("decompression_bomb", f"{orig_w}x{orig_h} exceeds {config.max_pixels} pixels")
    target = _target_size(orig_w, orig_h, config.max_short_side)
    try:
        if img.format == "JPEG" and target != (orig_w, orig_h):
            img.draft("RGB", target)  # let libjpeg decode at 1/2, 1/4 or 1/8 scale: much less work
        img.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
        rgb = _to_rgb(img)
        if rgb.size != target:
            rgb = rgb.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=config.jpeg_quality)
        inner = content(rgb)
    except Exception as exc:  # truncated data, bad tiles, unsupported compression
        raise ImageRejected("corrupt_image", f"{type(exc).__name__}: {exc}") from exc
    return ProcessedImage(
        jpeg=out.getvalue(),
        width=rgb.width,
        height=rgb.height,
        orig_width=orig_w,
        orig_height=orig_h,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=perceptual_hash(inner),
        thumb=thumbnail(inner).hex(),
        pixel_sha256=pixel_digest(rgb),
    )


def perceptual_hash(image: Image.Image) -> str:
    """The 64-bit perceptual hash (16 hex digits) of ``image``, taken on a <=255 px copy (1/3 of the work)."""
    return str(imagehash.phash(image.reduce(max(1, min(image.size) // 128))))


def pixel_digest(rgb: Image.Image) -> str:
    """SHA-256 of an RGB image's size and pixels."""
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()
