"""CLI commands for using a model: ``embed``, ``classify``, ``index build|search`` and ``serve``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from biomedclip.cli_options import device_option, loading_model, model_option, workers_option
from biomedclip.errors import InputError, RunError
from biomedclip.model.config import RELEASED_CHECKPOINT

# torch and faiss each keep an OpenMP thread team; with the default (active) wait policy the idle team spins and
# starves the other on a small CPU: measured here, a tiny-model text embedding after a faiss search took 350 ms
# instead of 15 ms. Set before torch or faiss is imported (these commands import them lazily).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MODEL_HELP = (
    "Model: local-dir:PATH, hf-hub:ORG/NAME, a checkpoint folder or weight file (registry names such as tiny are "
    "untrained architectures)."
)


def _load(model: str, device: str):
    """The model for inference; a model string that loads nothing or an absent device is an ``InputError``."""
    from biomedclip.api import load

    with loading_model(model):
        return load(model, device=device)


@click.command()
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--shards",
    "-s",
    multiple=True,
    help="Instead of IMAGES: corpus shards (a folder, a glob, 'train-{000000..000009}.tar', joined by '::'; "
    "repeatable), embedded into the vector folder --out.",
)
@model_option(default=RELEASED_CHECKPOINT, help=MODEL_HELP)
@click.option("--out", "-o", required=True, type=click.Path(), help="Output Parquet file (IMAGES) or vector folder.")
@click.option("--text", "texts", multiple=True, help="Also embed this text (repeatable; IMAGES only).")
@device_option
@click.option("--batch-size", default=32, show_default=True)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="--shards: this process (under torchrun: this rank's share), or Ray actors (RAY_ADDRESS, else local).",
)
@workers_option(default=1, help="--engine ray: actors, each with one model copy (one GPU each on CUDA).")
@click.option("--decode-threads", type=click.IntRange(min=0), default=4, show_default=True,
              help="--shards: threads decoding images per model copy (0: in the main thread).")  # fmt: skip
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="--shards: autocast on a GPU (the CPU runs fp32); vectors are stored as float16.")  # fmt: skip
def embed(
    images: tuple[str, ...],
    shards: tuple[str, ...],
    model: str,
    out: str,
    texts: tuple[str, ...],
    device: str,
    batch_size: int,
    engine: str,
    workers: int,
    decode_threads: int,
    precision: str,
):
    """Embed IMAGES (and --text strings) into a Parquet file, or corpus --shards into a vector folder."""
    if bool(images) == bool(shards):
        raise click.UsageError("give either IMAGES or --shards")
    if batch_size < 1:
        raise click.UsageError(f"--batch-size must be positive, got {batch_size}")
    if shards:
        if texts:
            raise click.UsageError("--text goes with IMAGES, not --shards")
        _embed_shards(shards, model, out, device, batch_size, engine, workers, decode_threads, precision)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    embedder = _load(model, device)
    embedder.batch_size = batch_size
    image_vectors = embedder.embed_images(list(images))
    text_vectors = embedder.embed_texts(list(texts)) if texts else image_vectors[:0]
    rows = [("image", path, vector) for path, vector in zip(images, image_vectors, strict=True)]
    rows += [("text", text, vector) for text, vector in zip(texts, text_vectors, strict=True)]
    table = pa.table(
        {
            "kind": [r[0] for r in rows],
            "input": [r[1] for r in rows],
            "embedding": pa.array([r[2].tolist() for r in rows], type=pa.list_(pa.float32(), embedder.dim)),
        }
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    click.echo(
        f"embedded {len(images)} images and {len(texts)} texts ({embedder.dim}-d) -> {out} "
        f"in {time.perf_counter() - start:.1f} s"
    )


def _embed_shards(
    specs: tuple[str, ...],
    model: str,
    out: str,
    device: str,
    batch_size: int,
    engine: str,
    workers: int,
    decode_threads: int,
    precision: str,
) -> None:
    """``embed --shards``: vector shards in OUT, one line per shard, a summary; exit 1 if a shard failed."""
    from biomedclip.serve.embed_run import Rank, ShardWorker, embed_local, embed_on_ray
    from biomedclip.serve.vector_shards import vector_stems
    from biomedclip.shards import expand_shards

    paths = expand_shards(specs)
    vector_stems(paths)  # two shards with one name: exit 2 before any model loads
    rank = Rank.from_env()
    who = f"rank {rank.rank}/{rank.world}: " if rank.world > 1 else ""

    def report(outcome) -> None:
        if outcome.error:
            click.echo(f"  ! {outcome.stem}: {outcome.error}", err=True)
        else:
            state = "embedded" if outcome.embedded else "kept (done)"
            click.echo(f"  {who}{outcome.stem}: {outcome.rows} vectors, {outcome.skipped} skipped, {state}")

    start = time.perf_counter()
    if engine == "ray":
        if workers < 1:
            raise click.UsageError("--engine ray needs --workers of at least 1")
        outcomes = embed_on_ray(model, device, paths, out, workers=workers, batch_size=batch_size,
                                decode_threads=decode_threads, precision=precision, on_shard=report)  # fmt: skip
    else:
        from biomedclip.model.inference import select_device

        embedder = _load(model, str(select_device(device, rank.local_rank)))
        worker = ShardWorker(embedder, out, batch_size=batch_size, decode_threads=decode_threads, precision=precision)
        try:
            outcomes = embed_local(worker, paths, rank, on_shard=report)
        finally:
            worker.close()
    elapsed = time.perf_counter() - start
    embedded = [o for o in outcomes if o.embedded]
    failed = [o for o in outcomes if o.error]
    figures = sum(o.rows + o.skipped for o in embedded)
    click.echo(
        f"{who}vectors {out}: {len(embedded)} shards embedded ({sum(o.rows for o in embedded)} vectors, "
        f"{sum(o.skipped for o in embedded)} images skipped), {len(outcomes) - len(embedded) - len(failed)} already "
        f"done, {len(failed)} failed; {elapsed:.1f} s ({figures / max(elapsed, 1e-9):.1f} images/s)"
    )
    if failed:
        raise RunError(f"{len(failed)} shard(s) could not be embedded, e.g. {failed[0].stem}: {failed[0].error}; "
                       "rerun to retry them")  # fmt: skip


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", "-l", required=True, help='Comma-separated class names, e.g. "normal lung,pneumonia".')
@click.option("--template", "templates", multiple=True, help="Prompt template with {} (repeatable; default: paper's).")
@model_option(default=RELEASED_CHECKPOINT, help=MODEL_HELP)
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image instead of a table.")
def classify(images: tuple[str, ...], labels: str, templates: tuple[str, ...], model: str, device: str, as_json: bool):
    """Classify IMAGES zero-shot over --labels and print each image's class probabilities."""
    from biomedclip.serve.limits import check_template

    names = [label.strip() for label in labels.split(",") if label.strip()]
    if not names:
        raise InputError("--labels needs at least one non-empty label")
    for template in templates:
        check_template(template)
    embedder = _load(model, device)
    probabilities = embedder.classify(list(images), names, list(templates) or None)
    for path, row in zip(images, probabilities, strict=True):
        ranking = sorted(zip(names, row.tolist(), strict=True), key=lambda pair: -pair[1])
        if as_json:
            click.echo(json.dumps({"image": path, "prediction": ranking[0][0], "probabilities": dict(ranking)}))
        else:
            click.echo(f"{path}: {ranking[0][0]}")
            for name, probability in ranking:
                click.echo(f"  {probability:7.2%}  {name}")


