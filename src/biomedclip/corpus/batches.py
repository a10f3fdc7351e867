"""Work batches: the unit of phase 1. A worker processes a batch of articles and writes its result itself.

A batch's result is two files under ``OUT/work/<config hash>/batches/<2 hex>/``: ``<id>.tar`` (the JPEG of
every accepted figure, at offsets recorded in the rows) and ``<id>.parquet`` (the batch's ``FigureRow``s, see
``rows.WORK_SCHEMA``), the Parquet file written last: it is the batch's done marker. The batch id is a hash of
its article names, so a rerun that forms the same batch overwrites it with the same content.
An article whose result is not ``final`` (a transient failure) keeps its rows, but is not done: the next run
processes it again and phase 2 prefers the final result.

Work files are verified before reuse: the Parquet file is written with page checksums and a build first reads
every batch's rows with them checked (a damaged file is dropped with its tar, so its articles are processed
again); each row records its JPEG's size and SHA-256, which phase 2 checks before copying the image into a shard
or pack (a damaged tar, pack or shard drops the batches whose images it held, see ``DamagedWork``).

A build with panels (``--unit panel|both``) has a second store, the panel corpus's (``OUT/panels/work/...``): a
batch's panel rows and crops are written there first, then its figure files, so a batch whose figure rows are
done has its panels too.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from biomedclip.corpus.articles import (
    ArticlePayload,
    ArticleResult,
    WorkConfig,
    article_key,
    article_name,
    process_article,
)
from biomedclip.corpus.outdir import OutDir
from biomedclip.corpus.records import Article, strip_root
from biomedclip.corpus.rows import (
    ACCEPTED,
    CATALOG_SCHEMA,
    PANEL_CATALOG_SCHEMA,
    FigureRow,
    work_schema,
)
from biomedclip.shards import PANEL_RECORD_FIELDS, SHARD_RECORD_FIELDS

WorkItem = Article | ArticlePayload


@dataclass(frozen=True)
class BatchCounts:
    """What a worker reports back for a batch: the driver sums these, nothing else crosses."""

    batch: str
    articles: int
    figures: int
    accepted: int


class DamagedWork(Exception):
    """Phase 2 found work files whose bytes are not what was recorded; ``batches`` maps batch id -> what."""

    def __init__(self, batches: Mapping[str, str]) -> None:
        self.batches = dict(batches)
        super().__init__(f"{len(self.batches)} work batches are damaged")


def image_intact(data: bytes, size: int, sha256: str | None) -> bool:
    """Whether ``data`` is the JPEG a worker stored: ``size`` bytes with the recorded SHA-256 (work written
    before it was recorded: a JPEG's start and end markers)."""
    if len(data) != size:
        return False
    if sha256:
        return hashlib.sha256(data).hexdigest() == sha256
    return data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"


def batch_id(names: Iterable[str]) -> str:
    """A stable id for the batch of these article names."""
    return hashlib.sha1("\n".join(sorted(names)).encode()).hexdigest()[:20]


class WorkStore:
    """The batches of one work configuration in OUT (``work/<digest>/batches``), and where their images are.

    A batch's images are in its tar until a phase 2 has released them (local OUT): then the tar is deleted and
    ``work/<digest>/images/`` says where each image lies (``index-*.parquet``: ``batch, key, file, offset,
    size``): in a released shard, or in a pack of the images that no shard holds (duplicates, results not
    chosen in that build). A batch without its tar whose images are not released (another configuration's
    release replaced them) is not used: its articles are processed again.
    """

    def __init__(
        self, out: OutDir, digest: str, *, panels: WorkStore | None = None, catalog: pa.Schema = CATALOG_SCHEMA,
        record_fields: tuple[str, ...] = SHARD_RECORD_FIELDS,
    ) -> None:  # fmt: skip
        self.out = out
        self.folder = f"work/{digest}/batches"
        self.images = f"work/{digest}/images"
        self.panels = panels  # the panel corpus's store, written beside this one (None: figures only)
        self.catalog = catalog  # the catalog's columns of the rows kept here
        self.record_fields = record_fields  # the fields of each sample's ``<key>.json``

    @classmethod
    def of_panels(cls, out: OutDir, digest: str) -> WorkStore:
        """The store of a panel corpus (``PanelRow``s) in ``out``."""
        return cls(out, digest, catalog=PANEL_CATALOG_SCHEMA, record_fields=PANEL_RECORD_FIELDS)

    def path(self, batch: str, suffix: str) -> str:
        return f"{self.folder}/{batch[:2]}/{batch}{suffix}"

    def batches(self) -> list[str]:
        """Ids of the complete batches (those with their Parquet file) whose images can be read."""
        ids = [Path(name).stem for name in self.out.list(self.folder, ".parquet")]
        if self.out.is_s3 or self.out.local(self.images).is_dir():
            return ids
        tars = self.tars()
        return [b for b in ids if b in tars]

    def tars(self) -> set[str]:
        """Ids of the batches whose tar is still there."""
        return {Path(name).stem for name in self.out.list(self.folder, ".tar")}

    def released(self) -> pa.Table | None:
        """Where the released images of this configuration lie (None: nothing released, or S3 OUT)."""
        if self.out.is_s3 or not self.out.local(self.images).is_dir():
            return None
        parts = sorted(self.out.local(self.images).glob("index-*.parquet"))
        return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None

    def read_rows(self, batch: str, columns: list[str] | None = None) -> pa.Table:
        """The batch's rows (``columns`` of them), page checksums verified; columns that work written by an older
        version lacks are null."""
        source = self.path(batch, ".parquet")
        data = io.BytesIO(self.out.read_bytes(source)) if self.out.is_s3 else self.out.local(source)
        table = pq.read_table(data, columns=columns, page_checksum_verification=True)
        schema = work_schema(self.catalog)
        for name in columns or schema.names:
            if name not in table.column_names:
                table = table.append_column(schema.field(name), pa.nulls(len(table), schema.field(name).type))
        return table

    def drop_damaged(self) -> list[str]:
        """Read every batch's rows; drop (see :meth:`discard`) those that cannot be read. Returns one warning each."""
        warnings = []
        for batch in self.batches():
            try:
                self.read_rows(batch)
            except (OSError, pa.ArrowException) as error:
                self.discard(batch)
                warnings.append(f"work batch {batch}: its rows cannot be read ({_one_line(error)}); its articles are "
                                "processed again")  # fmt: skip
        return warnings

    def discard(self, batch: str) -> None:
        """Delete a batch's rows (its done marker), then its tar: its articles are processed again."""
        self.out.delete(self.path(batch, ".parquet"))
        self.out.delete(self.path(batch, ".tar"))

    def done_articles(self) -> Iterator[str]:
        """Names of the articles with a final result in some batch (read batch by batch); with panels, in a batch
        whose panel rows are there too (an article without panels has none, but its batch has its panel files)."""
        batches = self.batches()
        if self.panels is not None:
            with_panels = set(self.panels.batches())
            batches = [b for b in batches if b in with_panels]
        for batch in batches:
            table = self.read_rows(batch, ["article", "version", "final"])
            table = table.filter(pc.field("final"))
            pairs = zip(table["article"].to_pylist(), table["version"].to_pylist(), strict=True)
            yield from {f"{article}.v{version or 0}" for article, version in pairs}

    def write(self, batch: str, results: list[ArticleResult]) -> None:
        """Write the batch's tar, then its Parquet rows (the done marker), each atomically."""
        rows: list[dict] = []
        with self.out.scratch(self.path(batch, ".tar")) as tmp:
            tar_path = tmp / "images.tar"
            with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
                for result in results:
                    for row in result.rows:
                        record = {**row.as_dict(), "final": result.final, "batch": batch}
                        jpeg = result.images.get(row.key)
                        if jpeg is not None:
                            info = tarfile.TarInfo(f"{row.key}.jpg")
                            info.size, info.mtime, info.mode = len(jpeg), 0, 0o644
                            tar.addfile(info, io.BytesIO(jpeg))
                            data_start = tar.offset - -(-len(jpeg) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                            record.update(image_offset=data_start, image_size=len(jpeg),
                                          image_sha256=hashlib.sha256(jpeg).hexdigest())  # fmt: skip
                        rows.append(record)
            schema = work_schema(self.catalog)
            table = pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)
            parquet_path = tmp / "rows.parquet"
            pq.write_table(table, parquet_path, write_page_checksum=True)
            self.out.put_file(self.path(batch, ".tar"), tar_path)
            self.out.put_file(self.path(batch, ".parquet"), parquet_path)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:200] if text else type(error).__name__


