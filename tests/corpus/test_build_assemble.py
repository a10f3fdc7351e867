"""Phase 2's pieces on hand-made tables: which article result is used, hash parsing, shard names."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from biomedclip.corpus.assemble import by_batch, choose, parse_hex64, partition_of, sha_codes, shard_pieces


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


@pytest.mark.parametrize("shard_size", [1, 2, 3, 7, 1000])
def test_shards_fill_in_key_order_within_each_split(shard_size: int) -> None:
    """Partitioned by key ranges, then cut into shards: equal to cutting each split's sorted keys (brute force)."""
    rng = np.random.default_rng(shard_size)
    keys = sorted({f"PMC{rng.integers(10**6):07d}_F{rng.integers(9)}" for _ in range(300)})
    splits = rng.choice(["train", "val", "test"], len(keys), p=[0.7, 0.1, 0.2]).tolist()
    splitters = tuple(sorted(rng.choice(keys, 9, replace=False).tolist()))
    part = partition_of(pa.array(keys), splitters)
    assert part.tolist() == [sum(s <= k for s in splitters) for k in keys]
    folders: dict[str, list[str]] = {}
    counts: dict[tuple[str, int], int] = {}
    for key, split, p in zip(keys, splits, part.tolist(), strict=True):
        folders.setdefault(f"{split}-p{p:06d}", []).append(key)
        counts[(split, p)] = counts.get((split, p), 0) + 1
    ours = {name: [k for folder, lo, hi in pieces for k in sorted(folders[folder])[lo:hi]]
            for name, pieces in shard_pieces(counts, shard_size).items()}  # fmt: skip
    expected: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        mine = sorted(k for k, s in zip(keys, splits, strict=True) if s == split)
        for i in range(0, len(mine), shard_size):
            expected[f"{split}-{i // shard_size:06d}.tar"] = mine[i : i + shard_size]
    assert ours == expected and list(ours) == sorted(expected)


def test_sha_codes_number_the_distinct_pairs() -> None:
    hi = np.array([5, 1, 5, 1, 5], np.uint64)
    lo = np.array([2, 9, 2, 8, 3], np.uint64)
    codes = sha_codes(hi, lo)
    pairs = list(zip(hi.tolist(), lo.tolist(), strict=True))
    assert codes.tolist() == [sorted(set(pairs)).index(p) for p in pairs]


def test_the_typed_row_has_exactly_the_catalog_columns_with_their_types() -> None:
    """``FigureRow`` and the record schema of ``biomedclip.shards`` describe the same catalog row."""
    import dataclasses
    import typing

    import pyarrow as pa

    from biomedclip.corpus.rows import CATALOG_SCHEMA, FigureRow

    strings = pa.list_(pa.string())
    reference = pa.struct([("paragraph", pa.string()), ("sentences", strings), ("section", pa.string()),
                           ("panels", strings), ("kind", pa.string())])  # fmt: skip
    expected = {str: pa.string(), int: pa.int64(), list[str]: pa.list_(pa.string()),
                list[dict[str, typing.Any]]: pa.list_(reference)}  # fmt: skip
    hints = typing.get_type_hints(FigureRow)
    row_types = {}
    for field in dataclasses.fields(FigureRow):
        args = [a for a in typing.get_args(hints[field.name]) if a is not type(None)]
        hint = args[0] if len(args) == 1 and typing.get_origin(hints[field.name]) is not list else hints[field.name]
        row_types[field.name] = expected[hint]
    assert row_types == {f.name: f.type for f in CATALOG_SCHEMA}


@pytest.mark.parametrize("articles", [0, 1, 3, 4, 5])
def test_the_listing_keeps_every_article_whatever_the_chunk_boundaries(articles: int, monkeypatch) -> None:
    from biomedclip.corpus.build import Listing

    monkeypatch.setattr(Listing, "CHUNK", 2)  # 4 articles end exactly on a chunk boundary (100,000 at 50,000)
    listing = Listing()
    for i in range(articles):
        assert listing.add(f"PMC{i}.v1", f"PMC{i}", 1)
    assert not articles or not listing.add("PMC0.v1", "PMC0", 1)  # listed again
    table = listing.table()
    assert table.column_names == ["name", "article", "version"] and table["name"].type == pa.string()
    assert table["article"].to_pylist() == [f"PMC{i}" for i in range(articles)]


def test_a_work_store_of_another_row_schema_is_never_read(monkeypatch) -> None:
    """The work store's name hashes the row columns: rows written before a field was added are not reused."""
    import pyarrow as pa

    from biomedclip.corpus import articles

    today = articles.WorkConfig().digest()
    assert today == articles.WorkConfig().digest()
    older = pa.schema([f for f in articles.WORK_SCHEMA if f.name != "inline_references"])
    monkeypatch.setattr(articles, "WORK_SCHEMA", older)
    assert articles.WorkConfig().digest() != today
