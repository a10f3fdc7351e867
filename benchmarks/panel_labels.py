"""Panel-label reading: accuracy and CPU time per figure, against a reading-order baseline in the same run.

    .venv/bin/python benchmarks/panel_labels.py                 # dev set + 40 synthetic figures, ~20 s
    .venv/bin/python benchmarks/panel_labels.py --synthetic 100 --show-errors

Real: the 35 PMC figures of ../shared/fixtures/compound with their hand-checked boxes as input (detection is
measured elsewhere); a panel is right when the read label equals the printed one (None for unlabelled panels).
Synthetic: compounds from ``label_model.synthetic_panels`` lettered only in the font held out of training.
Baseline: label the panels of a compound figure A, B, C... in box order and a single panel None (what one can
do without reading the image). Time: CPU seconds of ``read_labels`` per figure, median and p95, one process.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import time
from pathlib import Path

import numpy as np
from PIL import Image

from biomedclip.panels.label_model.generate import HELD_OUT_FONTS, font_paths
from biomedclip.panels.label_model.synthetic_panels import make_figure
from biomedclip.panels.labels import read_labels

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIOMEDCLIP_SHARED", REPO.parent / "shared")) / "fixtures"


def _baseline(count: int) -> list[str | None]:
    return [None] if count == 1 else list(string.ascii_uppercase[:count])


def _score(name: str, figures: list[tuple[Image.Image, list, list]], show_errors: bool) -> None:
    right = baseline = total = 0
    times = []
    for image, boxes, truth in figures:
        started = time.process_time()
        read = read_labels(image, boxes)
        times.append(time.process_time() - started)
        for box, (got, confidence), want in zip(boxes, read, truth, strict=True):
            right += got == want
            if show_errors and got != want:
                print(f"  {name} {box}: read {got!r} ({confidence:.2f}), printed {want!r}")
        baseline += sum(a == b for a, b in zip(_baseline(len(truth)), truth, strict=True))
        total += len(truth)
    ms = 1000 * np.asarray(times)
    print(
        f"{name}: {len(figures)} figures, {total} panels: label accuracy {right / total:.3f} "
        f"(reading-order baseline {baseline / total:.3f}); CPU ms/figure median {np.median(ms):.1f}, "
        f"p95 {np.percentile(ms, 95):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=40, help="synthetic figures to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-errors", action="store_true")
    args = parser.parse_args()

    real = []
    root = SHARED / "compound"
    for line in (root / "gt.jsonl").read_text().splitlines():
        row = json.loads(line)
        with Image.open(root / row["image"]) as image:
            image.load()
            real.append((image.copy(), [tuple(p["box"]) for p in row["panels"]], [p["label"] for p in row["panels"]]))
    _score("dev set (GT boxes)", real, args.show_errors)

    rng = np.random.default_rng(args.seed)
    fonts = [p for p in font_paths(include_held_out=True) if p.name in HELD_OUT_FONTS]
    photos = sorted((SHARED / "images").rglob("*.jpg"))
    synthetic = [make_figure(rng, fonts, photos) for _ in range(args.synthetic)]
    _score("synthetic (unseen font)", [(f.image, f.boxes, f.labels) for f in synthetic], args.show_errors)


if __name__ == "__main__":
    main()
