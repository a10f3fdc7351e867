"""Merge result records into ``report.md``, ``results.csv`` (long format) and PNG plots.

Plots: one bar chart per (task, dataset) comparing models on the task's headline metrics, and one confusion
matrix per zero-shot result.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from biomedclip.evaluate.results import slug

HEADLINE = {
    "zeroshot": ("accuracy", "balanced_accuracy", "macro_f1", "auroc"),
    "retrieval": (
        "image_to_text_R@1",
        "image_to_text_R@5",
        "image_to_text_R@10",
        "text_to_image_R@1",
        "text_to_image_R@5",
        "text_to_image_R@10",
    ),
    "vqa": ("closed_accuracy", "open_accuracy", "overall_accuracy"),
}


def metric_rows(result: dict) -> list[dict]:
    """Long-format rows ``{task, model, dataset, split, metric, value, std}`` of one result."""
    base = {k: result[k] for k in ("task", "model", "dataset")} | {"split": result.get("split", "")}
    metrics = result["metrics"]
    if result["task"] == "linear_probe":
        return [
            base | {"metric": f"{name}@{float(fraction):g}", "value": stats["mean"], "std": stats["std"]}
            for fraction, by_metric in metrics["summary"].items()
            for name, stats in by_metric.items()
        ]
    names = HEADLINE.get(result["task"]) or [k for k, v in metrics.items() if isinstance(v, int | float)]
    return [base | {"metric": n, "value": metrics[n], "std": None} for n in names if metrics.get(n) is not None]


def _fmt(value: float, std: float | None) -> str:
    return f"{value:.3f}" if std is None else f"{value:.3f} ± {std:.3f}"


def markdown_table(rows: list[dict]) -> str:
    """One Markdown section per task: a row per (model, dataset, split), a column per metric."""
    sections = []
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        metrics = list(dict.fromkeys(r["metric"] for r in task_rows))
        table: dict[tuple, dict] = defaultdict(dict)
        for r in task_rows:
            table[(r["model"], r["dataset"], r["split"])][r["metric"]] = _fmt(r["value"], r["std"])
        lines = [f"## {task}", "", "| model | dataset | split | " + " | ".join(metrics) + " |"]
        lines.append("|" + "---|" * (3 + len(metrics)))
        for (model, dataset, split), values in sorted(table.items()):
            cells = [values.get(m, "") for m in metrics]
            lines.append(f"| {model} | {dataset} | {split} | " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    return "# Evaluation report\n\n" + "\n\n".join(sections) + "\n"


def _bar_chart(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(metrics) + 1), 3.2))
    for m, model in enumerate(models):
        values = {r["metric"]: r for r in rows if r["model"] == model}
        heights = [values[k]["value"] if k in values else 0.0 for k in metrics]
        errors = [(values[k]["std"] or 0.0) if k in values else 0.0 for k in metrics]
        ax.bar(np.arange(len(metrics)) + m * width, heights, width, yerr=errors, label=model)
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _confusion_plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(result["metrics"]["confusion_matrix"])
    names = result["metrics"].get("classnames") or [str(i) for i in range(len(matrix))]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 1.2 * len(names) + 2))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{result['model']} on {result['dataset']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: list[dict], out_dir: Path) -> list[Path]:
    """Write the Markdown report, the CSV and the plots; returns the written paths (report and CSV first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [row for result in results for row in metric_rows(result)]
    csv_path = out_dir / "results.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["task", "model", "dataset", "split", "metric", "value", "std"])
        writer.writeheader()
        writer.writerows(rows)
    written = [out_dir / "report.md", csv_path]
    plots = []
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["dataset"])].append(row)
    for (task, dataset), group in sorted(groups.items()):
        path = out_dir / f"bars__{slug(task)}__{slug(dataset)}.png"
        _bar_chart(group, f"{task}: {dataset}", path)
        plots.append(path)
    for result in results:
        if result["task"] == "zeroshot" and "confusion_matrix" in result["metrics"]:
            path = out_dir / f"confusion__{slug(result['model'])}__{slug(result['dataset'])}.png"
            _confusion_plot(result, path)
            plots.append(path)
    images = "\n".join(f"![{p.stem}]({p.name})" for p in plots)
    (out_dir / "report.md").write_text(markdown_table(rows) + "\n## Plots\n\n" + images + "\n", encoding="utf-8")
    return written + plots