@click.group()
def index() -> None:
    """Build and query a FAISS index of figures from corpus shards."""


@index.command("build")
@model_option(default=RELEASED_CHECKPOINT, help=MODEL_HELP)
@click.option(
    "--shards",
    "-s",
    multiple=True,
    help="Shards: a folder, a glob or a brace pattern like 'train-{000000..000009}.tar' (repeatable).",
)
@click.option(
    "--vectors",
    type=click.Path(file_okay=False),
    help="Instead of --shards: a vector folder written by `biomedclip embed` (streaming build, no model).",
)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Index folder.")
@click.option(
    "--kind",
    type=click.Choice(["auto", "flat", "ivfpq", "hnsw"]),
    default="auto",
    show_default=True,
    help="auto: exact up to --exact-max figures, IVF-PQ above (--shards only).",
)
@click.option("--exact-max", default=200_000, show_default=True)
@click.option("--rebuild", is_flag=True, help="Start afresh instead of adding new shards to an existing index.")
@click.option(
    "--memory-vectors",
    default=131_072,
    show_default=True,
    help="--vectors: vectors held in memory at once while building (bounds the build's memory).",
)
@device_option
@click.option("--batch-size", default=64, show_default=True)
def index_build(
    model: str,
    shards: tuple[str, ...],
    vectors: str | None,
    out: str,
    kind: str,
    exact_max: int,
    rebuild: bool,
    memory_vectors: int,
    device: str,
    batch_size: int,
):
    """Embed the figures of SHARDS and add them to the index at OUT (only shards it does not hold yet), or
    index a vector folder (--vectors) with bounded memory."""
    if bool(shards) == bool(vectors):
        raise click.UsageError("give either --shards or --vectors")
    if vectors:
        _build_from_vectors(vectors, out, memory_vectors)
        return
    from biomedclip.serve.build import build_index
    from biomedclip.serve.identity import describe_changes
    from biomedclip.serve.index import FigureIndexError, IndexConfig
    from biomedclip.shards import expand_shards

    paths = expand_shards(shards)
    start = time.perf_counter()
    embedder = _load(model, device)
    try:
        report = build_index(
            embedder,
            paths,
            out,
            config=IndexConfig(kind=kind, exact_max=exact_max),
            rebuild=rebuild,
            batch_size=batch_size,
            on_shard=lambda shard, n: click.echo(f"  + {Path(shard).name}: {n} figures"),
        )
    except FigureIndexError as error:
        raise RunError(str(error)) from error
    elapsed = time.perf_counter() - start
    if report.changed:
        click.echo(
            f"rebuilt: {len(report.changed)} indexed shards changed since they were indexed "
            f"({describe_changes(report.changed)})"
        )
    click.echo(
        f"index {out}: {report.total} figures ({report.kind}); added {report.figures_added} from "
        f"{len(report.shards_added)} shards, {len(report.shards_skipped)} shards already indexed, "
        f"{report.figures_skipped} unreadable images skipped; {elapsed:.1f} s "
        f"({report.figures_added / max(elapsed, 1e-9):.1f} figures/s)"
    )


