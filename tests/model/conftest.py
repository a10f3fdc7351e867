"""Fixtures for the model tests: a tiny model, and a Hugging Face hub cache filled by the test (no network)."""

from __future__ import annotations

import hashlib
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

BIOMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


@pytest.fixture(scope="session")
def model_cli():
    """Run ``biomedclip model ARGS...`` in-process (the subprocess start-up would dominate these tests), through the
    top-level group so that library errors become their exit codes."""
    from click.testing import CliRunner

    from biomedclip.cli import main

    def run(*args, expect_ok: bool = True):
        result = CliRunner().invoke(main, ["model", *(str(a) for a in args)], catch_exceptions=False)
        if expect_ok:
            assert result.exit_code == 0, result.output
        return result

    return run


@pytest.fixture(scope="session")
def tiny():
    """``(model, train_transform, eval_transform, tokenizer)`` of the built-in ``tiny`` config."""
    from biomedclip.model import create_model_and_transforms, get_tokenizer

    model, train_tf, eval_tf = create_model_and_transforms("tiny")
    return model, train_tf, eval_tf, get_tokenizer("tiny")


class HubCache:
    """A local hub cache in the layout huggingface_hub reads offline: ``models--ORG--NAME/{refs,snapshots}``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, repo_id: str, files: dict[str, Path | str | bytes], commit: str = "0" * 40) -> Path:
        repo = self.root / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copy(content, snapshot / name)
            else:
                (snapshot / name).write_bytes(content.encode() if isinstance(content, str) else content)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> HubCache:
    """An empty offline hub cache that huggingface_hub and transformers use for this test only."""
    from huggingface_hub import constants

    root = tmp_path / "hub-cache"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return HubCache(root)


@pytest.fixture
def biomedbert_in_cache(hub_cache) -> HubCache:
    """The hub cache with PubMedBERT's ``config.json`` (what open_clip needs to build the text tower)."""
    import json

    from biomedclip.model import get_model_config

    config = dict(get_model_config("biomedclip-base").text.hf_model_config, architectures=["BertForMaskedLM"])
    hub_cache.add(BIOMEDBERT, {"config.json": json.dumps(config)})
    return hub_cache


class _HubHandler(BaseHTTPRequestHandler):
    """Answers ``/{org}/{name}/resolve/{revision}/{file}`` like the hub: commit + ETag headers, or 404 EntryNotFound."""

    repos: ClassVar[dict[str, Path]] = {}
    requests: ClassVar[list[str]] = []

    def _lookup(self) -> Path | None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) != 5 or parts[2] != "resolve":
            return None
        folder = self.repos.get(f"{parts[0]}/{parts[1]}")
        path = folder / parts[4] if folder else None
        return path if path and path.is_file() else None

    def _answer(self, with_body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        path = self._lookup()
        if path is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", "1" * 40)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A hub served over HTTP on 127.0.0.1 (random port), with an empty cache; yields ``{repo_id: folder}``."""
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_HubHandler, "repos", {})
    monkeypatch.setattr(_HubHandler, "requests", [])
    yield _HubHandler
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def cut_network(tmp_path, monkeypatch):
    """A callable that leaves the process with an empty hub cache (unless ``keep_cache``), offline mode off, and
    the hub endpoint on a closed loopback port (connections refused: what a cluster without internet sees). It
    returns the list of ``hf_hub_download`` calls made afterwards, so a test can check that none went online."""
    import socket

    import huggingface_hub
    from huggingface_hub import constants

    def cut(keep_cache: bool = False) -> list[dict]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
        endpoint = f"http://127.0.0.1:{port}"
        if not keep_cache:
            cache = tmp_path / "empty-hub-cache"
            cache.mkdir(exist_ok=True)
            monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        calls: list[dict] = []
        real = huggingface_hub.hf_hub_download

        def recording(*args, **kwargs):
            calls.append({"args": args, **kwargs})
            return real(*args, **kwargs)

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", recording)
        return calls

    return cut
