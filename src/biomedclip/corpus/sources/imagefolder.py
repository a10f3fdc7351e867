"""Labelled image folders (``imagefolder:PATH``): one figure per image, read by :mod:`biomedclip.labelled_folders`.

``PATH`` is either ``PATH/<split>/<class>/<image>`` (split folders such as ``Training``/``Testing``) or
``PATH/<class>/<image>``, whose images go to train/val/test by the shared hash rule (:class:`HashSplit`, the
ratios of ``split``). ``eval --dataset imagefolder:PATH`` reads the same folder with the same rule, so with the
same ratios no image scored as ``test`` was written to the training shards. Each image carries its split in its
figure record (the corpus keeps it instead of the article split) and is its own article, with
``pmcid`` = ``<split>/<class>/<file stem>``: a change of ratios is a new article, never a stale cached split.

The caption is ``caption_template`` formatted with ``label`` = the class text: ``class_names``' text for the folder
(``notumor: no tumor``, the ``--class-names`` YAML that ``train`` and ``eval`` take too), else the folder name with
``_`` and ``-`` read as spaces (``pleural_effusion`` -> ``a chest X-ray showing pleural effusion``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from biomedclip.classnames import class_texts
from biomedclip.corpus.records import Article, ArticleMeta, FigureRecord
from biomedclip.corpus.sources.folder import open_in_folder
from biomedclip.corpus.sources.selection import Selection
from biomedclip.labelled_folders import HashSplit, LabelledFolder, read_labelled_folder

DEFAULT_CAPTION_TEMPLATE = "{label}"


@dataclass
class ImageFolderSource:
    """One article per image of a labelled folder (images in nested folders belong to the top class)."""

    path: Path
    caption_template: str = DEFAULT_CAPTION_TEMPLATE
    selection: Selection = field(default_factory=Selection)
    split: HashSplit = field(default_factory=HashSplit)
    class_names: Mapping[str, str] | None = None  # class folder -> class text (captions)
    folder: LabelledFolder = field(init=False, repr=False)
    labels: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.folder = read_labelled_folder(self.path, self.split)  # a bad layout fails here, before any work
        self.labels = dict(zip(self.folder.classes, class_texts(self.folder.classes, self.class_names), strict=True))

    def describe(self) -> str:
        """What the folder holds and how it was split, with counts (printed by ``corpus build``)."""
        return f"{self.name}: {self.folder.describe()}"

    @property
    def name(self) -> str:
        return f"imagefolder:{self.path}"

    def articles(self) -> Iterator[Article]:
        folder = self.folder
        count = 0
        for image in folder.images:
            if self.selection.limit is not None and count >= self.selection.limit:
                return
            parts = PurePosixPath(image.key).parts[1 if folder.split_folders else 0 :]
            class_dir = image.path.parents[len(parts) - 2]  # parts = (<class>, ..., <file>)
            relative = PurePosixPath(*parts[1:]).as_posix()
            pmcid = PurePosixPath(image.split, *parts).with_suffix("").as_posix()
            if not self.selection.wants_pmcid(pmcid):
                continue
            label = self.labels[image.folder]
            figure = FigureRecord(
                pmcid=pmcid,
                fig_id=image.path.stem,
                label=label,
                caption=self.caption_template.format(label=label),
                graphic=relative,
                graphics=[relative],
                source=str(image.path),
                split=image.split,
                class_name=image.folder,
            )
            opener = partial(open_in_folder, class_dir, frozenset([relative]))
            count += 1
            yield Article(str(image.path), ArticleMeta(pmcid=pmcid), None, [relative], opener, figures=[figure])
