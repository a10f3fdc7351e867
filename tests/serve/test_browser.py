"""The web page end to end in headless Chromium: search -> figure grid; image + labels -> bar chart."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

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


@pytest.fixture(scope="module")
def page():
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run `make browser` (apt-get install chromium)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        yield context.new_page()
        context.close()
        browser.close()


def test_search_grid_and_zero_shot_chart(page, live_server, figures, shared_fixtures, tmp_path):
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live_server + "/")
    expect(page.locator("#status")).to_contain_text("10 figures indexed")

    page.fill("#query", "nuclear magnetic resonance scan of the brain")
    page.select_option("#k", "10")
    page.click("#search-form button")
    cards = page.locator("#results .figure")
    expect(cards).to_have_count(10)
    expect(page.locator("#search-message")).to_contain_text("10 figures for")
    # every card shows its figure (decoded by the browser from the shard bytes), caption and PMC link
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)"
    )
    captions = [c.strip() for c in page.locator("#results .caption").all_inner_texts()]
    assert set(captions) == {f["record"]["caption"].strip() for f in figures}
    links = page.locator("#results .meta a")
    assert all(
        href.startswith("https://pmc.ncbi.nlm.nih.gov/articles/PMC")
        for href in links.evaluate_all("links => links.map(a => a.href)")
    )

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

    # a bad upload shows the server's message instead of a chart
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#image", str(bad))
    page.click("#classify-form button")
    expect(page.locator("#classify-message")).to_contain_text("415")

    page.set_input_files("#image", str(image))
    page.click("#classify-form button")
    expect(bars).to_have_count(3)
    screenshot = tmp_path / "biomedclip-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert errors == []
