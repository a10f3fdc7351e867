"""The exact parts of a vector index: float16 flat faiss indexes, memory-mapped, read at random rows.

Re-ranking reads a few hundred scattered 1 KB vectors per query. Through the memory map (faiss advises it
``MADV_RANDOM``: a fault reads its own page only) each page-cache miss is a page fault served on its own, so a
cold query waited for hundreds of disk reads one after another. So before rows are gathered their pages are
requested at once (``posix_fadvise(WILLNEED)`` on the file: the reads go out together and the disk serves them
in parallel): a cold query waits about as long as the slowest read, not the sum.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from biomedclip.serve.index import FigureIndexError


def float16_view(part: faiss.IndexScalarQuantizer) -> np.ndarray:
    """The (ntotal, d) float16 array a memory-mapped faiss ``SQfp16`` index (an exact part) stores, without a copy
    (numpy gathers rows three times faster than faiss's ``reconstruct_batch`` decodes them); valid while ``part``
    lives."""
    if part.sq.qtype != faiss.ScalarQuantizer.QT_fp16 or part.code_size != 2 * part.d:
        raise FigureIndexError(f"an exact part is not a float16 flat index (code size {part.code_size})")
    raw = faiss.rev_swig_ptr(part.codes.data(), part.ntotal * part.code_size)
    return raw.view(np.float16).reshape(part.ntotal, part.d)


def request_pages(descriptor: int, starts: list[int], ends: list[int]) -> None:
    """Ask the kernel for the pages holding the byte ranges ``[start, end)`` of a file, all at once (asynchronous:
    the reads go out together, and the reads or faults that follow find the pages in the page cache)."""
    for start, end in zip(starts, ends, strict=True):
        os.posix_fadvise(descriptor, start, end - start, os.POSIX_FADV_WILLNEED)


def by_part(ids: np.ndarray, arrays: list[np.ndarray], part_vectors: int, out: np.ndarray) -> np.ndarray:
    """Rows of sorted ``ids`` gathered from per-part arrays of ``part_vectors`` rows each into ``out``."""
    parts = ids // part_vectors
    bounds = np.flatnonzero(np.diff(parts)) + 1
    for group in np.split(np.arange(len(ids)), bounds):
        if len(group):
            number = int(parts[group[0]])
            out[group] = arrays[number][ids[group] - number * part_vectors]
    return out


class ExactParts:
    """The float16 parts of ``part_vectors`` vectors each: faiss indexes (for filtered brute force) and their rows,
    read by id with the pages they lie on requested in parallel."""

    def __init__(self, paths: list[Path], part_vectors: int) -> None:
        self._files: list[int] = []
        self.part_vectors = part_vectors
        self.indexes = [faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC) for path in paths]
        self.views = [float16_view(index) for index in self.indexes]
        self._offsets: list[int] = []  # where each part's rows start in its file (faiss writes the codes last)
        for path, view in zip(paths, self.views, strict=True):
            descriptor = os.open(path, os.O_RDONLY)
            self._files.append(descriptor)
            self._offsets.append(os.fstat(descriptor).st_size - view.nbytes)
            if len(view) and os.pread(descriptor, view.shape[1] * 2, self._offsets[-1]) != view[0].tobytes():
                raise FigureIndexError(f"{path}: its rows do not end the file (a faiss format this cannot read)")

    def __del__(self) -> None:
        for descriptor in self._files:
            os.close(descriptor)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The float32 vectors of sorted ``ids``, their pages fetched in parallel first."""
        parts = ids // self.part_vectors
        for number in np.unique(parts).tolist():
            self._prefetch(number, ids[parts == number])
        return by_part(ids, self.views, self.part_vectors, np.empty((len(ids), self.views[0].shape[1]), np.float32))

    def _prefetch(self, number: int, ids: np.ndarray) -> None:
        """Ask the kernel for the pages holding these rows of part ``number``."""
        row_bytes = self.views[number].shape[1] * 2
        starts = self._offsets[number] + (ids - number * self.part_vectors) * row_bytes
        request_pages(self._files[number], starts.tolist(), (starts + row_bytes).tolist())
