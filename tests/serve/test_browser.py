"""The web page end to end in headless Chromium at a phone width (390 px) and a desktop width (1280 px).

Text search with the keyboard, server-side filters, the full view of a figure (caption, article link, license)
opened and closed from the keyboard, image search by upload, drop and "find similar", zero-shot classification.
Each screenshot is taken after checking that the key elements are visible inside the viewport and that nothing
overflows horizontally. Set ``BIOMEDCLIP_SCREENSHOTS=DIR`` to keep the screenshots.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from biomedclip.serve.app import create_app
from biomedclip.serve.build import build_index
from biomedclip.serve.index import FigureIndex
from biomedclip.serve.limits import ServeConfig

from .conftest import running, write_shard

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTHS = {"phone": (390, 844), "desktop": (1280, 900)}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run `make browser` (apt-get install chromium)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(params=sorted(WIDTHS))
def page(request, browser):
    width, height = WIDTHS[request.param]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()
    assert page.errors == []


def assert_laid_out(page: Page, *selectors: str) -> None:
    """No horizontal overflow, and each selector's element visible and horizontally inside the viewport."""
    width = page.viewport_size["width"]
    scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= page.evaluate("innerWidth"), f"page is {scroll_width} px wide at {width} px"
    for selector in selectors:
        element = page.locator(selector).first
        expect(element).to_be_visible()
        box = element.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, f"{selector} sticks out: {box}"


def screenshot(page: Page, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    path = tmp_path / f"{name}-{page.viewport_size['width']}.png"
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000
    if keep := os.environ.get("BIOMEDCLIP_SCREENSHOTS"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, keep)
    return path


def focused(page: Page) -> str:
    return page.evaluate("document.activeElement.id || document.activeElement.className")


def all_images_loaded(page: Page) -> None:
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)"
    )


def test_text_search_filters_and_full_view_by_keyboard(page, live_server, figures, tmp_path):
    page.goto(live_server + "/")
    expect(page.locator("#status")).to_contain_text("10 figures indexed")
    assert_laid_out(page, "#query", "#image-button", "#search-button", "#filters summary", "#labels")
    screenshot(page, tmp_path, "start")

    # Enter searches; tab order goes query -> image -> search -> filters -> ... -> the figures
    page.locator("#query").focus()
    page.keyboard.type("nuclear magnetic resonance scan of the brain")
    page.keyboard.press("Enter")
    cards = page.locator("#results .figure")
    expect(cards).to_have_count(10)
    expect(page.locator("#search-message")).to_contain_text("10 figures for")
    all_images_loaded(page)
    captions = [c.strip() for c in page.locator("#results .caption").all_inner_texts()]
    assert set(captions) == {f["record"]["caption"].strip() for f in figures}
    order = []
    for _ in range(30):
        page.keyboard.press("Tab")
        order.append(focused(page))
        if order[-1] == "thumb":
            break
    assert order[:3] == ["image-button", "search-button", ""] and order[-1] == "thumb", order  # "" = <summary>
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focus is visible
    assert_laid_out(page, "#results .figure", "#search-button")
    screenshot(page, tmp_path, "results")

    # the full view: opened with Enter, the whole caption, the article link, the license; Esc closes it
    first_caption = page.locator("#results .caption").first.inner_text().strip()
    page.keyboard.press("Enter")
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    record = next(f["record"] for f in figures if f["record"]["caption"].strip() == first_caption)
    expect(page.locator("#viewer-caption")).to_have_text(record["caption"].strip())
    expect(page.locator("#viewer-article")).to_have_attribute(
        "href", f"https://pmc.ncbi.nlm.nih.gov/articles/{record['pmcid']}/"
    )
    facts = page.locator("#viewer-facts").inner_text()
    assert record["license"] in facts and record["journal"] in facts and str(record["year"]) in facts
    page.wait_for_function("document.getElementById('viewer-image').naturalWidth > 0")
    natural = page.evaluate("document.getElementById('viewer-image').naturalWidth")
    assert natural > 0
    assert_laid_out(page, "#viewer-close", "#viewer-image", "#viewer-title")
    screenshot(page, tmp_path, "viewer", full_page=False)  # the dialog covers the viewport
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    assert focused(page) == "thumb"  # focus goes back to the figure that was opened

    # filters are applied by the server: only Gut Images figures of 2018 or later
    if not page.locator("#filters").evaluate("d => d.open"):
        page.locator("#filters summary").click()
    page.select_option("#journal", "Gut Images")
    expected = [f["record"] for f in figures if f["record"]["journal"] == "Gut Images"]
    expect(cards).to_have_count(len(expected))
    page.fill("#year-min", "2018")
    page.locator("#year-min").press("Enter")
    expected = [r for r in expected if r["year"] >= 2018]
    expect(cards).to_have_count(len(expected))
    expect(page.locator("#search-message")).to_contain_text("filters: from 2018 · Gut Images")
    sources = page.locator("#results .source").all_inner_texts()
    assert all("Gut Images" in s and int(s.split("·")[1]) >= 2018 for s in sources), sources
    assert_laid_out(page, "#journal", "#clear-filters", "#results .figure")
    screenshot(page, tmp_path, "filtered")
    page.locator("#clear-filters").click()
    expect(cards).to_have_count(10)


