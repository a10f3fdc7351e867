"""The catalog: ``OUT/catalog.parquet``, one row per figure, accepted or rejected with its reason.

Query it with DuckDB (``SELECT reason, count(*) FROM 'OUT/catalog.parquet' GROUP BY 1``) or pyarrow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from biomedclip.shards import CATALOG_FIELDS, arrow_schema

SCHEMA = arrow_schema(CATALOG_FIELDS)


def write_catalog(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write ``rows`` (dicts with the ``SCHEMA`` columns; missing ones become null) atomically; returns the count."""
    rows = list(rows)
    table = pa.Table.from_pylist([{name: row.get(name) for name in SCHEMA.names} for row in rows], schema=SCHEMA)
    tmp = Path(f"{path}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return len(rows)


def read_catalog(path: Path) -> pa.Table:
    """Read the catalog back as a pyarrow table."""
    return pq.read_table(path)
