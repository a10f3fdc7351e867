"""Fixtures for the serving tests: shards of real PMC figures, the tiny model, a built index, a live server."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import uvicorn
import webdataset as wds
from fastapi import FastAPI

from biomedclip.api import Embedder, load
from biomedclip.serve.app import ServeConfig, create_app
from biomedclip.serve.build import build_index
from biomedclip.serve.index import FigureIndex
from biomedclip.serve.server import server_config


def medicat_figures(shared: Path) -> list[dict]:
    """The real PMC figures + captions of the MedICaT sample, as figure records with their image bytes."""
    root = shared / "image_text" / "medicat_sample"
    figures = []
    for number, line in enumerate((root / "sample.jsonl").read_text().splitlines()):
        row = json.loads(line)
        image = (root / "figures" / f"{row['pdf_hash']}_{row['fig_uri']}").read_bytes()
        pmcid = f"PMC{900000 + number}"
        record = {
            "pmcid": pmcid,
            "version": 1,
            "fig_id": row["fig_key"],
            "label": row["fig_key"].replace("Figure", "Figure "),
            "caption": row["s2_caption"],
            "graphic": row["fig_uri"],
            "image_path": row["fig_uri"],
            # varied metadata, so the search filters have something to select
            "license": "CC0" if number % 3 == 2 else "CC BY",
            "journal": ("Radiology Cases", "Gut Images")[number % 2],
            "year": 2016 + number % 5,
            "split": "test" if number % 4 == 3 else "train",
        }
        figures.append({"key": f"{pmcid}_{row['fig_key']}", "image": image, "record": record})
    return figures


def write_shard(path: Path, figures: list[dict], *, corrupt_keys: tuple[str, ...] = ()) -> Path:
    """A WebDataset shard in the corpus layout (``.jpg``/``.png`` + ``.txt`` + ``.json`` per figure)."""
    with wds.TarWriter(str(path)) as writer:
        for figure in figures:
            ext = "png" if figure["image"].startswith(b"\x89PNG") else "jpg"
            writer.write(
                {
                    "__key__": figure["key"],
                    ext: figure["image"],
                    "txt": figure["record"]["caption"],
                    "json": figure["record"],
                }
            )
        for key in corrupt_keys:
            writer.write({"__key__": key, "jpg": b"\xff\xd8 not really a jpeg", "txt": "broken", "json": {}})
    return path


@pytest.fixture(scope="session")
def figures(shared_fixtures: Path) -> list[dict]:
    return medicat_figures(shared_fixtures)


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory, figures: list[dict]) -> list[Path]:
    """Two shards: six figures, then four figures plus one undecodable image."""
    folder = tmp_path_factory.mktemp("shards")
    return [
        write_shard(folder / "train-000000.tar", figures[:6]),
        write_shard(folder / "train-000001.tar", figures[6:], corrupt_keys=("PMC1_broken",)),
    ]


@pytest.fixture(scope="session")
def model_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model with random weights, saved once as a checkpoint folder: ``local-dir:PATH``."""
    import torch

    from biomedclip.model import create_model_and_transforms, get_tokenizer, save_pretrained

    torch.manual_seed(0)
    model, _, _ = create_model_and_transforms("tiny")
    folder = save_pretrained(model, get_tokenizer("tiny"), tmp_path_factory.mktemp("model") / "tiny")
    return f"local-dir:{folder}"


@pytest.fixture(scope="session")
def embedder(model_name: str) -> Embedder:
    return load(model_name, device="cpu")


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, shards: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("index") / "figures"
    build_index(embedder, [str(s) for s in shards], out)
    return out


@pytest.fixture(scope="session")
def figure_index(index_dir: Path) -> FigureIndex:
    return FigureIndex.load(index_dir)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 30 s pass, which fails the test)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def dribble(sock: socket.socket, data: bytes, pause: float = 0.05) -> int:
    """Send ``data`` a byte at a time, ``pause`` seconds apart, until the server answers or drops the connection;
    the bytes sent."""
    sent = 0
    try:
        for byte in data:
            sock.sendall(bytes([byte]))
            sent += 1
            if select.select([sock], [], [], pause)[0]:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


@contextmanager
def running(app: FastAPI, config: ServeConfig) -> Iterator[str]:
    """Serve ``app`` with ``biomedclip serve``'s uvicorn settings on a free loopback port, in a thread."""
    server = uvicorn.Server(server_config(app, "127.0.0.1", free_port(), config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(embedder: Embedder, figure_index: FigureIndex) -> Iterator[str]:
    """A real uvicorn server over the test index on a free loopback port; yields its base URL."""
    config = ServeConfig(max_upload_bytes=2 * 2**20)
    with running(create_app(embedder, figure_index, config), config) as url:
        yield url


@pytest.fixture(scope="session")
def clustered_vectors() -> tuple[np.ndarray, np.ndarray]:
    """20k corpus vectors and 200 noisier queries (64-d, unit length) around the same 200 random centres."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((200, 64)).astype(np.float32)

    def around(n: int, spread: float) -> np.ndarray:
        points = centres[rng.integers(0, len(centres), n)]
        points = points + rng.standard_normal((n, 64)).astype(np.float32) * spread / 8
        return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)

    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return around(20_000, 1.0), around(200, 1.5)
