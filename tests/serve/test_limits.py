"""Hostile requests: /classify fields bounded before any work, bad templates a 4xx, fair turns at the inference
gate, per-request budgets, /healthz seeing a stuck worker, no server paths in responses (issue 15 items 4, 11)."""

from __future__ import annotations

import io
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from biomedclip.serve.app import create_app
from biomedclip.serve.build import build_index
from biomedclip.serve.index import FigureIndex
from biomedclip.serve.limits import ServeConfig

from .conftest import running


def png_bytes(size=(64, 48), color=(30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


class Spy:
    """The embedder, recording each model call; a call to a method in ``blocking`` waits for ``proceed``."""

    def __init__(self, embedder, blocking: tuple[str, ...] = ()) -> None:
        self.embedder, self.blocking = embedder, blocking
        self.calls: list[tuple[str, object]] = []
        self.proceed = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)
        self.name, self.dim = embedder.name, embedder.dim

    @property
    def logit_scale(self) -> float:
        return self.embedder.logit_scale

    def _call(self, method: str, argument, *rest, shown=None):
        self.calls.append((method, argument if shown is None else shown))
        if method in self.blocking:
            self.entered.release()
            self.proceed.acquire()
        return getattr(self.embedder, method)(argument, *rest)

    def embed_texts(self, texts):
        return self._call("embed_texts", list(texts))

    def embed_images(self, images):
        return self._call("embed_images", images, shown=len(images))

    def classifier(self, labels, templates=None):
        return self._call("classifier", list(labels), templates)


def classify(client, labels: str, templates: str = "", image: bytes | None = None):
    data = {"labels": labels, **({"templates": templates} if templates else {})}
    return client.post("/classify", files={"image": ("x.png", image or png_bytes(), "image/png")}, data=data)


SMALL = ServeConfig(max_labels=4, max_label_chars=10, max_templates=3, max_template_chars=20, max_prompts=6)


@pytest.fixture(scope="module")
def spy(embedder):
    return Spy(embedder)


@pytest.fixture(scope="module")
def small(spy, figure_index):
    with TestClient(create_app(spy, figure_index, SMALL), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("labels", "templates", "message"),
    [
        ("a,b,c,d,e", "", "at most 4 labels, got 5"),
        ("a," + "x" * 11, "", "longer than 10 characters"),
        ("a,b", "{} {x}", "exactly one {}"),
        ("a,b", "{}{!r}", "exactly one {}"),
        ("a,b", "photo of a {0}", "exactly one {}"),
        ("a,b", "{:>9}", "exactly one {}"),
        ("a,b", "{} and {}", "exactly one {}"),
        ("a,b", "no placeholder", "exactly one {}"),
        ("a,b", "{{}}", "exactly one {}"),
        ("a,b", "a {", "Single '{'"),
        ("a,b", "} a {}", "Single '}'"),
        ("a,b", "{}\n{}.\n{}!\n{}?", "at most 3 templates, got 4"),
        ("a,b", "a photo of the {} here", "longer than 20 characters"),
        ("a,b,c", "{}\n{}.\n{}!", "3 labels x 3 templates = 9 prompts, over the limit of 6"),
        ("a,b,c,d", "", "4 labels x 3 templates = 12 prompts"),  # the paper's 3 templates count
        ("a," * 30_000, "", "labels field is too long"),
        ("a,b", "{}\n" * 50_000, "templates field is too long"),
    ],
)
def test_classify_fields_over_a_bound_are_a_400_before_any_model_call(small, spy, labels, templates, message):
    spy.calls.clear()
    response = classify(small, labels, templates)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert spy.calls == []


@pytest.mark.parametrize(
    ("labels", "templates"),
    [
        ("a,b", "{}\n{}.\n{}!"),  # 6 prompts: exactly max_prompts, 3 templates: exactly max_templates
        ("abcdefghij,b,c,d", "{}"),  # 4 labels (the limit), one of exactly 10 characters
        ("a,b", "x {{literal}} {} yyy"),  # a template of exactly 20 characters with escaped braces
        ("a,b", ""),  # the default templates
    ],
)
def test_classify_fields_exactly_at_a_bound_are_accepted(small, embedder, labels, templates):
    response = classify(small, labels, templates)
    assert response.status_code == 200, response.text
    names = [label.strip() for label in labels.split(",")]
    expected = embedder.classify([png_bytes()], names, templates.splitlines() or None)[0]
    np.testing.assert_allclose(response.json()["probabilities"], expected, atol=1e-5)


def test_chunked_classification_equals_the_one_shot_classifier(embedder, figure_index, figures):
    """Many labels are embedded over several turns; the probabilities are those of the whole classifier."""
    config = ServeConfig(prompts_per_turn=4)
    labels = [f"class {i}" for i in range(11)]
    templates = ["a photo of {}", "{} shown here"]
    spy = Spy(embedder)
    with TestClient(create_app(spy, figure_index, config)) as client:
        response = classify(client, ",".join(labels), "\n".join(templates), figures[2]["image"])
    assert response.status_code == 200, response.text
    assert [len(arg) for name, arg in spy.calls if name == "classifier"] == [2, 2, 2, 2, 2, 1]
    expected = embedder.classify([figures[2]["image"]], labels, templates)[0]
    np.testing.assert_allclose(response.json()["probabilities"], expected, atol=1e-5)


def test_a_search_is_served_between_the_turns_of_a_large_classification(embedder, figure_index):
    config = ServeConfig(prompts_per_turn=3)
    spy = Spy(embedder, blocking=("classifier",))
    app = create_app(spy, figure_index, config)
    gate = app.state.gate
    labels = ",".join(f"label {i}" for i in range(12))  # 12 labels x 1 template, 3 per turn: 4 turns
    with running(app, config) as url, httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(2) as pool:
        big = pool.submit(classify, http, labels, "{}")
        assert spy.entered.acquire(timeout=30)  # the classification holds the gate in its first turn
        search = pool.submit(http.get, "/search", params={"q": "brain MRI", "k": 3})
        while gate.waiting() != 1:  # the search queues behind that turn
            time.sleep(0.01)
        spy.proceed.release()  # first turn ends: the search goes next, then the classification's other turns
        assert search.result(timeout=30).status_code == 200
        assert not big.done()
        for _ in range(3):
            assert spy.entered.acquire(timeout=30)
            spy.proceed.release()
        assert big.result(timeout=30).status_code == 200
    order = [name for name, _ in spy.calls]
    assert order == ["embed_images", "classifier", "embed_texts", "classifier", "classifier", "classifier"]


def test_a_request_that_cannot_get_a_turn_within_its_budget_gets_503(embedder, figure_index):
    config = ServeConfig(request_budget_s=0.3)
    app = create_app(embedder, figure_index, config)
    gate, release = app.state.gate, threading.Event()
    holder = threading.Thread(target=gate.run, args=(release.wait, float("inf")))
    holder.start()
    try:
        with TestClient(app) as client:
            response = client.get("/search", params={"q": "x"})
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert "could not finish within 0.3 s" in response.json()["detail"]
        assert gate.waiting() == 0  # the request left the queue
    finally:
        release.set()
        holder.join()


def test_healthz_reports_a_stuck_worker_past_the_threshold(embedder, figure_index):
    now = [100.0]
    app = create_app(embedder, figure_index, ServeConfig(stuck_after_s=60))
    gate = app.state.gate
    gate.clock = lambda: now[0]
    entered, release = threading.Event(), threading.Event()
    with TestClient(app) as client:
        holder = threading.Thread(target=gate.run, args=(lambda: entered.set() or release.wait(), float("inf")))
        holder.start()
        try:
            assert entered.wait(30)
            now[0] += 60  # exactly the threshold: still healthy
            health = client.get("/healthz")
            assert health.status_code == 200 and health.json()["inference"]["busy_s"] == 60
            now[0] += 0.5
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "stuck"
        finally:
            release.set()
            holder.join()
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["inference"]["busy_s"] == 0


def test_too_many_classifications_at_once_get_429(embedder, figure_index):
    config = ServeConfig(max_concurrent_classify=1)
    spy = Spy(embedder, blocking=("embed_images",))
    app = create_app(spy, figure_index, config)
    with running(app, config) as url, httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(1) as pool:
        first = pool.submit(classify, http, "a,b")
        assert spy.entered.acquire(timeout=30)
        second = classify(http, "a,b")
        assert second.status_code == 429 and "1 classifications are in progress" in second.json()["detail"]
        spy.proceed.release()
        assert first.result(timeout=30).status_code == 200
        spy.proceed.release()
        assert classify(http, "a,b").status_code == 200


def test_responses_never_show_server_paths(tmp_path, embedder, shards):
    copies = [shutil.copy(shard, tmp_path / shard.name) for shard in shards]
    build_index(embedder, copies, tmp_path / "index")
    index = FigureIndex.load(tmp_path / "index")
    (tmp_path / shards[1].name).unlink()  # figures 6.. now point at a missing shard

    class Broken(Spy):
        def embed_texts(self, texts):
            raise RuntimeError(f"disk error reading {tmp_path}/weights.bin")

    with TestClient(create_app(Broken(embedder), index), raise_server_exceptions=False) as client:
        responses = [
            client.get("/healthz"),
            client.get("/figures/7/image"),
            client.get("/figures/999/image"),
            client.get("/search", params={"q": "x"}),
            client.post("/embed", data={"text": ["x"]}),
        ]
    assert [r.status_code for r in responses] == [200, 404, 404, 500, 500]
    assert "unavailable: its shard cannot be read" in responses[1].json()["detail"]
    assert responses[3].json()["detail"] == "internal server error (logged on the server)"
    for response in responses:
        assert str(tmp_path) not in response.text and "/tmp" not in response.text, response.text
    assert responses[0].json()["model"].startswith("local-dir:") and "/" not in responses[0].json()["model"]
