"""The service on a real socket: chunked uploads refused while they stream, incomplete headers timed out, header
size bounded (issue 15 items 10 and 11), all against ``biomedclip serve``'s uvicorn settings on 127.0.0.1."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from biomedclip.serve.app import create_app
from biomedclip.serve.limits import ServeConfig

from .conftest import dribble, read_response, running

CONFIG = ServeConfig(max_upload_bytes=100_000, header_timeout_s=0.5, keep_alive_s=1)


@pytest.fixture(scope="module")
def server(embedder, figure_index):
    with running(create_app(embedder, figure_index, CONFIG), CONFIG) as url:
        yield urlparse(url)


def connect(server) -> socket.socket:
    sock = socket.create_connection((server.hostname, server.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    return sock


def read_one_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The status line + headers and the body (``Content-Length`` bytes) of the next response."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"connection closed before a response: {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += sock.recv(65536) or pytest.fail("connection closed in the response body")
    return head, body


def deleted_files_open() -> int:
    """Open descriptors of this process (the server runs in a thread here) on unlinked files: spooled uploads."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)")
    return count


def test_a_chunked_upload_is_refused_as_soon_as_it_passes_the_limit(server):
    spooled_before = deleted_files_open()
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n\x89PNG"
    ).encode()
    sock = connect(server)
    sock.sendall(
        b"POST /classify HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
        + f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
    )
    planned, sent, piece = 64 * 2**20, 0, bytes(16 * 1024)  # a client that would send 64 MiB

    def send(data: bytes) -> None:
        sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

    send(head + piece)
    sent = len(head + piece)
    while sent < planned and not select.select([sock], [], [], 0.002)[0]:  # until the server answers
        send(piece)
        sent += len(piece)
    status, body = read_one_response(sock)
    assert status.startswith(b"HTTP/1.1 413"), status
    assert json.loads(body)["detail"] == f"request body too large (limit {CONFIG.max_body_bytes} bytes)"
    # the answer came long before the body ended: at most the limit plus what the socket buffers held
    assert sent < 16 * 2**20
    # and the server does not keep reading the rest of the body: it closes the connection
    sock.settimeout(5)
    try:
        for _ in range(64):
            send(piece)
        closed = sock.recv(1) == b""
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    sock.close()
    assert closed
    gc.collect()
    assert deleted_files_open() <= spooled_before  # the partial upload's spool file is gone


def test_a_declared_oversize_body_is_refused_before_it_is_sent(server):
    sock = connect(server)
    sock.sendall(
        b"POST /search HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        b"Content-Length: %d\r\n\r\n" % (CONFIG.max_body_bytes + 1)
    )
    response = read_response(sock)
    sock.close()
    assert response.startswith(b"HTTP/1.1 413") and b"request body too large" in response


@pytest.mark.parametrize(
    "partial", [b"", b"GET /healthz HTTP/1.1\r\n", b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: 1"]
)
def test_a_connection_with_incomplete_headers_is_closed(server, partial):
    sock = connect(server)
    sock.sendall(partial)
    response = read_response(sock)  # returns once the server closes; a server that never does fails at 30 s
    sock.close()
    assert response.startswith(b"HTTP/1.1 408")


def test_headers_dribbled_a_byte_at_a_time_are_cut_off(server):
    request = b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
    sock = connect(server)
    sent = dribble(sock, request)  # 0.05 s per byte: the whole request would take about 12 s
    response = read_response(sock)
    sock.close()
    assert sent < len(request) and response.startswith(b"HTTP/1.1 408")


def test_complete_requests_and_keep_alive_still_work(server):
    base = f"http://{server.hostname}:{server.port}"
    with httpx.Client(base_url=base, timeout=30) as http:
        for _ in range(3):  # one kept-alive connection, several requests
            assert http.get("/healthz").status_code == 200
        time.sleep(CONFIG.keep_alive_s + 0.5)  # idle past keep-alive: the server closes, the client reconnects
        assert http.get("/search", params={"q": "brain", "k": 2}).status_code == 200


def test_headers_growing_past_the_limit_are_refused(server):
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * (CONFIG.max_header_bytes + 1))
    response = read_response(sock)
    sock.close()
    assert response.startswith(b"HTTP/1.1 400")
