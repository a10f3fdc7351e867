"""Run the service with uvicorn, with the connection limits of :class:`~biomedclip.serve.limits.ServeConfig`.

uvicorn times out idle keep-alive connections but not a request whose headers never finish (a client that
sends half a request line and waits, or one byte every few seconds): each such connection would be held open
forever. :func:`header_timeout_protocol` adds that timeout to uvicorn's h11 protocol: a connection whose request
headers are not complete ``seconds`` after it opened (or after its first byte of the next request) is answered
``408`` and closed.
"""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from biomedclip.serve.limits import ServeConfig

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class, closing connections whose request headers take longer than ``seconds``."""

    class HeaderTimeoutProtocol(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # still reading a request's headers
                self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self.header_timer is None:
                self.header_timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _expired(self) -> None:
            self.header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(REQUEST_TIMEOUT)
                self.transport.close()

    return HeaderTimeoutProtocol


def server_config(app: FastAPI, host: str, port: int, config: ServeConfig, **options) -> uvicorn.Config:
    """A uvicorn configuration for ``app`` with the header timeout, keep-alive, header size and connection
    limits of ``config``; ``options`` go to :class:`uvicorn.Config` (e.g. ``log_level``)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=header_timeout_protocol(config.header_timeout_s),
        timeout_keep_alive=config.keep_alive_s,
        h11_max_incomplete_event_size=config.max_header_bytes,
        limit_concurrency=config.max_connections,
        **{"log_level": "warning", **options},
    )