def _build_from_vectors(vectors: str, out: str, memory_vectors: int) -> None:
    """``index build --vectors``: the streaming build, with a summary line."""
    from biomedclip.serve.index import FigureIndexError
    from biomedclip.serve.vector_build import VectorBuildConfig, build_vector_index

    if memory_vectors < 1:
        raise click.UsageError(f"--memory-vectors must be positive, got {memory_vectors}")
    start = time.perf_counter()
    try:
        report = build_vector_index(
            vectors, out, VectorBuildConfig(memory_vectors=memory_vectors), on_step=lambda m: click.echo(f"  {m}")
        )
    except (FigureIndexError, OSError) as error:
        raise RunError(str(error)) from error
    params = report.parameters
    state = "already up to date" if report.up_to_date else f"built in {time.perf_counter() - start:.1f} s"
    click.echo(
        f"index {out}: {report.count} vectors from {report.shards} shards ({report.skipped_images} images skipped "
        f"by embed), IVF{params['nlist']},PQ{params['pq_m']}x4 (fast scan) nprobe {params['nprobe']}; {state}; "
        f"{report.parts_kept} parts kept from an interrupted run, {report.duplicate_keys} duplicated keys"
    )


@index.command("search")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("query", required=False)
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Search by this image instead of text.")
@click.option("-k", type=click.IntRange(min=1), default=10, show_default=True, help="Number of figures.")
@model_option(show_default="the model the index was built with", help=MODEL_HELP)
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per hit.")
def index_search(
    index_dir: str, query: str | None, image: str | None, k: int, model: str | None, device: str, as_json: bool
):
    """Find the figures of INDEX_DIR that best match QUERY (text) or --image."""
    from biomedclip.serve.app import pmc_url

    if (query is None) == (image is None):
        raise click.UsageError("give either a text QUERY or --image FILE")
    figure_index = _load_index(index_dir)
    embedder = _load(model or figure_index.model, device)
    vector = embedder.embed_images([image]) if image else embedder.embed_texts([query])
    for rank, hit in enumerate(figure_index.search(vector, k)[0], start=1):
        record = hit.record
        if as_json:
            click.echo(json.dumps({"rank": rank, "id": hit.id, "score": hit.score, **record}))
        else:
            caption = " ".join(record["caption"].split())
            click.echo(
                f"{rank:3d}. {hit.score:.3f}  {record['pmcid']} {record['label'] or record['fig_id']}  "
                f"{pmc_url(record['pmcid'])}\n     {caption[:200]}{'…' if len(caption) > 200 else ''}"
            )


