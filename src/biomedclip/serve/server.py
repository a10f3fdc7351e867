"""Run the service with uvicorn, with the connection limits of :class:`~biomedclip.serve.limits.ServeConfig`.

uvicorn times out idle keep-alive connections, but not a request whose headers or body never finish (a client
that sends half a request line, or a body one byte every few seconds, and waits): each such connection would be
held open forever, and a few hundred of them fill the connection limit for everyone. :func:`guarded_protocol`
adds to uvicorn's h11 protocol, per connection:

- a header timeout: request headers not complete ``header_timeout_s`` after the connection opened (or after the
  first byte of the next request) are answered ``408`` and the connection closed;
- a body timeout: a request body not complete ``body_timeout_s`` after its headers is answered ``408`` (unless a
  response already started) and the connection closed;
- a header size bound that holds for any write pattern (h11's own bound only applies while headers are
  incomplete, so 100 KiB of headers in one write passed): more than ``max_header_bytes`` before the blank line
  that ends them is ``400`` and closed;
- connection caps: more than ``max_connections_per_client`` open connections from one address, or more than
  ``max_connections`` in all, are answered ``503`` and closed at once, so one client cannot take the others' turn.
"""

from __future__ import annotations

import asyncio
import collections
import re

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from biomedclip.serve.limits import ServeConfig

_HEADERS_END = re.compile(rb"\n\r?\n")  # h11 ends headers at a blank line, CRLF or bare LF


def _raw_response(status: str, message: str) -> bytes:
    body = message.encode()
    head = f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"connection: close\r\n\r\n" + body


REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def guarded_protocol(config: ServeConfig) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with the timeouts, header bound and connection caps of ``config``."""
    headers_too_large = _raw_response("400 Bad Request", f"request headers over {config.max_header_bytes} bytes")
    per_client_full = _raw_response(
        "503 Service Unavailable", f"over {config.max_connections_per_client} connections from this address"
    )
    server_full = _raw_response("503 Service Unavailable", "the server has no free connection; retry")
    open_per_client: collections.Counter[str] = collections.Counter()  # shared by the connections of one server

    class GuardedProtocol(H11Protocol):
        timer: asyncio.TimerHandle | None = None
        timing: str = ""  # "headers" or "body": what the armed timer waits for
        peer: str | None = None  # the address counted in open_per_client, None when refused or unknown

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else ""
            if len(self.connections) > config.max_connections:
                self._refuse(server_full)
                return
            if open_per_client[host] >= config.max_connections_per_client:
                self._refuse(per_client_full)
                return
            self.peer = host
            open_per_client[host] += 1
            self._arm("headers", config.header_timeout_s)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.IDLE and self._headers_over_limit(data):
                self._refuse(headers_too_large)
                return
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.IDLE:  # still reading a request's headers
                self._arm("headers", config.header_timeout_s)
            elif state is h11.SEND_BODY:  # headers done, the body is on its way
                self._arm("body", config.body_timeout_s)
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self.peer is not None:
                open_per_client[self.peer] -= 1
                if not open_per_client[self.peer]:
                    del open_per_client[self.peer]
                self.peer = None
            super().connection_lost(exc)

        def _headers_over_limit(self, data: bytes) -> bool:
            """Whether the headers being received, with ``data``, pass the bound before they end."""
            buffered = self.conn.trailing_data[0] + data
            end = _HEADERS_END.search(buffered)
            return (end.end() if end else len(buffered)) > config.max_header_bytes

        def _refuse(self, response: bytes) -> None:
            self._disarm()
            self.transport.write(response)
            self.transport.close()

        def _arm(self, what: str, seconds: float) -> None:
            if self.timing != what:
                self._disarm()
            if self.timer is None:
                self.timing = what
                self.timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
            self.timer, self.timing = None, ""

        def _expired(self) -> None:
            what, self.timer, self.timing = self.timing, None, ""
            if self.transport.is_closing():
                return
            state = self.conn.their_state
            if what == "headers" and state is h11.IDLE:
                self.transport.write(REQUEST_TIMEOUT)
                self.transport.close()
            elif what == "body" and state is h11.SEND_BODY:
                if self.cycle is None or not self.cycle.response_started:
                    self.transport.write(REQUEST_TIMEOUT)
                self.transport.close()

    return GuardedProtocol


def server_config(app: FastAPI, host: str, port: int, config: ServeConfig, **options) -> uvicorn.Config:
    """A uvicorn configuration for ``app`` with the timeouts, keep-alive, header size and connection limits of
    ``config``; ``options`` go to :class:`uvicorn.Config` (e.g. ``log_level``)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(config),
        timeout_keep_alive=config.keep_alive_s,
        h11_max_incomplete_event_size=config.max_header_bytes,
        limit_concurrency=config.max_connections,
        **{"log_level": "warning", **options},
    )
