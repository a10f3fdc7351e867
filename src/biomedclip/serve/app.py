"""The HTTP service: figure search by text or image, zero-shot classification, embeddings and a web page.

    app = create_app(biomedclip.load("local-dir:ckpt"), FigureIndex.load("index"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes: ``GET /search?q=...&k=10`` and ``POST /search`` (an image upload), ``POST /classify`` (an image and
comma-separated labels), ``POST /embed`` (texts and/or images), ``GET /figures/{id}`` and
``GET /figures/{id}/image`` (served from the shards), ``GET /healthz``, ``GET /docs`` (OpenAPI) and the page
at ``/``. Every bad request gets a 4xx JSON ``{"detail": "..."}`` saying what is wrong. Inference is serialised
by the :class:`~biomedclip.api.Embedder`'s lock; uploads are limited in size, pixel count and type.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError

from biomedclip import __version__
from biomedclip.api import Embedder, ImageDecodeError
from biomedclip.serve.index import FigureIndex, FigureIndexError, Hit
from biomedclip.serve.shards import ShardError, read_image_bytes, shard_location

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


@dataclass
class ServeConfig:
    """Limits of the service."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_k: int = 100
    max_labels: int = 50
    max_texts: int = 64
    max_text_chars: int = 2_000


def pmc_url(pmcid: str) -> str:
    """The PMC article page of a PMCID (``PMC123`` or ``123``), or ``""`` when there is none (e.g. the
    ``class/file`` ids of figures from labelled image folders)."""
    digits = (pmcid or "").strip().upper().removeprefix("PMC")
    return PMC_ARTICLE_URL.format(pmcid=f"PMC{digits}") if digits.isdigit() else ""


def _hit_json(hit: Hit) -> dict[str, Any]:
    record = hit.record
    return {
        "id": hit.id,
        "score": round(hit.score, 6),
        **{name: record.get(name) for name in ("pmcid", "fig_id", "label", "caption", "license", "journal", "year")},
        "pmc_url": pmc_url(record.get("pmcid", "")),
        "image_url": f"/figures/{hit.id}/image",
    }


def _image_media_type(data: bytes) -> str:
    return next((media for magic, media in _MAGIC if data.startswith(magic)), "application/octet-stream")


def create_app(embedder: Embedder, index: FigureIndex | None = None, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI application over a loaded model and (optionally) a figure index."""
    config = config or ServeConfig()
    app = FastAPI(
        title="BiomedCLIP",
        version=__version__,
        description="Search PMC figures by text or image, classify images zero-shot, embed images and texts.",
    )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in error.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > config.max_upload_bytes + 64 * 1024:
            limit_mb = config.max_upload_bytes / 2**20
            return JSONResponse({"detail": f"request body too large (limit {limit_mb:g} MiB)"}, status_code=413)
        return await call_next(request)

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

    def embed_upload(data: bytes) -> np.ndarray:
        try:
            return embedder.embed_images([data])
        except ImageDecodeError as error:
            raise HTTPException(415, str(error)) from error

    def require_index() -> FigureIndex:
        if index is None or not len(index):
            raise HTTPException(503, "this server has no figure index loaded (start it with --index)")
        return index

    def check_k(k: int) -> int:
        if not 1 <= k <= config.max_k:
            raise HTTPException(400, f"k must be between 1 and {config.max_k}, got {k}")
        return k

    def search_response(vector: np.ndarray, k: int, query: str) -> dict[str, Any]:
        try:
            hits = require_index().search(vector, check_k(k))[0]
        except FigureIndexError as error:
            raise HTTPException(400, str(error)) from error
        return {"query": query, "k": k, "results": [_hit_json(hit) for hit in hits]}

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness and what is loaded."""
        return {
            "status": "ok",
            "version": __version__,
            "model": embedder.name,
            "dim": embedder.dim,
            "figures": len(index) if index is not None else 0,
            "index_kind": index.kind if index is not None else None,
        }

    @app.get("/search", tags=["search"])
    def search_text(
        q: Annotated[str, Query(description="What to look for, e.g. 'chest X-ray with pleural effusion'")],
        k: Annotated[int, Query(description="Number of figures")] = 10,
    ) -> dict[str, Any]:
        """Figures whose images best match a text query."""
        q = q.strip()
        if not q:
            raise HTTPException(400, "the query q is empty")
        if len(q) > config.max_text_chars:
            raise HTTPException(400, f"the query is longer than {config.max_text_chars} characters")
        check_k(k)
        return search_response(embedder.embed_texts([q]), k, q)

    @app.post("/search", tags=["search"])
    def search_image(
        image: Annotated[UploadFile, File(description="A figure to find similar figures to")],
        k: Annotated[int, Form()] = 10,
    ) -> dict[str, Any]:
        """Figures whose images are most similar to an uploaded image."""
        check_k(k)
        require_index()
        return search_response(embed_upload(read_upload(image)), k, image.filename or "image")

    @app.post("/classify", tags=["classify"])
    def classify(
        image: Annotated[UploadFile, File(description="The image to classify")],
        labels: Annotated[str, Form(description="Comma-separated class names, e.g. 'normal lung,pneumonia'")],
        templates: Annotated[str, Form(description="Optional prompt templates, one per line, each with {}")] = "",
    ) -> dict[str, Any]:
        """Zero-shot class probabilities of an image over the given labels (prompt-ensembled templates)."""
        names = [label.strip() for label in labels.split(",") if label.strip()]
        if not names:
            raise HTTPException(400, "give at least one label (comma-separated)")
        if len(names) > config.max_labels:
            raise HTTPException(400, f"at most {config.max_labels} labels, got {len(names)}")
        if len(set(names)) != len(names):
            raise HTTPException(400, "labels must be distinct")
        template_list = [line.strip() for line in templates.splitlines() if line.strip()] or None
        if template_list and any(t.count("{}") != 1 for t in template_list):
            raise HTTPException(400, "each template must contain exactly one {} for the label")
        data = read_upload(image)
        try:
            probabilities = embedder.classify([data], names, template_list)[0]
        except ImageDecodeError as error:
            raise HTTPException(415, str(error)) from error
        except ValueError as error:
            raise HTTPException(400, str(error)) from error
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
        image_vectors = np.concatenate([embed_upload(read_upload(upload)) for upload in images]) if images else None
        return {
            "model": embedder.name,
            "dim": embedder.dim,
            "texts": embedder.embed_texts(texts).tolist() if texts else [],
            "images": image_vectors.tolist() if image_vectors is not None else [],
        }

    @app.get("/figures/{figure_id}", tags=["figures"])
    def figure(figure_id: int) -> dict[str, Any]:
        """The record of one indexed figure."""
        try:
            return _hit_json(Hit(id=figure_id, score=1.0, record=require_index().record(figure_id)))
        except FigureIndexError as error:
            raise HTTPException(404, str(error)) from error

    @app.get("/figures/{figure_id}/image", tags=["figures"])
    def figure_image(figure_id: int) -> Response:
        """The figure's image bytes, read from its shard."""
        try:
            figures = require_index()
            record = figures.record(figure_id)
            data = read_image_bytes(shard_location(figures.folder, record["shard"]), record["offset"], record["size"])
        except FigureIndexError as error:
            raise HTTPException(404, str(error)) from error
        except ShardError as error:
            raise HTTPException(404, f"figure {figure_id}'s image is unavailable: {error}") from error
        return Response(data, media_type=_image_media_type(data), headers={"Cache-Control": "max-age=86400"})

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
