"""The HTTP service: figure search by text or image, zero-shot classification, embeddings and a web page.

    app = create_app(biomedclip.load("local-dir:ckpt"), FigureIndex.load("index"))
    serve.server.server_config(app, "127.0.0.1", 8000, ServeConfig())   # uvicorn, with connection limits

Routes: ``GET /search?q=...&k=10`` and ``POST /search`` (an image upload), both filtered by ``year_min``,
``year_max``, ``journal``, ``license`` and ``split``; ``GET /filters`` (the values those can take);
``POST /classify`` (an image and comma-separated labels); ``POST /embed`` (texts and/or images);
``GET /figures/{id}`` and ``GET /figures/{id}/image`` (served from the shards); ``GET /healthz``; ``GET /docs``
(OpenAPI) and the page at ``/``.

Every bad request gets a 4xx JSON ``{"detail": "..."}`` saying what is wrong, checked against
:class:`~biomedclip.serve.limits.ServeConfig` before any work. Model calls go through one
:class:`~biomedclip.serve.gate.InferenceGate` in small turns, so a large ``/classify`` cannot hold up searches;
a request that cannot get its next turn within its time budget gets 503. Responses never show server paths.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError

from biomedclip import __version__
from biomedclip.errors import InputError
from biomedclip.model.inference import (
    DEFAULT_TEMPLATES,
    Embedder,
    ImageDecodeError,
    open_image,
    zeroshot_probabilities,
)
from biomedclip.serve.gate import BudgetExceeded, InferenceGate
from biomedclip.serve.index import FigureFilter, FigureIndex, FigureIndexError, Hit
from biomedclip.serve.limits import BodyLimit, ServeConfig, parse_labels, parse_templates
from biomedclip.serve.shards import ShardError, read_image_bytes
from biomedclip.serve.vector_index import VectorIndex

SearchIndex = FigureIndex | VectorIndex  # what the service searches: both answer len, search, record, facets...

__all__ = ["ServeConfig", "create_app", "pmc_url", "public_model_name"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PMC_ARTICLE_URL = "https://pmc.ncbi.nlm.nih.gov/articles/{pmcid}/"
ACCEPTED_CONTENT_TYPES = {
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/bmp",
    "image/tiff",
    "image/webp",
    "application/octet-stream",  # browsers send this when they cannot tell; the decoded format decides
}
ACCEPTED_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "MPO"}
_MAGIC = ((b"\xff\xd8", "image/jpeg"), (b"\x89PNG", "image/png"), (b"GIF8", "image/gif"), (b"RIFF", "image/webp"))
RECORD_FIELDS = ("key", "pmcid", "fig_id", "label", "caption", "license", "journal", "year", "split", "parent", "box",
                 "panel_label", "subcaption")  # fmt: skip


def pmc_url(pmcid: str) -> str:
    """The PMC article page of a PMCID (``PMC123`` or ``123``), or ``""`` when there is none (e.g. the
    ``class/file`` ids of figures from labelled image folders)."""
    digits = (pmcid or "").strip().upper().removeprefix("PMC")
    return PMC_ARTICLE_URL.format(pmcid=f"PMC{digits}") if digits.isdigit() else ""


def public_model_name(name: str) -> str:
    """The model's name without the server's file paths: ``local-dir:/srv/ckpt/final`` -> ``local-dir:final``,
    ``/srv/ckpt/model.safetensors`` -> ``model.safetensors``; registry and ``hf-hub:`` names unchanged."""
    if name.startswith("hf-hub:"):
        return name
    prefix = "local-dir:" if name.startswith("local-dir:") else ""
    path = name.removeprefix(prefix)
    return prefix + (PurePath(path.rstrip("/\\")).name if "/" in path or "\\" in path else path)


def _hit_json(hit: Hit, index: SearchIndex) -> dict[str, Any]:
    """A result: the record's fields (with its corpus ``key`` and, for a panel, its ``parent`` figure's key), links,
    and for a panel the id of its parent figure (null when the index does not hold it)."""
    record = hit.record
    return {
        "id": hit.id,
        "score": round(hit.score, 6),
        **{name: record.get(name) for name in RECORD_FIELDS},
        "parent_id": index.parent_id(hit.id, record),
        "pmc_url": pmc_url(record.get("pmcid", "")),
        "image_url": f"/figures/{hit.id}/image",
    }


def _image_media_type(data: bytes) -> str:
    return next((media for magic, media in _MAGIC if data.startswith(magic)), "application/octet-stream")


def _image_intact(data: bytes, sha256: str | None) -> bool:
    """Whether ``data`` are the image bytes the index recorded: their SHA-256 when it was recorded, else (an index
    built before it was) at least bytes that start like an image."""
    if sha256:
        return hashlib.sha256(data).hexdigest() == sha256
    return _image_media_type(data) != "application/octet-stream"


def _batches(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def create_app(embedder: Embedder, index: SearchIndex | None = None, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application over a loaded model and (optionally) a figure index or a vector index."""
    config = config or ServeConfig()
    gate = InferenceGate()
    classify_slots = threading.BoundedSemaphore(config.max_concurrent_classify)
    facets = index.facets() if index is not None else FigureIndex(1).facets()
    if index is not None:
        index.warm()  # once, before the first request
    app = FastAPI(
        title="BiomedCLIP",
        version=__version__,
        description="Search PMC figures by text or image, classify images zero-shot, embed images and texts.",
    )
    app.state.gate = gate
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in error.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error (logged on the server)"}, status_code=500)

    def infer(work, deadline: float):
        """One model call as a turn at the gate, within the request's deadline."""
        try:
            return gate.run(work, deadline)
        except BudgetExceeded:
            raise HTTPException(
                503,
                f"the service is busy: this request could not finish within {config.request_budget_s:g} s; retry",
                headers={"Retry-After": "5"},
            ) from None

    def deadline() -> float:
        return gate.clock() + config.request_budget_s

    def read_upload(upload: UploadFile) -> bytes:
        content_type = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
        if content_type not in ACCEPTED_CONTENT_TYPES:
            raise HTTPException(
                415, f"{upload.filename or 'upload'}: type {content_type} is not an accepted image type"
            )
        data = upload.file.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise HTTPException(413, f"{upload.filename or 'upload'} is larger than {config.max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, f"{upload.filename or 'upload'} is empty")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                image_format = image.format
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as error:
            raise HTTPException(415, f"{upload.filename or 'upload'} is not a readable image") from error
        if image_format not in ACCEPTED_FORMATS:
            raise HTTPException(415, f"{upload.filename or 'upload'}: image format {image_format} is not accepted")
        if width * height > config.max_image_pixels:
            raise HTTPException(413, f"{upload.filename or 'upload'} has {width}x{height} pixels, over the limit")
        return data

    def embed_upload(data: bytes, until: float) -> np.ndarray:
        """Decode outside the gate (it may take a while), embed in one turn."""
        try:
            image = open_image(data)
        except ImageDecodeError as error:
            raise HTTPException(415, str(error)) from error
        return infer(lambda: embedder.embed_images([image]), until)

    def require_index() -> SearchIndex:
        if index is None or not len(index):
            raise HTTPException(503, "this server has no figure index loaded (start it with --index)")
        return index

    def check_k(k: int) -> int:
        if not 1 <= k <= config.max_k:
            raise HTTPException(400, f"k must be between 1 and {config.max_k}, got {k}")
        return k

    def figure_filter(
        year_min: int | None, year_max: int | None, journal: str, license: str, split: str
    ) -> FigureFilter:
        values = {"journal": journal.strip(), "license": license.strip(), "split": split.strip()}
        if long := next((name for name, value in values.items() if len(value) > config.max_filter_chars), None):
            raise HTTPException(400, f"the {long} filter is longer than {config.max_filter_chars} characters")
        for name, year in (("year_min", year_min), ("year_max", year_max)):
            if year is not None and not 0 <= year <= config.max_year:
                raise HTTPException(400, f"{name} must be a year between 0 and {config.max_year}, got {year}")
        if year_min is not None and year_max is not None and year_min > year_max:
            raise HTTPException(400, f"year_min {year_min} is after year_max {year_max}")
        return FigureFilter(year_min=year_min, year_max=year_max, **values)

    def search_response(vector: np.ndarray, k: int, query: str, where: FigureFilter) -> dict[str, Any]:
        try:
            hits = require_index().search(vector, k, where)[0]
        except FigureIndexError as error:
            raise HTTPException(400, str(error)) from error
        return {"query": query, "k": k, "results": [_hit_json(hit, require_index()) for hit in hits]}

    @app.get("/healthz", tags=["service"])
    async def healthz() -> JSONResponse:
        """Liveness, what is loaded, and the inference worker: 503 while one model call has run too long."""
        busy = gate.held_for()
        stuck = busy > config.stuck_after_s
        body = {
            "status": "stuck" if stuck else "ok",
            "version": __version__,
            "model": public_model_name(embedder.name),
            "dim": embedder.dim,
            "figures": len(index) if index is not None else 0,
            "index_kind": index.kind if index is not None else None,
            "inference": {"busy_s": round(busy, 3), "waiting": gate.waiting(), "stuck_after_s": config.stuck_after_s},
        }
        return JSONResponse(body, status_code=503 if stuck else 200)

    @app.get("/filters", tags=["search"])
    def filters() -> dict[str, Any]:
        """The values the search filters can take: the year range and the indexed journals, licenses, splits."""
        return facets

    @app.get("/search", tags=["search"])
    def search_text(
        q: Annotated[str, Query(description="What to look for, e.g. 'chest X-ray with pleural effusion'")],
        k: Annotated[int, Query(description="Number of figures")] = 10,
        year_min: Annotated[int | None, Query(description="Only figures published in or after this year")] = None,
        year_max: Annotated[int | None, Query(description="Only figures published in or before this year")] = None,
        journal: Annotated[str, Query(description="Only figures from this journal (exact name)")] = "",
        license: Annotated[str, Query(description="Only figures under this license (exact value)")] = "",
        split: Annotated[str, Query(description="Only figures of this corpus split (train, valid, test)")] = "",
    ) -> dict[str, Any]:
        """Figures whose images best match a text query."""
        q = q.strip()
        if not q:
            raise HTTPException(400, "the query q is empty")
        if len(q) > config.max_text_chars:
            raise HTTPException(400, f"the query is longer than {config.max_text_chars} characters")
        check_k(k)
        where = figure_filter(year_min, year_max, journal, license, split)
        require_index()
        return search_response(infer(lambda: embedder.embed_texts([q]), deadline()), k, q, where)

    @app.post("/search", tags=["search"])
    def search_image(
        image: Annotated[UploadFile, File(description="A figure to find similar figures to")],
        k: Annotated[int, Form()] = 10,
        year_min: Annotated[int | None, Form()] = None,
        year_max: Annotated[int | None, Form()] = None,
        journal: Annotated[str, Form()] = "",
        license: Annotated[str, Form()] = "",
        split: Annotated[str, Form()] = "",
    ) -> dict[str, Any]:
        """Figures whose images are most similar to an uploaded image (same filters as ``GET /search``)."""
        check_k(k)
        where = figure_filter(year_min, year_max, journal, license, split)
        require_index()
        return search_response(embed_upload(read_upload(image), deadline()), k, image.filename or "image", where)

    @app.post("/classify", tags=["classify"])
    def classify(
        image: Annotated[UploadFile, File(description="The image to classify")],
        labels: Annotated[str, Form(description="Comma-separated class names, e.g. 'normal lung,pneumonia'")],
        templates: Annotated[
            str, Form(description="Optional prompt templates, one per line, each with one {} for the label")
        ] = "",
    ) -> dict[str, Any]:
        """Zero-shot class probabilities of an image over the given labels (prompt-ensembled templates).

        Limits (``ServeConfig``): 50 labels of 200 characters, 20 templates of 300 characters, 256 prompts
        (labels x templates; without templates the paper's 3 are used).
        """
        names = parse_labels(labels, config)
        template_list = parse_templates(templates, len(names), DEFAULT_TEMPLATES, config)
        data = read_upload(image)
        if not classify_slots.acquire(blocking=False):
            raise HTTPException(
                429,
                f"{config.max_concurrent_classify} classifications are in progress; retry shortly",
                headers={"Retry-After": "2"},
            )
        try:
            until = deadline()
            image_vector = embed_upload(data, until)
            per_turn = max(1, config.prompts_per_turn // len(template_list))
            classifier = np.concatenate(
                [
                    infer(lambda chunk=chunk: embedder.classifier(chunk, template_list), until)
                    for chunk in _batches(names, per_turn)
                ]
            )
        finally:
            classify_slots.release()
        probabilities = zeroshot_probabilities(image_vector, classifier, embedder.logit_scale)[0]
        order = np.argsort(-probabilities)
        return {
            "labels": names,
            "probabilities": [float(p) for p in probabilities],
            "ranking": [{"label": names[i], "probability": float(probabilities[i])} for i in order],
        }

    @app.post("/embed", tags=["embed"])
    def embed(
        text: Annotated[list[str] | None, Form(description="Texts to embed (repeat the field)")] = None,
        image: Annotated[list[UploadFile] | None, File(description="Images to embed (repeat the field)")] = None,
    ) -> dict[str, Any]:
        """Unit-length embeddings of texts and/or images, in the order given."""
        texts, images = text or [], image or []
        if not texts and not images:
            raise HTTPException(400, "give at least one text or image")
        if len(texts) + len(images) > config.max_texts:
            raise HTTPException(400, f"at most {config.max_texts} items per request")
        if any(len(t) > config.max_text_chars for t in texts):
            raise HTTPException(400, f"texts are limited to {config.max_text_chars} characters")
        uploads = [read_upload(upload) for upload in images]
        until = deadline()
        text_vectors = [
            infer(lambda chunk=chunk: embedder.embed_texts(chunk), until)
            for chunk in _batches(texts, config.prompts_per_turn)
        ]
        image_vectors = [embed_upload(data, until) for data in uploads]
        return {
            "model": public_model_name(embedder.name),
            "dim": embedder.dim,
            "texts": np.concatenate(text_vectors).tolist() if texts else [],
            "images": np.concatenate(image_vectors).tolist() if images else [],
        }

    @app.get("/figures/{figure_id}", tags=["figures"])
    def figure(figure_id: int) -> dict[str, Any]:
        """The record of one indexed figure."""
        try:
            figures = require_index()
            return _hit_json(Hit(id=figure_id, score=1.0, record=figures.record(figure_id)), figures)
        except FigureIndexError as error:
            raise HTTPException(404, str(error)) from error

    @app.get("/figures/{figure_id}/image", tags=["figures"])
    def figure_image(figure_id: int) -> Response:
        """The figure's image bytes, read from its shard and checked against the SHA-256 the index recorded."""
        try:
            figures = require_index()
            record = figures.record(figure_id)
            data = read_image_bytes(figures.image_location(record), record["offset"], record["size"])
        except FigureIndexError as error:
            raise HTTPException(404, str(error)) from error
        except ShardError as error:
            log.warning("figure %d: %s", figure_id, error)  # the path goes to the log, not to the client
            raise HTTPException(404, f"figure {figure_id}'s image is unavailable: its shard cannot be read") from error
        if not _image_intact(data, record.get("image_sha256")):
            log.error("figure %d: shard %s changed since it was indexed; rebuild the index", figure_id, record["shard"])
            raise HTTPException(
                503, f"figure {figure_id}'s image is unavailable: its shard changed since the index was built"
            )
        return Response(data, media_type=_image_media_type(data), headers={"Cache-Control": "max-age=86400"})

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