def test_image_search_by_upload_drop_and_find_similar(page, live_server, figures, shared_fixtures, tmp_path):
    page.goto(live_server + "/")
    expect(page.locator("#status")).to_contain_text("10 figures indexed")
    # upload one of the indexed figures: it comes back first
    root = shared_fixtures / "image_text" / "medicat_sample" / "figures"
    target = figures[4]
    upload = next(p for p in root.iterdir() if p.read_bytes() == target["image"])
    page.set_input_files("#search-image", str(upload))
    expect(page.locator("#query-image")).to_be_visible()
    expect(page.locator("#query-image-name")).to_have_text(upload.name)
    cards = page.locator("#results .figure")
    expect(cards).to_have_count(10)
    expect(page.locator("#search-message")).to_contain_text(f"figures like {upload.name}")
    assert page.locator("#results .caption").first.inner_text().strip() == target["record"]["caption"].strip()
    assert float(page.locator("#results .score").first.inner_text()) == pytest.approx(1.0, abs=1e-3)
    all_images_loaded(page)
    assert_laid_out(page, "#query-image", "#search-button", "#results .figure")
    screenshot(page, tmp_path, "image-search")

    # drop a real image (a blood smear, not in the index) on the search panel
    blood = shared_fixtures / "images" / "bccd" / "JPEGImages" / "BloodImage_00000.jpg"
    transfer = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
            return transfer;
        }""",
        [base64.b64encode(blood.read_bytes()).decode(), blood.name],
    )
    page.dispatch_event("#search-panel", "drop", {"dataTransfer": transfer})
    expect(page.locator("#search-message")).to_contain_text(f"10 figures like {blood.name}")

    # "find similar" from the full view searches by that figure's own image
    page.locator("#results .thumb").nth(2).click()
    caption = page.locator("#viewer-caption").inner_text().strip()
    page.locator("#viewer-similar").click()
    expect(page.locator("#viewer")).to_be_hidden()
    expect(page.locator("#search-message")).to_contain_text("figures like")
    expect(page.locator("#results .caption").first).to_have_text(caption)

    # removing the image goes back to text search
    page.locator("#clear-image").click()
    expect(page.locator("#query")).to_be_visible()
    assert focused(page) == "query"


def test_zero_shot_chart_and_errors(page, live_server, shared_fixtures, tmp_path):
    page.goto(live_server + "/")
    image = shared_fixtures / "images" / "bccd" / "JPEGImages" / "BloodImage_00000.jpg"
    page.set_input_files("#image", str(image))
    expect(page.locator("#preview")).to_be_visible()
    page.fill("#labels", "white blood cell, red blood cell, platelet")
    page.click("#classify-form button")
    bars = page.locator("#chart .bar-row")
    expect(bars).to_have_count(3)
    labels = page.locator("#chart .bar-label").all_inner_texts()
    assert sorted(labels) == ["platelet", "red blood cell", "white blood cell"]
    values = [float(v.rstrip("%")) for v in page.locator("#chart .bar-value").all_inner_texts()]
    assert values == sorted(values, reverse=True) and abs(sum(values) - 100) < 0.5
    expect(page.locator("#classify-message")).to_contain_text("Most likely: " + labels[0])
    assert_laid_out(page, "#chart", "#labels", "#classify-form button")
    screenshot(page, tmp_path, "classify")

    # a bad upload and a bad template show the server's message instead of a chart
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#image", str(bad))
    page.click("#classify-form button")
    expect(page.locator("#classify-message")).to_contain_text("415")
    expect(bars).to_have_count(0)


def test_figures_without_a_pmcid_have_no_article_link(browser, embedder, figures, tmp_path):
    folder_figures = [
        {**f, "key": f"pneumonia_{i}", "record": {**f["record"], "pmcid": f"pneumonia/img_{i:03d}"}}
        for i, f in enumerate(figures[:2])
    ]
    shard = write_shard(tmp_path / "train-000000.tar", folder_figures)
    build_index(embedder, [str(shard)], tmp_path / "index")
    config = ServeConfig()
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        with running(create_app(embedder, FigureIndex.load(tmp_path / "index"), config), config) as url:
            page.goto(url + "/")
            page.fill("#query", "x-ray")
            page.keyboard.press("Enter")
            expect(page.locator("#results .figure")).to_have_count(2)
            page.locator("#results .thumb").first.click()
            expect(page.locator("#viewer")).to_be_visible()
            expect(page.locator("#viewer-article")).to_be_hidden()
            expect(page.locator("#viewer-facts")).to_contain_text("pneumonia/img_")
            assert page.locator("#viewer-facts a").count() == 0
    finally:
        context.close()
