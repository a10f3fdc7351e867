"""Labelled image folders (``imagefolder:PATH``): ``PATH/<class>/<image>`` becomes one figure per image.

The class is the sub-folder name; the caption is ``caption_template`` formatted with ``label`` = the class
name with ``_`` and ``-`` read as spaces (``pleural_effusion`` -> ``a chest X-ray showing pleural
effusion``). Each image is its own article (``pmcid`` = ``<class>/<file stem>``), so the article-level split
spreads every class over train/valid/test. Images directly under ``PATH`` have no class and are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from biomedclip.corpus.records import Article, ArticleMeta, FigureRecord
from biomedclip.corpus.sources.folder import open_in_folder
from biomedclip.corpus.sources.local import is_image_name
from biomedclip.corpus.sources.selection import Selection

DEFAULT_CAPTION_TEMPLATE = "{label}"


def class_label(folder_name: str) -> str:
    return " ".join(folder_name.replace("_", " ").replace("-", " ").split())


@dataclass
class ImageFolderSource:
    """One article per image below ``PATH/<class>/`` (images in nested folders belong to the top class)."""

    path: Path
    caption_template: str = DEFAULT_CAPTION_TEMPLATE
    selection: Selection = field(default_factory=Selection)

    @property
    def name(self) -> str:
        return f"imagefolder:{self.path}"

    def articles(self) -> Iterator[Article]:
        count = 0
        for class_dir in sorted(p for p in self.path.iterdir() if p.is_dir()):
            label = class_label(class_dir.name)
            caption = self.caption_template.format(label=label)
            for image in sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image_name(p.name)):
                if self.selection.limit is not None and count >= self.selection.limit:
                    return
                relative = image.relative_to(class_dir).as_posix()
                pmcid = f"{class_dir.name}/{image.relative_to(class_dir).with_suffix('').as_posix()}"
                if not self.selection.wants_pmcid(pmcid):
                    continue
                figure = FigureRecord(
                    pmcid=pmcid,
                    fig_id=image.stem,
                    label=label,
                    caption=caption,
                    graphic=relative,
                    graphics=[relative],
                    source=str(image),
                    class_name=class_dir.name,
                )
                opener = partial(open_in_folder, class_dir, frozenset([relative]))
                count += 1
                yield Article(str(image), ArticleMeta(pmcid=pmcid), None, [relative], opener, figures=[figure])
