"""Phase 2's pieces on hand-made tables: which article result is used, hash parsing, shard names."""

from __future__ import annotations

import pyarrow as pa

from biomedclip.corpus.assemble import by_batch, choose, parse_hex64, shard_names


def test_the_latest_listed_version_and_its_final_result_are_chosen() -> None:
    listing = pa.table({
        "name": ["PMC1.v1", "PMC1.v2", "PMC2.v1", "PMC3.v1"], "article": ["PMC1", "PMC1", "PMC2", "PMC3"],
        "version": [1, 2, 1, 1],
    })  # fmt: skip
    held = pa.table({
        "name": ["PMC1.v1", "PMC1.v2", "PMC2.v1", "PMC2.v1", "PMC3.v1", "PMC3.v1", "PMC9.v1"],
        "final_min": [True, True, False, True, True, True, True],
        "final_count": [3, 2, 1, 4, 5, 5, 7],
        "batch": ["b1", "b2", "b0", "b3", "b5", "b4", "b1"],
    })  # fmt: skip
    chosen = choose(listing, held)
    got = dict(zip(chosen.table["name"].to_pylist(), chosen.table["batch"].to_pylist(), strict=True))
    # v2 of PMC1; PMC2's final result over its transient one; PMC3 from the smaller batch id; PMC9 not listed
    assert got == {"PMC1.v2": "b2", "PMC2.v1": "b3", "PMC3.v1": "b4"}
    assert chosen.rows == 2 + 4 + 5
    assert {b: t.to_pylist() for b, t in chosen.by_batch().items()} == {
        "b2": ["PMC1.v2"],
        "b3": ["PMC2.v1"],
        "b4": ["PMC3.v1"],
    }
    assert list(by_batch(chosen.table)) == ["b2", "b3", "b4"]


def test_hex_hashes_parse_like_int() -> None:
    values = ["0000000000000000", "ffffffffffffffff", "0123456789ABCDEF", "8000000000000001"]
    assert parse_hex64(pa.array(values)).tolist() == [int(v, 16) for v in values]
    assert parse_hex64(pa.chunked_array([values[:1], values[1:]]).slice(1)).tolist() == [int(v, 16) for v in values[1:]]


def test_shards_fill_in_key_order_within_each_split() -> None:  # train keys in order: a b | c e | f
    keys = pa.array(["e", "a", "d", "b", "c", "f"])
    splits = pa.array(["train", "train", "test", "train", "train", "train"])
    assert shard_names(keys, splits, 2).to_pylist() == [
        "train-000001.tar", "train-000000.tar", "test-000000.tar", "train-000000.tar", "train-000001.tar",
        "train-000002.tar",
    ]  # fmt: skip


def test_the_typed_row_has_exactly_the_catalog_columns_with_their_types() -> None:
    """``FigureRow`` and the record schema of ``biomedclip.shards`` describe the same catalog row."""
    import dataclasses
    import typing

    import pyarrow as pa

    from biomedclip.corpus.rows import CATALOG_SCHEMA, FigureRow

    expected = {str: pa.string(), int: pa.int64(), list[str]: pa.list_(pa.string())}
    hints = typing.get_type_hints(FigureRow)
    row_types = {}
    for field in dataclasses.fields(FigureRow):
        args = [a for a in typing.get_args(hints[field.name]) if a is not type(None)]
        hint = args[0] if len(args) == 1 and typing.get_origin(hints[field.name]) is not list else hints[field.name]
        row_types[field.name] = expected[hint]
    assert row_types == {f.name: f.type for f in CATALOG_SCHEMA}
