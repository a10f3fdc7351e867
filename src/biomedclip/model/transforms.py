"""Image preprocessing as open_clip does it: eval = resize shortest side + center crop; train =
RandomResizedCrop(scale 0.9-1.0); both bicubic, RGB, OpenAI CLIP mean/std."""

from __future__ import annotations

from collections.abc import Callable

from biomedclip.model.config import PreprocessConfig


def _to_rgb(image):
    return image.convert("RGB")


def image_transform(image_size: int, train: bool, cfg: PreprocessConfig | None = None) -> Callable:
    """A callable mapping a PIL image to a float tensor ``[3, image_size, image_size]``."""
    from torchvision import transforms as T

    cfg = cfg or PreprocessConfig()
    interpolation = T.InterpolationMode(cfg.interpolation)
    normalize = T.Normalize(mean=cfg.mean, std=cfg.std)
    if train:
        geometry = [T.RandomResizedCrop(image_size, scale=(0.9, 1.0), interpolation=interpolation)]
    else:
        geometry = [T.Resize(image_size, interpolation=interpolation), T.CenterCrop(image_size)]
    return T.Compose([*geometry, _to_rgb, T.ToTensor(), normalize])
