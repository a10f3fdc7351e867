"""The HTTP service: routes, figure images from shards, 4xx on bad input, limits, and concurrent requests."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from biomedclip.serve.app import ServeConfig, create_app, pmc_url, public_model_name


@pytest.fixture(scope="module")
def client(embedder, figure_index):
    app = create_app(embedder, figure_index, ServeConfig(max_upload_bytes=200_000, max_image_pixels=5_000_000))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def png_bytes(size=(64, 48), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_healthz_and_docs(client, figure_index, model_name):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "local-dir:" + model_name.rstrip("/").rsplit("/", 1)[-1]
    assert health["figures"] == len(figure_index) and health["index_kind"] == "flat"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/classify", "/embed", "/healthz"} <= set(paths)


def test_text_search_returns_ranked_figures_with_records(client, embedder, figure_index):
    body = client.get("/search", params={"q": "MRI of a brain lesion", "k": 4}).json()
    results = body["results"]
    assert len(results) == 4
    expected = figure_index.search(embedder.embed_texts(["MRI of a brain lesion"]), 4)[0]
    assert [r["id"] for r in results] == [hit.id for hit in expected]
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    top = results[0]
    record = figure_index.record(top["id"])
    assert top["caption"] == record["caption"] and top["pmcid"] == record["pmcid"]
    assert top["pmc_url"] == f"https://pmc.ncbi.nlm.nih.gov/articles/{record['pmcid']}/"
    assert top["image_url"] == f"/figures/{top['id']}/image"


def test_figure_images_are_served_from_the_shards(client, figures):
    response = client.get("/figures/3/image")
    assert response.status_code == 200
    assert response.content == figures[3]["image"]
    assert response.headers["content-type"] == "image/png"
    assert client.get("/figures/3").json()["fig_id"] == figures[3]["record"]["fig_id"]


def test_image_search_finds_the_figure_itself_first(client, figures):
    for number in (0, 8):
        response = client.post(
            "/search", files={"image": ("fig.png", figures[number]["image"], "image/png")}, data={"k": "3"}
        )
        assert response.status_code == 200, response.text
        top = response.json()["results"][0]
        assert top["id"] == number and top["score"] == pytest.approx(1.0, abs=1e-4)


def test_classify_returns_probabilities_in_label_order_and_ranking(client):
    response = client.post(
        "/classify", files={"image": ("x.png", png_bytes(), "image/png")}, data={"labels": "MRI, CT ,X-ray"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["labels"] == ["MRI", "CT", "X-ray"]
    assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert [r["probability"] for r in body["ranking"]] == sorted(body["probabilities"], reverse=True)


def test_embed_texts_and_images(client, embedder, figures):
    response = client.post(
        "/embed",
        data={"text": ["brain MRI", "blood smear"]},
        files=[("image", ("a.png", figures[0]["image"], "image/png"))],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    np.testing.assert_allclose(body["texts"], embedder.embed_texts(["brain MRI", "blood smear"]), atol=1e-5)
    np.testing.assert_allclose(body["images"], embedder.embed_images([figures[0]["image"]]), atol=1e-5)


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "message"),
    [
        ("get", "/search", {"params": {"q": "  "}}, 400, "empty"),
        ("get", "/search", {}, 422, "q: Field required"),
        ("get", "/search", {"params": {"q": "x", "k": 0}}, 400, "k must be between 1 and 100"),
        ("get", "/search", {"params": {"q": "x", "k": "ten"}}, 422, "k:"),
        ("get", "/search", {"params": {"q": "x" * 3000}}, 400, "longer than"),
        ("get", "/figures/999/image", {}, 404, "no figure 999"),
        ("get", "/figures/-1", {}, 404, "no figure -1"),
        ("post", "/classify", {"data": {"labels": "a,b"}}, 422, "image: Field required"),
        (
            "post",
            "/classify",
            {"files": {"image": ("x.png", png_bytes(), "image/png")}, "data": {"labels": " , "}},
            400,
            "at least one label",
        ),
        (
            "post",
            "/classify",
            {"files": {"image": ("x.png", png_bytes(), "image/png")}, "data": {"labels": "a,a"}},
            400,
            "distinct",
        ),
        (
            "post",
            "/classify",
            {
                "files": {"image": ("x.png", png_bytes(), "image/png")},
                "data": {"labels": "a,b", "templates": "no placeholder"},
            },
            400,
            "exactly one {}",
        ),
        (
            "post",
            "/classify",
            {"files": {"image": ("notes.txt", b"hello", "text/plain")}, "data": {"labels": "a,b"}},
            415,
            "text/plain is not an accepted image type",
        ),
        (
            "post",
            "/classify",
            {"files": {"image": ("fake.png", b"GIF89a garbage", "image/png")}, "data": {"labels": "a,b"}},
            415,
            "not a readable image",
        ),
        (
            "post",
            "/classify",
            {"files": {"image": ("empty.png", b"", "image/png")}, "data": {"labels": "a"}},
            400,
            "empty",
        ),
        (
            "post",
            "/classify",
            {"files": {"image": ("big.png", b"\x89PNG" + bytes(300_000), "image/png")}, "data": {"labels": "a"}},
            413,
            "too large",
        ),
        (
            "post",
            "/classify",
            {"files": {"image": ("huge.png", png_bytes((3000, 2000)), "image/png")}, "data": {"labels": "a"}},
            413,
            "3000x2000 pixels",
        ),
        (
            "post",
            "/search",
            {"files": {"image": ("x.png", png_bytes(), "image/png")}, "data": {"k": "500"}},
            400,
            "k must be between",
        ),
        ("post", "/embed", {}, 400, "at least one text or image"),
    ],
)
def test_bad_requests_get_a_clear_4xx(client, method, url, kwargs, status, message):
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_oversize_part_without_content_length_is_refused(embedder, figure_index):
    app = create_app(embedder, figure_index, ServeConfig(max_upload_bytes=1_000))
    with TestClient(app, raise_server_exceptions=False) as small:
        # the body stays under the middleware's slack, so the per-file check must catch it
        noise = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(noise, "PNG")
        assert 1_000 < len(noise.getvalue()) < 60_000
        response = small.post(
            "/classify", files={"image": ("x.png", noise.getvalue(), "image/png")}, data={"labels": "a"}
        )
    assert response.status_code == 413 and "larger than 1000 bytes" in response.json()["detail"]


def test_search_without_an_index_is_a_clear_error(embedder):
    with TestClient(create_app(embedder, None), raise_server_exceptions=False) as bare:
        response = bare.get("/search", params={"q": "x"})
        assert response.status_code == 503 and "no figure index" in response.json()["detail"]
        assert bare.get("/healthz").json()["figures"] == 0


def test_pmc_url():
    assert pmc_url("PMC123") == "https://pmc.ncbi.nlm.nih.gov/articles/PMC123/"
    assert pmc_url("123") == "https://pmc.ncbi.nlm.nih.gov/articles/PMC123/"
    assert pmc_url("") == ""
    assert pmc_url("pneumonia/chest_xray_00101") == ""  # an imagefolder figure has no article


def test_concurrent_requests_on_a_real_server_all_succeed_and_agree(live_server, figures):
    queries = ["brain MRI", "colon stent", "chest CT scan", "endoscopy image"]
    with httpx.Client(base_url=live_server, timeout=60) as http:
        expected = {
            q: [r["id"] for r in http.get("/search", params={"q": q, "k": 5}).json()["results"]] for q in queries
        }
        expected_probabilities = http.post(
            "/classify", files={"image": ("f.png", figures[1]["image"], "image/png")}, data={"labels": "a,b,c"}
        ).json()["probabilities"]

        def one(number: int) -> tuple[str, object]:
            if number % 3 == 2:
                response = http.post(
                    "/classify", files={"image": ("f.png", figures[1]["image"], "image/png")}, data={"labels": "a,b,c"}
                )
                return "classify", (response.status_code, response.json().get("probabilities"))
            query = queries[number % len(queries)]
            response = http.get("/search", params={"q": query, "k": 5})
            return query, (response.status_code, [r["id"] for r in response.json()["results"]])

        with ThreadPoolExecutor(max_workers=12) as pool:
            outcomes = list(pool.map(one, range(48)))
    for name, (status, value) in outcomes:
        assert status == 200
        if name == "classify":
            np.testing.assert_allclose(value, expected_probabilities, atol=1e-5)
        else:
            assert value == expected[name]


def test_search_filters_are_applied_by_the_server(client, figures):
    records = [f["record"] for f in figures]
    cases = [
        ({"year_min": 2018}, lambda r: r["year"] >= 2018),  # 2018 itself included
        ({"year_min": 2017, "year_max": 2017}, lambda r: r["year"] == 2017),
        ({"journal": "Gut Images", "split": "train"}, lambda r: r["journal"] == "Gut Images" and r["split"] == "train"),
        ({"license": "CC0"}, lambda r: r["license"] == "CC0"),
    ]
    for params, passes in cases:
        expected = {r["fig_id"] + r["pmcid"] for r in records if passes(r)}
        body = client.get("/search", params={"q": "a figure", "k": 10, **params}).json()
        assert {r["fig_id"] + r["pmcid"] for r in body["results"]} == expected, params
        image = client.post(
            "/search", files={"image": ("f.png", figures[0]["image"], "image/png")}, data={"k": "10", **params}
        ).json()
        assert {r["fig_id"] + r["pmcid"] for r in image["results"]} == expected, params
    assert client.get("/search", params={"q": "x", "journal": "Nature"}).json()["results"] == []
    response = client.get("/search", params={"q": "x", "year_min": 2020, "year_max": 2019})
    assert response.status_code == 400 and "year_min 2020 is after year_max 2019" in response.json()["detail"]
    response = client.get("/search", params={"q": "x", "journal": "j" * 501})
    assert response.status_code == 400 and "journal filter is longer than 500" in response.json()["detail"]


def test_filters_lists_the_indexed_values(client, figures):
    records = [f["record"] for f in figures]
    facets = client.get("/filters").json()
    years = [r["year"] for r in records]
    assert (facets["year_min"], facets["year_max"]) == (min(years), max(years))
    for name in ("journal", "license", "split"):
        assert sorted(facets[name]) == sorted({r[name] for r in records})


def test_public_model_name_hides_server_paths():
    assert public_model_name("local-dir:/srv/models/final/") == "local-dir:final"
    assert public_model_name("/srv/models/ckpt.safetensors") == "ckpt.safetensors"
    assert public_model_name("hf-hub:microsoft/BiomedCLIP") == "hf-hub:microsoft/BiomedCLIP"
    assert public_model_name("tiny") == "tiny"
