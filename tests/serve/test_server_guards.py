"""Slow bodies timed out like slow headers, the header bound for any write pattern, connection caps per client and
in total (other clients still answered), and out-of-range query values as 400: on a real socket, with
``biomedclip serve``'s uvicorn settings."""

from __future__ import annotations

import io
import socket
import time
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from biomedclip.serve.app import create_app
from biomedclip.serve.limits import ServeConfig

from .conftest import dribble, read_response, running

CONFIG = ServeConfig(
    max_upload_bytes=100_000,
    header_timeout_s=0.5,
    body_timeout_s=1.0,
    keep_alive_s=1,
    max_connections=10,
    max_connections_per_client=4,
)


@pytest.fixture(scope="module")
def server(embedder, figure_index):
    with running(create_app(embedder, figure_index, CONFIG), CONFIG) as url:
        yield urlparse(url)


def connect(server, source: str = "127.0.0.1") -> socket.socket:
    """A connection from ``source`` (any 127.x.y.z address is this machine's loopback)."""
    return socket.create_connection((server.hostname, server.port), timeout=30, source_address=(source, 0))


def request(server, raw: bytes, source: str = "127.0.0.1") -> bytes:
    """Send ``raw`` in one write and return the first response's bytes (the server closes or answers)."""
    with connect(server, source) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        return data


def upload_head(length: int) -> bytes:
    return (
        b"POST /search HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


def test_a_body_that_stops_coming_is_answered_408_and_closed(server):
    sock = connect(server)
    sock.sendall(upload_head(5000) + b"--b\r\nContent-Disposition: form-data; name")
    started = time.monotonic()
    response = read_response(sock)
    sock.close()
    assert response.startswith(b"HTTP/1.1 408"), response[:80]
    assert CONFIG.body_timeout_s - 0.2 < time.monotonic() - started < CONFIG.body_timeout_s + 5


def test_a_body_dribbled_a_byte_at_a_time_is_cut_off(server):
    body = b'--b\r\nContent-Disposition: form-data; name="k"\r\n\r\n5\r\n--b--\r\n' + b" " * 200
    sock = connect(server)
    sock.sendall(upload_head(len(body)))
    sent = dribble(sock, body)  # 0.05 s per byte: the whole body would take about 13 s
    response = read_response(sock)
    sock.close()
    assert sent < len(body) and response.startswith(b"HTTP/1.1 408"), response[:80]


def test_a_body_sent_in_time_is_served(server, figures):
    body = b'--b\r\nContent-Disposition: form-data; name="k"\r\n\r\n2\r\n--b\r\n'
    body += b'Content-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
    small = io.BytesIO()
    Image.open(io.BytesIO(figures[0]["image"])).convert("RGB").resize((64, 64)).save(small, format="PNG")
    body += small.getvalue() + b"\r\n--b--\r\n"
    sock = connect(server)
    sock.sendall(upload_head(len(body)) + body[:100])
    time.sleep(CONFIG.body_timeout_s / 2)
    sock.sendall(body[100:])
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    sock.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


def _get_with_headers_of(total: int) -> bytes:
    """A GET whose request line and headers, up to and including the blank line, are exactly ``total`` bytes."""
    start = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Pad: "
    return start + b"a" * (total - len(start) - 4) + b"\r\n\r\n"


@pytest.mark.parametrize("size", [16 * 1024 + 1, 17 * 1024, 64 * 1024, 100 * 1024])
def test_headers_over_the_bound_in_one_write_are_refused(server, size):
    raw = _get_with_headers_of(size)
    assert len(raw) == size
    assert request(server, raw).startswith(b"HTTP/1.1 400")


def test_headers_exactly_at_the_bound_are_accepted(server):
    assert request(server, _get_with_headers_of(CONFIG.max_header_bytes)).startswith(b"HTTP/1.1 200")


def test_headers_over_the_bound_with_a_bare_lf_and_a_body_are_refused(server):
    raw = b"GET /healthz HTTP/1.1\nHost: test\nX-Pad: " + b"a" * (20 * 1024) + b"\n\n"
    assert request(server, raw).startswith(b"HTTP/1.1 400")


def _hold(server, source: str, count: int) -> list[socket.socket]:
    """``count`` connections from ``source`` that each sent half a request (held until the header timeout)."""
    held = []
    for _ in range(count):
        sock = connect(server, source)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        held.append(sock)
    time.sleep(0.1)
    return held


def test_one_client_over_its_connection_cap_is_refused_and_others_are_served(server):
    held = _hold(server, "127.0.0.2", CONFIG.max_connections_per_client)
    try:
        refused = request(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", "127.0.0.2")
        assert refused.startswith(b"HTTP/1.1 503"), refused[:80]
        other = request(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", "127.0.0.3")
        assert other.startswith(b"HTTP/1.1 200"), other[:80]
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)  # closed connections count no more
    assert request(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", "127.0.0.2").startswith(b"HTTP/1.1 200")


def test_connections_over_the_total_cap_are_refused(server):
    held = []
    try:
        for number in range(CONFIG.max_connections // CONFIG.max_connections_per_client + 1):
            room = CONFIG.max_connections - len(held)
            held += _hold(server, f"127.0.1.{number + 1}", min(CONFIG.max_connections_per_client, room))
        assert len(held) == CONFIG.max_connections
        refused = request(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", "127.0.2.1")
        assert refused.startswith(b"HTTP/1.1 503"), refused[:80]
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"year_min": "99999999999999999999"}, 400),
        ({"year_max": "-99999999999999999999"}, 400),
        ({"year_min": "10000"}, 400),
        ({"year_max": "-1"}, 400),
        ({"year_min": "0", "year_max": "9999"}, 200),
        ({"k": "99999999999999999999"}, 400),
    ],
)
def test_out_of_range_query_values_are_400(embedder, figure_index, params, status):
    with TestClient(create_app(embedder, figure_index, CONFIG), raise_server_exceptions=False) as client:
        response = client.get("/search", params={"q": "brain", **params})
        assert response.status_code == status, response.text
        if status == 400:
            assert "between" in response.json()["detail"]
