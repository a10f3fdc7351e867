"""The search page's note on flat similarities (the issue: unrelated images at 1.000 and 0.999 with the demo model),
run in Node on the page's own function, and the full view's CSS that never shows an image smaller than its
thumbnail."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "src" / "biomedclip" / "serve" / "static"


def _flat_scores_note(scores: list[float]) -> str:
    source = (STATIC / "app.js").read_text(encoding="utf-8")
    start = source.index("const FLAT_SCORE_SPREAD")
    end = source.index("\n}\n", source.index("function flatScoresNote")) + 3
    hits = json.dumps([{"score": s} for s in scores])
    script = source[start:end] + f"\nprocess.stdout.write(flatScoresNote({hits}));"
    return subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
def test_similarities_that_barely_differ_are_called_out() -> None:
    note = " · similarities differ by less than 0.01: this model barely tells these figures apart"
    assert _flat_scores_note([1.0, 0.999, 0.9995]) == note
    assert _flat_scores_note([0.5, 0.4901]) == note  # spread 0.0099
    assert _flat_scores_note([0.5, 0.489]) == ""  # spread 0.011: the model ranks them
    assert _flat_scores_note([0.99]) == ""  # one result has no spread to speak of


def test_the_full_view_scales_small_images_up_to_its_pane() -> None:
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    rule = re.search(r"\.viewer-image img \{([^}]*)\}", css).group(1)
    assert "width: 100%" in rule and "max-width" not in rule and "object-fit: contain" in rule
