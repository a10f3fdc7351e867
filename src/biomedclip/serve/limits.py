"""The service's limits: every request field is bounded before any work is spent on it.

:class:`ServeConfig` holds the limits and their defaults; :func:`parse_labels` and :func:`parse_templates` check
the ``/classify`` fields (and the ``classify`` command's options); :class:`BodyLimit` counts request bytes while
they stream in, so a chunked upload is refused with 413 as soon as it passes the limit, not after it has been
received and spooled to disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from string import Formatter

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from biomedclip.errors import InputError


@dataclass
class ServeConfig:
    """Limits of the service (the defaults are what ``biomedclip serve`` uses)."""

    max_upload_bytes: int = 10 * 1024 * 1024  # one uploaded image; a request body may hold 64 KiB more
    max_image_pixels: int = 40_000_000  # width x height of an uploaded image
    max_k: int = 100  # figures per search
    max_labels: int = 50  # labels of one /classify
    max_label_chars: int = 200  # characters of one label
    max_templates: int = 20  # prompt templates of one /classify
    max_template_chars: int = 300  # characters of one template
    max_prompts: int = 256  # labels x templates of one /classify (the paper's 3 templates: 50 labels)
    max_texts: int = 64  # texts + images of one /embed
    max_text_chars: int = 2_000  # characters of a search query or an /embed text
    max_filter_chars: int = 500  # characters of a journal, license or split filter value
    prompts_per_turn: int = 8  # texts embedded per model call; small turns keep a search's wait short (serve.gate)
    request_budget_s: float = 30.0  # a request that cannot start its next model call within this gets 503
    max_concurrent_classify: int = 16  # /classify requests at once (below the 40 worker threads); more get 429
    stuck_after_s: float = 60.0  # /healthz is 503 while one model call has run longer than this
    header_timeout_s: float = 10.0  # a connection whose request headers are incomplete after this is closed
    body_timeout_s: float = 60.0  # a request body incomplete this long after its headers: 408, closed
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_header_bytes: int = 16 * 1024  # request line + headers
    max_connections: int = 256  # open connections; more get 503
    max_connections_per_client: int = 64  # open connections from one address; more get 503 and are closed
    max_year: int = 9999  # year filters outside 0..max_year are 400

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: one upload plus room for the form's other fields."""
        return self.max_upload_bytes + 64 * 1024


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_labels(field: str, config: ServeConfig) -> list[str]:
    """The distinct, non-empty, comma-separated labels of ``field``.

    Raises:
        InputError: no label, too many, one too long, or duplicates.
    """
    if len(field) > config.max_labels * (config.max_label_chars + 2):
        raise InputError(f"the labels field is too long (at most {config.max_labels} labels)")
    labels = [label.strip() for label in field.split(",") if label.strip()]
    if not labels:
        raise InputError("give at least one label (comma-separated)")
    if len(labels) > config.max_labels:
        raise InputError(f"at most {config.max_labels} labels, got {len(labels)}")
    if long := next((label for label in labels if len(label) > config.max_label_chars), None):
        raise InputError(f"label {_shown(long)} is longer than {config.max_label_chars} characters")
    if len(set(labels)) != len(labels):
        raise InputError("labels must be distinct")
    return labels


def check_template(template: str) -> str:
    """``template`` if it is a format string whose only field is one plain ``{}`` (literal braces doubled).

    Raises:
        InputError: no ``{}``, more than one field, a named/numbered field, a conversion or format spec
            (``{x}``, ``{0}``, ``{!r}``, ``{:>9}``), or unbalanced braces.
    """
    try:
        fields = [(name, spec, convert) for _, name, spec, convert in Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise InputError(f"template {_shown(template)}: {error} (write a literal brace as {{{{ or }}}})") from error
    if fields != [("", "", None)]:
        raise InputError(
            f"template {_shown(template)} must contain exactly one {{}} for the label and no other {{...}} field"
        )
    return template


def parse_templates(field: str | Sequence[str], labels: int, default: Sequence[str], config: ServeConfig) -> list[str]:
    """The checked templates of ``field`` (one per line, or a sequence; ``default`` when there are none), within
    the template and prompt limits.

    Raises:
        InputError: too many templates, one too long or malformed, or labels x templates over ``max_prompts``.
    """
    if isinstance(field, str):
        if len(field) > config.max_templates * (config.max_template_chars + 2):
            raise InputError(f"the templates field is too long (at most {config.max_templates} templates)")
        field = field.splitlines()
    templates = [line.strip() for line in field if line.strip()]
    if len(templates) > config.max_templates:
        raise InputError(f"at most {config.max_templates} templates, got {len(templates)}")
    if long := next((t for t in templates if len(t) > config.max_template_chars), None):
        raise InputError(f"template {_shown(long)} is longer than {config.max_template_chars} characters")
    templates = [check_template(t) for t in templates] or list(default)
    if labels * len(templates) > config.max_prompts:
        raise InputError(
            f"{labels} labels x {len(templates)} templates = {labels * len(templates)} prompts, "
            f"over the limit of {config.max_prompts}"
        )
    return templates


def byte_size(count: int) -> str:
    """``count`` bytes for people: ``10 MiB``, ``200000 bytes``."""
    return f"{count / 2**20:g} MiB" if count % 2**20 == 0 else f"{count} bytes"


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, decided while the body streams in.

    A declared ``Content-Length`` over the limit is refused before any byte is read; a chunked body is counted as
    it arrives and refused at the first chunk past the limit (the handler reading it gets the 413 exception).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # "Connection: close": the rest of the body is not read, so the connection cannot carry another request
        too_large = HTTPException(
            413, f"request body too large (limit {byte_size(self.max_bytes)})", {"Connection": "close"}
        )
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": too_large.detail}, 413, too_large.headers)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, counted, send)
