"""Image-caption pairs from the corpus builder's WebDataset shards ``{split}-NNNNNN.tar``.

The tar members are indexed once (name, offset, size); captions are read eagerly (small), images lazily by
seeking into the tar, so a 725k-pair split needs memory for the captions and the index only.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

from biomedclip.evaluate.datasets.base import DatasetError, ImageTextPairs, fingerprint
from biomedclip.evaluate.datasets.folders import check_split

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def shard_files(root: str | Path, split: str) -> list[Path]:
    """The sorted ``{split}-*.tar`` files of a shard folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"shard folder {root} does not exist")
    files = sorted(root.glob(f"{check_split(split)}-*.tar"))
    if not files:
        raise DatasetError(f"no {split}-NNNNNN.tar shards in {root}")
    return files


def corpus_shards(root: str | Path, split: str = "test") -> ImageTextPairs:
    """Every sample of the split's shards holding an image member and a ``.txt`` caption (others are skipped)."""
    captions, keys, locations = [], [], []
    for tar_path in shard_files(root, split):
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(tar_path) as tar:
                for info in tar:
                    if info.isfile() and "." in Path(info.name).name:
                        stem, ext = _split_name(info.name)
                        members.setdefault(stem, {})[ext.lower()] = info
                for stem, parts in members.items():
                    image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
                    if image is None or "txt" not in parts:
                        continue
                    captions.append(tar.extractfile(parts["txt"]).read().decode("utf-8").strip())
                    keys.append(f"{tar_path.name}/{stem}")
                    locations.append((tar_path, image.offset_data, image.size))
        except (OSError, tarfile.TarError) as error:
            raise DatasetError(f"cannot read shard {tar_path}: {error}") from error

    def load(i: int) -> Image.Image:
        path, offset, size = locations[i]
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")

    if not keys:
        raise DatasetError(f"the {split} shards in {root} hold no image+caption samples")
    source = fingerprint(*(f"{p.resolve()}:{p.stat().st_size}" for p in shard_files(root, split)))
    return ImageTextPairs("shards", split, captions, keys, load, source)


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset's key/extension split: the extension starts at the first dot of the last path part."""
    folder, _, base = name.rpartition("/")
    stem, ext = base.split(".", 1)
    return (f"{folder}/{stem}" if folder else stem), ext
