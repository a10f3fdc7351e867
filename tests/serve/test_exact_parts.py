"""The exact parts: rows read by id equal the stored float16 vectors, the maps read no pages around a fault,
and a file whose rows do not end it is refused."""

from pathlib import Path

import faiss
import numpy as np
import pytest

from biomedclip.serve.exact_parts import ExactParts
from biomedclip.serve.index import FigureIndexError

DIM = 24  # 48-byte rows: some straddle a 4 KB page boundary


def write_parts(folder: Path, vectors: np.ndarray, part_vectors: int) -> list[Path]:
    paths = []
    for number, start in enumerate(range(0, len(vectors), part_vectors)):
        index = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        index.add(vectors[start : start + part_vectors])
        paths.append(folder / f"part-{number:05d}.faiss")
        faiss.write_index(index, str(paths[-1]))
    return paths


def test_rows_by_id_equal_the_float16_vectors(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((1000, DIM)).astype(np.float32)
    parts = ExactParts(write_parts(tmp_path, vectors, 400), 400)
    ids = np.array([0, 85, 170, 341, 399, 400, 401, 799, 800, 999])  # 85 * 48 bytes straddles a page
    expected = vectors[ids].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(parts.vectors(ids), expected)
    assert parts.vectors(np.array([], np.int64)).shape == (0, DIM)


def test_the_maps_are_advised_random_so_a_fault_reads_its_page_only(tmp_path):
    vectors = np.ones((5000, DIM), np.float32)
    parts = ExactParts(write_parts(tmp_path, vectors, 5000), 5000)
    maps = Path("/proc/self/smaps").read_text().split("\n")
    starts = [n for n, line in enumerate(maps) if line.endswith("part-00000.faiss") and str(tmp_path) in line]
    assert starts, "the part is not memory-mapped"
    flags = next(line for line in maps[starts[0] :] if line.startswith("VmFlags:")).split()
    assert "rr" in flags  # the kernel's mark for MADV_RANDOM
    del parts


def test_a_file_whose_rows_do_not_end_it_is_refused(tmp_path):
    vectors = np.random.default_rng(1).standard_normal((100, DIM)).astype(np.float32)
    [path] = write_parts(tmp_path, vectors, 100)
    with path.open("ab") as out:
        out.write(np.random.default_rng(2).bytes(2 * DIM))
    with pytest.raises(FigureIndexError, match="do not end the file"):
        ExactParts([path], 100)
