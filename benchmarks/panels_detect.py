"""Panel detection on labelled figures: compound accuracy, AP50, ImageCLEF accuracy and CPU ms per figure.

    PYTHONPATH=src python benchmarks/panels_detect.py [--gt ../shared/fixtures/compound/gt.jsonl] [--synthetic N]

Scores ``biomedclip.panels.layout.detect_panels`` against a ground truth in the ``panels eval`` shape (the real
development set by default; ``--synthetic N`` adds N held-out synthetic compounds from ``panels.synthetic``) and
prints one line per set, then the figures it gets most wrong. Time is CPU time of one process (one core).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: BLAS threads only spin on the glyph model's small products

from PIL import Image

from biomedclip.panels.layout import detect_panels

Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes with exclusive ends."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def max_matching(pred: list[Box], true: list[Box], threshold: float = 0.5) -> int:
    """Size of a maximum one-to-one matching of boxes with IoU >= threshold (augmenting paths)."""
    edges = [[j for j, t in enumerate(true) if iou(p, t) >= threshold] for p in pred]
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(pred)))


def average_precision(figures: list[tuple[list[tuple[Box, float]], list[Box]]], threshold: float = 0.5) -> float:
    """COCO-style AP (101-point interpolated) over all figures: greedy matching by descending score."""
    detections = []
    n_true = 0
    for fig_index, (pred, true) in enumerate(figures):
        n_true += len(true)
        detections += [(score, fig_index, box) for box, score in pred]
    detections.sort(key=lambda d: -d[0])
    used: set[tuple[int, int]] = set()
    hits = []
    for _, fig_index, box in detections:
        true = figures[fig_index][1]
        best, best_j = threshold, -1
        for j, t in enumerate(true):
            overlap = iou(box, t)
            if (fig_index, j) not in used and overlap >= best:
                best, best_j = overlap, j
        if best_j >= 0:
            used.add((fig_index, best_j))
        hits.append(best_j >= 0)
    if n_true == 0:
        return 0.0
    precision, recall, tp = [], [], 0
    for k, hit in enumerate(hits, 1):
        tp += hit
        precision.append(tp / k)
        recall.append(tp / n_true)
    for k in range(len(precision) - 2, -1, -1):
        precision[k] = max(precision[k], precision[k + 1])
    total = 0.0
    for r in (i / 100 for i in range(101)):
        total += next((p for p, rc in zip(precision, recall, strict=True) if rc >= r), 0.0)
    return total / 101


def score(rows: list[dict], predictions: list[list[tuple[Box, float]]]) -> dict[str, float]:
    """Compound accuracy, AP50 and ImageCLEF accuracy of predictions against ground-truth rows."""
    compound_hits, clef = 0, []
    pairs = []
    for row, pred in zip(rows, predictions, strict=True):
        true = [tuple(p["box"]) for p in row["panels"]]
        compound_hits += (len(pred) > 1) == bool(row["compound"])
        pairs.append((pred, true))
        if row["compound"]:
            clef.append(max_matching([b for b, _ in pred], true) / max(len(pred), len(true)))
    return {
        "compound_accuracy": compound_hits / len(rows),
        "ap50": average_precision(pairs),
        "imageclef_accuracy": sum(clef) / len(clef) if clef else 0.0,
    }


def run(rows: list[dict], images: list[Image.Image], name: str) -> None:
    predictions, times = [], []
    for image in images:
        start = time.process_time()
        predictions.append(detect_panels(image))
        times.append((time.process_time() - start) * 1000)
    metrics = score(rows, predictions)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(
        f"{name}: figures {len(rows)}  compound_acc {metrics['compound_accuracy']:.3f}  AP50 {metrics['ap50']:.3f}  "
        f"ImageCLEF {metrics['imageclef_accuracy']:.3f}  ms/figure median {statistics.median(times):.1f} p95 {p95:.1f}"
    )
    worst = []
    for row, pred in zip(rows, predictions, strict=True):
        true = [tuple(p["box"]) for p in row["panels"]]
        acc = max_matching([b for b, _ in pred], true) / max(len(pred), len(true), 1)
        if acc < 1:
            worst.append((acc, row["id"], len(pred), len(true)))
    for acc, fig_id, n_pred, n_true in sorted(worst):
        print(f"  {fig_id}: {acc:.2f} ({n_pred} predicted, {n_true} true)")


def main() -> None:
    shared = Path(os.environ.get("BIOMEDCLIP_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, default=shared / "fixtures" / "compound" / "gt.jsonl")
    parser.add_argument("--synthetic", type=int, default=0, help="also score N held-out synthetic compounds")
    args = parser.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rows = [json.loads(line) for line in args.gt.read_text().splitlines() if line.strip()]
    images = [Image.open(args.gt.parent / row["image"]) for row in rows]
    for image in images:
        image.load()
    run(rows, images, "dev set")
    if args.synthetic:
        from biomedclip.panels.synthetic import held_out_figures

        figures = held_out_figures(args.synthetic, shared / "fixtures")
        rows = [f.as_gt_row(f"held-out-{i}") for i, f in enumerate(figures)]
        run(rows, [f.image for f in figures], "synthetic held-out")


if __name__ == "__main__":
    main()
