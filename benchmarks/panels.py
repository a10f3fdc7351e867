"""CPU milliseconds per figure to split real compound figures: detect + labels + subcaptions (+ alignment).

    .venv/bin/python benchmarks/panels.py                      # the 35 real figures of ../shared/fixtures/compound
    .venv/bin/python benchmarks/panels.py --repeat 3 --images DIR --captions ROWS.jsonl

Each figure is decoded once, then ``split_figure`` runs ``--repeat`` times on one thread; per stage and in total
the median and p95 of CPU time (``time.process_time``) per figure are printed. Baseline (same run, same figures):
the figure-level corpus work per figure, i.e. decode, RGB, resize to a 512-pixel short side and JPEG encode, so
the last line is the splitting cost as a multiple of what a figure costs the corpus without it. Target (issue 19):
a median of 60 ms or less per figure on one core.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from PIL import Image

from biomedclip.panels.labels import read_labels
from biomedclip.panels.layout import detect_panels
from biomedclip.panels.pipeline import split_figure
from biomedclip.panels.subcaptions import split_caption

REPO = Path(__file__).resolve().parents[1]
COMPOUND = Path(os.environ.get("BIOMEDCLIP_SHARED", REPO.parent / "shared")) / "fixtures" / "compound"


def _cpu_ms(function, *args) -> tuple[float, object]:
    start = time.process_time()
    result = function(*args)
    return (time.process_time() - start) * 1000, result


def _baseline(path: Path) -> None:
    """The figure-level corpus work: decode, RGB, resize to a 512-pixel short side, JPEG encode."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    scale = 512 / min(rgb.size)
    if scale < 1:
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BICUBIC)
    rgb.save(io.BytesIO(), "JPEG", quality=95)


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):7.1f} ms   p95 {p95:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=COMPOUND, help="folder the rows' image paths are relative to")
    parser.add_argument("--captions", type=Path, default=COMPOUND / "gt.jsonl", help='rows {"id", "image", "caption"}')
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure (the median run is kept)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.captions.read_text().splitlines() if line.strip()]
    stages: dict[str, list[float]] = {"detect": [], "labels": [], "subcaptions": [], "split_figure": [], "baseline": []}
    for row in rows:
        path = args.images / row["image"]
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        caption = row.get("caption")
        runs: dict[str, list[float]] = {name: [] for name in stages}
        for _ in range(args.repeat):
            ms, detected = _cpu_ms(detect_panels, image)
            runs["detect"].append(ms)
            runs["labels"].append(_cpu_ms(read_labels, image, [box for box, _ in detected])[0])
            runs["subcaptions"].append(_cpu_ms(split_caption, caption)[0])
            runs["split_figure"].append(_cpu_ms(split_figure, image, caption)[0])
            runs["baseline"].append(_cpu_ms(_baseline, path)[0])
        for name, values in runs.items():
            stages[name].append(statistics.median(values))
    print(f"{len(rows)} figures from {args.captions}, CPU time per figure, one thread, {args.repeat} run(s) each")
    for name, values in stages.items():
        label = "baseline (decode+resize+JPEG)" if name == "baseline" else name
        print(f"  {label:30s} {_summary(values)}")
    ratio = statistics.median(stages["split_figure"]) / statistics.median(stages["baseline"])
    print(f"split_figure median / figure-level baseline median: {ratio:.2f}x")


if __name__ == "__main__":
    main()
