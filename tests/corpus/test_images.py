"""Images: href resolution, decoding of every mode and format into RGB, resizing, and clear rejections."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomedclip.corpus.images import ImageConfig, ImageRejected, process_image, resolve_media

PACKAGES = Path("pmc/packages/extracted")


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_resolve_prefers_full_size_and_adds_extensions() -> None:
    media = ["gr1_lrg.gif", "gr1_lrg.jpg", "gr2.GIF", "main.pdf", "nihpp-2023.12.31.573776v1-f0002.jpg",
             "nihpp-2023.12.31.573776v1-f0002.gif", "fig3.tif"]  # fmt: skip
    assert resolve_media("gr1_lrg", media) == "gr1_lrg.jpg"
    assert resolve_media("gr1_lrg.gif", media) == "gr1_lrg.jpg"  # a thumbnail href upgraded to the full size
    assert resolve_media("gr2", media) == "gr2.GIF"  # only a gif: take it
    assert resolve_media("nihpp-2023.12.31.573776v1-f0002", media) == "nihpp-2023.12.31.573776v1-f0002.jpg"
    assert resolve_media("FIG3", media) == "fig3.tif"
    assert resolve_media("main", media) is None  # a PDF is not an image
    assert resolve_media("gr9", media) is None
    assert resolve_media("", media) is None


def test_resolve_on_a_real_package(shared_fixtures: Path) -> None:
    folder = shared_fixtures / PACKAGES / "PMC10802347" / "PMC10802347"
    media = sorted(p.name for p in folder.iterdir())
    assert resolve_media("nihpp-2023.12.31.573776v1-f0001", media) == "nihpp-2023.12.31.573776v1-f0001.gif"
    assert resolve_media("nihpp-2023.12.31.573776v1-f0004", media) == "nihpp-2023.12.31.573776v1-f0004.jpg"


def test_real_jpeg_is_resized_to_the_short_side(shared_fixtures: Path) -> None:
    data = (shared_fixtures / PACKAGES / "PMC11286954/PMC11286954/41420_2024_2111_Fig1_HTML.jpg").read_bytes()
    original = _decoded(data).size
    out = process_image(data, ImageConfig(max_short_side=128))
    assert min(out.width, out.height) == 128
    assert (out.orig_width, out.orig_height) == original
    assert abs(out.width / out.height - original[0] / original[1]) < 0.02
    decoded = _decoded(out.jpeg)
    assert decoded.format == "JPEG" and decoded.mode == "RGB" and decoded.size == (out.width, out.height)
    assert len(out.phash) == 16 and len(out.sha256) == 64


def test_real_tiff_and_gif(shared_fixtures: Path) -> None:
    tif = (shared_fixtures / PACKAGES / "PMC11286954/PMC11286954/41420_2024_2111_MOESM2_ESM.tif").read_bytes()
    gif = (shared_fixtures / PACKAGES / "PMC1064083/PMC1064083/bcr936-1.gif").read_bytes()
    for data in (tif, gif):
        out = process_image(data)
        assert _decoded(out.jpeg).mode == "RGB"


def test_small_image_is_not_upscaled() -> None:
    out = process_image(_encode(Image.new("RGB", (300, 200), "red"), "PNG"))
    assert (out.width, out.height) == (300, 200)


@pytest.mark.parametrize(
    ("mode", "fmt", "extra"),
    [
        ("RGB", "PNG", {}),
        ("L", "JPEG", {}),
        ("CMYK", "JPEG", {}),
        ("CMYK", "TIFF", {}),
        ("P", "GIF", {}),
        ("RGBA", "PNG", {}),
        ("LA", "PNG", {}),
        ("1", "TIFF", {}),
        ("I;16", "PNG", {}),
        ("I;16", "TIFF", {}),
        ("F", "TIFF", {}),
    ],
)
def test_every_mode_becomes_rgb(mode: str, fmt: str, extra: dict) -> None:
    rng = np.random.default_rng(0)
    if mode in ("I;16",):
        img = Image.fromarray((rng.random((80, 120)) * 65535).astype(np.uint16))
        assert img.mode.startswith("I;16")
    elif mode == "F":
        img = Image.fromarray(rng.random((80, 120)).astype(np.float32))
    else:
        img = Image.fromarray((rng.random((80, 120, 3)) * 255).astype(np.uint8)).convert(mode)
    out = process_image(_encode(img, fmt, **extra))
    decoded = _decoded(out.jpeg)
    assert decoded.mode == "RGB" and decoded.size == (120, 80)
    assert np.asarray(decoded).std() > 1  # not a blank image


def test_transparent_background_becomes_white() -> None:
    img = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    pixels = np.asarray(_decoded(process_image(_encode(img, "PNG")).jpeg))
    assert pixels.min() > 240


def test_palette_with_transparency() -> None:
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 0, 0] * 256)
    data = _encode(img, "GIF", transparency=0)
    assert np.asarray(_decoded(process_image(data).jpeg)).min() > 240


def test_multipage_tiff_takes_the_first_page() -> None:
    pages = [Image.new("RGB", (64, 48), c) for c in ("white", "black", "black")]
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:])
    assert np.asarray(_decoded(process_image(buf.getvalue()).jpeg)).mean() > 240


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [11_000, 40_000])
def test_decompression_bomb_is_refused_before_decoding(side: int) -> None:
    with pytest.raises(ImageRejected) as info:
        process_image(_png_header(side, side))
    assert info.value.reason == "decompression_bomb"


def test_configurable_pixel_limit() -> None:
    data = _encode(Image.new("RGB", (200, 200)), "PNG")
    with pytest.raises(ImageRejected) as info:
        process_image(data, ImageConfig(max_pixels=10_000))
    assert info.value.reason == "decompression_bomb"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_file"),
        (b"<html><body>404 Not Found</body></html>", "not_an_image"),
        (b"%PDF-1.4 not really a figure", "not_an_image"),
    ],
)
def test_bad_bytes_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected) as info:
        process_image(data)
    assert info.value.reason == reason


def test_truncated_jpeg_is_corrupt(shared_fixtures: Path) -> None:
    data = (shared_fixtures / PACKAGES / "PMC1064083/PMC1064083/bcr936-1.jpg").read_bytes()
    with pytest.raises(ImageRejected) as info:
        process_image(data[: len(data) // 3])
    assert info.value.reason == "corrupt_image"


def test_the_pixel_limit_is_one_number_exactly_at_120_mpx() -> None:
    """README and ImageConfig say 120 Mpx; Pillow's own 89.5 Mpx warning must not refuse images below it."""
    assert ImageConfig().max_pixels == 120_000_000
    exactly = _encode(Image.new("L", (12_000, 10_000), 128), "JPEG", quality=50)  # 120,000,000 px: allowed
    processed = process_image(exactly)
    assert (processed.orig_width, processed.orig_height) == (12_000, 10_000)
    with pytest.raises(ImageRejected) as info:
        process_image(_png_header(12_000, 10_001))  # 120,012,000 px, refused from the header alone
    assert info.value.reason == "decompression_bomb"


def test_a_pixel_limit_above_pillows_hard_limit_is_a_bad_setting() -> None:
    from biomedclip.errors import InputError

    hard = 2 * Image.MAX_IMAGE_PIXELS
    assert ImageConfig(max_pixels=hard).max_pixels == hard
    with pytest.raises(InputError, match="hard limit"):
        ImageConfig(max_pixels=hard + 1)
