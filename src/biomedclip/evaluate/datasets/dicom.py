"""DICOM images -> 8-bit RGB, with the windowing the file itself asks for.

Windowing: the stored values go through the Modality LUT (RescaleSlope/Intercept, e.g. CT Hounsfield units),
then the first WindowCenter/WindowWidth pair in the file selects the range ``center +- width / 2`` (VOI LUT
sequences are not applied). When the file has no window, the min-max range of the image is used. The range maps
linearly to 0..255 (values outside are clipped);
``MONOCHROME1`` (white = low) is inverted so that every image is "white = dense"; colour (RGB/YBR) files are
converted to RGB as stored. Multi-frame files use their middle frame. ``window=(center, width)`` overrides
the file's window (e.g. lung window (-600, 1500) for chest CT).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, convert_color_space

from biomedclip.evaluate.datasets.base import DatasetError


def read_dicom(path: str | Path, window: tuple[float, float] | None = None) -> Image.Image:
    """Read a DICOM file as an RGB PIL image (windowed as described in the module docstring).

    Raises:
        DatasetError: when the file is not DICOM or has no decodable pixel data.
    """
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for bad files and missing decoders
        raise DatasetError(f"cannot read DICOM pixels from {path}: {error}") from error
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[frames // 2]
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        if photometric.startswith("YBR"):
            pixels = convert_color_space(pixels, photometric, "RGB")
        rgb = pixels if pixels.dtype == np.uint8 else _to_uint8(pixels.astype(np.float64), None)
        return Image.fromarray(rgb)
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    window = window or file_window(dataset)
    image = _to_uint8(values, None if window is None else (window[0] - window[1] / 2, window[0] + window[1] / 2))
    if photometric == "MONOCHROME1":
        image = 255 - image
    return Image.fromarray(image).convert("RGB")


def file_window(dataset) -> tuple[float, float] | None:
    """The first (WindowCenter, WindowWidth) pair of a pydicom dataset, or ``None``."""
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        return None
    center, width = dataset.WindowCenter, dataset.WindowWidth
    first = [float(v[0]) if isinstance(v, MultiValue) else float(v) for v in (center, width)]
    return (first[0], first[1]) if first[1] > 0 else None


def _to_uint8(values: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """Clip to ``value_range`` (default: the image's min and max) and scale linearly to 0..255."""
    low, high = value_range if value_range is not None else (float(values.min()), float(values.max()))
    scaled = (np.clip(values, low, high) - low) / max(high - low, 1e-12)
    return np.round(scaled * 255).astype(np.uint8)