@click.command()
@model_option(show_default=f"the index's model, else {RELEASED_CHECKPOINT}", help=MODEL_HELP)
@click.option("--index", "index_dir", type=click.Path(exists=True, file_okay=False), help="Index folder.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", default=8000, show_default=True)
@device_option
@click.option("--max-upload-mb", default=10.0, show_default=True, help="Largest accepted upload.")
def serve(model: str | None, index_dir: str | None, host: str, port: int, device: str, max_upload_mb: float):
    """Run the HTTP service and web page (search, classify, embed; OpenAPI docs at /docs)."""
    import uvicorn

    from biomedclip.serve.app import ServeConfig, create_app
    from biomedclip.serve.server import server_config

    figure_index = _load_index(index_dir) if index_dir else None
    model = model or (figure_index.model if figure_index else RELEASED_CHECKPOINT)
    embedder = _load(model, device)
    config = ServeConfig(max_upload_bytes=int(max_upload_mb * 2**20))
    app = create_app(embedder, figure_index, config)
    figures = len(figure_index) if figure_index else 0
    click.echo(f"serving {model} with {figures} figures on http://{host}:{port}/ (API docs at /docs)")
    uvicorn.Server(server_config(app, host, port, config)).run()


def _load_index(index_dir: str):
    """The index at ``index_dir``; one that cannot be read, or whose shards changed since they were indexed (its
    offsets would serve other bytes), is a ``RunError`` (exit 1)."""
    from biomedclip.serve.identity import changed_shards, describe_changes
    from biomedclip.serve.index import FigureIndex, FigureIndexError
    from biomedclip.serve.vector_index import VectorIndex, is_vector_index

    if is_vector_index(index_dir):
        try:
            return VectorIndex.load(index_dir)
        except FigureIndexError as error:
            raise RunError(str(error)) from error
    try:
        figure_index = FigureIndex.load(index_dir)
    except FigureIndexError as error:
        raise RunError(str(error)) from error
    changes = changed_shards(figure_index)
    if changes:
        raise RunError(
            f"index {index_dir} no longer matches its corpus: {len(changes)} of its {len(figure_index.shards)} "
            f"shards changed since they were indexed ({describe_changes(changes)}); run `biomedclip index build "
            f"-o {index_dir} -s SHARDS` to re-embed them"
        )
    return figure_index
