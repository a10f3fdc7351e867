"""Records by id: every record read back equals its Parquet row (a reference read with pyarrow), in any order,
whatever it holds; a store that does not match its index is refused."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biomedclip.serve.index import FigureIndexError, records_table
from biomedclip.serve.row_records import RowRecords, write_row_records
from biomedclip.serve.vector_folder import VectorFolder, write_vector_shard


def records(start: int, count: int) -> list[dict]:
    return [
        {"key": f"PMC{i}_F1", "caption": "Ölçüm — 肺 \"quoted\" \\ back\nslash" * (i % 3), "year": i if i % 4 else None,
         "parent": "" if i % 5 else f"PMC{i}", "box": [i, 0, i + 3, 7] if i % 5 == 0 else None, "split": "test"}
        for i in range(start, start + count)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> VectorFolder:
    root = tmp_path_factory.mktemp("vec") / "vec"
    vectors = np.random.default_rng(0).standard_normal((250, 8)).astype(np.float32)
    for number, start in enumerate((0, 100, 230)):  # shards of 100, 130 and 20 rows, row groups of 64
        stop = (100, 230, 250)[number]
        table = records_table(records(start, stop - start))
        write_vector_shard(root, f"train-{number:05d}", vectors[start:stop], table, "tiny", 64)
    return VectorFolder(root)


def test_records_by_id_equal_their_parquet_rows_in_any_order(folder, tmp_path) -> None:
    write_row_records(folder, tmp_path / "records")
    store = RowRecords(tmp_path / "records", len(folder))
    reference = pa.concat_tables([pq.read_table(folder.parquet_path(shard)) for shard in folder.shards]).to_pylist()
    ids = np.random.default_rng(1).permutation(len(folder))
    assert store.records(ids) == [reference[i] for i in ids]
    assert store.records([249, 0, 249]) == [reference[249], reference[0], reference[249]]
    assert store.records([]) == []
    assert store.record(100)["caption"] == records(100, 1)[0]["caption"]
    with pytest.raises(IndexError):
        store.records([250])
    with pytest.raises(IndexError):
        store.records([-1])


def test_a_store_that_does_not_match_is_refused(folder, tmp_path) -> None:
    write_row_records(folder, tmp_path / "records")
    with pytest.raises(FigureIndexError, match="do not match the index"):
        RowRecords(tmp_path / "records", len(folder) + 1)
    with (tmp_path / "records" / "rows.bin").open("ab") as rows:
        rows.write(b"{}")
    with pytest.raises(FigureIndexError, match="do not match the index"):
        RowRecords(tmp_path / "records", len(folder))
    (tmp_path / "records" / "offsets.npy").unlink()
    with pytest.raises(FigureIndexError, match=r"offsets\.npy missing; build it again"):
        RowRecords(tmp_path / "records", len(folder))