def crashed_result(item: WorkItem, detail: str) -> ArticleResult:
    """The result of an article whose processing killed its worker process (e.g. a decoder's segfault)."""
    key = article_key(item.meta, item.source)
    row = FigureRow(key=f"{key}_", article=key, pmcid=item.meta.pmcid or "", fig_id="", label="", caption="",
                    graphic="", source=item.source, version=item.meta.version, license=item.meta.license)  # fmt: skip
    detail = strip_root(detail, getattr(item, "root", ""))
    return ArticleResult(name=article_name(item.meta, item.source), rows=[row.reject("worker_crashed", detail)],
                         images={})  # fmt: skip


def process_batch(
    items: list[WorkItem], config: WorkConfig, store: WorkStore, crashed: tuple[str, ...] = ()
) -> BatchCounts:
    """Worker side: process ``items`` and write their batch into ``store``; ``crashed`` names articles that
    killed a worker before and are recorded as ``worker_crashed`` instead of being processed again."""
    results = []
    for item in items:
        name = article_name(item.meta, item.source)
        results.append(crashed_result(item, "the worker died on this article") if name in crashed
                       else process_article(item, config))  # fmt: skip
    batch = batch_id(r.name for r in results)
    if store.panels is not None:  # first: the figure rows are the batch's done marker
        store.panels.write(batch, [ArticleResult(r.name, r.panel_rows, r.panel_images, r.final) for r in results])
    store.write(batch, results)
    rows = [row for r in results for row in r.rows]
    return BatchCounts(batch, len(results), len(rows), sum(1 for r in rows if r.status == ACCEPTED))
