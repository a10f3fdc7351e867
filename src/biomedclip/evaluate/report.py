"""Merge result records into ``report.md``, ``results.csv`` (long format) and PNG plots.

Every result identity (:func:`biomedclip.evaluate.results.result_identity`) keeps its own table row, CSV rows and
plots; when the inputs hold one identity twice (a rerun), the newest is used and the report says so. Rows show
the images scored of found, the majority-class rate and the settings that tell variants apart (prompts hash,
max-items, seed, split ratios). Results whose scored images overlap the training corpus are listed first
under a warning and marked in their row.

Plots: one bar chart per (task, dataset, split) comparing the results on the task's headline metrics, and one
confusion matrix per zero-shot result, titled with model, dataset, split and task.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from biomedclip.evaluate.results import leakage_warning, result_identity, result_stem, slug, spec_name

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
# Settings shown in the table to tell results of one model, dataset and split apart.
VARIANT_KEYS = (
    "prompts_hash", "max_items", "seed", "split_ratios", "fractions", "seeds", "merge_captions", "protocol", "head",
)  # fmt: skip
CSV_FIELDS = ["identity", "task", "model", "dataset", "split", "n", "found", "majority_rate", "overlap", "leakage"]
CSV_FIELDS += ["variant"]
CSV_FIELDS += ["metric", "value", "std"]


def identity_of(result: dict) -> str:
    return result.get("identity") or result_identity(
        result["task"], result["model"], result["dataset"], result.get("split", ""), result.get("settings", {})
    )


def variant(result: dict) -> str:
    """The settings that tell this result apart: ``prompts 3f2a9c01d2e4, max_items 100, seed 0``."""
    settings = result.get("settings", {})
    nested = settings.get("linear_probe") if isinstance(settings.get("linear_probe"), dict) else {}
    parts = []
    for key in VARIANT_KEYS:
        value = settings.get(key, nested.get(key))
        if value is not None:
            text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            parts.append(f"{key.replace('_hash', '')} {text}")
    return ", ".join(parts)


def leakage_status(result: dict) -> str:
    """``leakage checked 253/253 (catalog 1a2b3c4d5e6f)``, ``leakage checked 0/253``, or ``leakage not checked``."""
    leakage = result.get("leakage")
    if not leakage:
        return "leakage not checked"
    total = leakage["checked"] + leakage.get("unchecked", 0)
    digest = leakage.get("catalog_digest")
    return f"leakage checked {leakage['checked']}/{total}" + (f" (catalog {digest})" if digest else "")


def latest_per_identity(results: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """One result per identity (the newest ``created``) and how many inputs each identity had."""
    chosen: dict[str, dict] = {}
    runs: dict[str, int] = defaultdict(int)
    for result in results:
        key = identity_of(result)
        runs[key] += 1
        if key not in chosen or result.get("created", "") >= chosen[key].get("created", ""):
            chosen[key] = result
    return list(chosen.values()), dict(runs)


def metric_rows(result: dict) -> list[dict]:
    """Long-format rows (:data:`CSV_FIELDS`) of one result."""
    counts = result.get("counts") or {}
    base = {
        "identity": identity_of(result),
        "task": result["task"],
        "model": result["model"],
        "dataset": result["dataset"],
        "split": result.get("split", ""),
        "n": counts.get("n", result["metrics"].get("n")),
        "found": counts.get("found"),
        "majority_rate": counts.get("majority_rate"),
        "overlap": (result.get("leakage") or {}).get("overlap"),
        "variant": variant(result),
        "leakage": leakage_status(result),
    }
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


def _scored(row: dict) -> str:
    if row["n"] is None:
        return ""
    text = f"{row['n']} of {row['found']}" if row["found"] is not None else str(row["n"])
    return text + (f" (majority {row['majority_rate']:.3f})" if row["majority_rate"] is not None else "")


def markdown_table(rows: list[dict], runs: dict[str, int] | None = None) -> str:
    """One Markdown section per task: a row per result identity, a column per metric."""
    runs = runs or {}
    sections = []
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        metrics = list(dict.fromkeys(r["metric"] for r in task_rows))
        table: dict[tuple, dict] = {}
        for r in task_rows:
            key = (r["model"], r["dataset"], r["split"], r["identity"])
            table.setdefault(key, {"row": r, "values": {}})["values"][r["metric"]] = _fmt(r["value"], r["std"])
        header = "| model | dataset | split | scored | settings | " + " | ".join(metrics) + " |"
        lines = [f"## {task}", "", header, "|" + "---|" * (5 + len(metrics))]
        for (model, dataset, split, identity), entry in sorted(table.items()):
            row = entry["row"]
            settings = row["variant"] + (f" ({runs[identity]} runs, newest shown)" if runs.get(identity, 1) > 1 else "")
            if row["overlap"]:
                settings = f"**LEAKAGE: {row['overlap']} training images** " + settings
            settings = f"{settings}; {row['leakage']}" if settings else row["leakage"]
            cells = [entry["values"].get(m, "") for m in metrics]
            lines.append(f"| {model} | {dataset} | {split} | {_scored(row)} | {settings} | " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _bar_chart(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    labels = {}
    for r in rows:
        labels.setdefault(r["identity"], f"{spec_name(r['model'])} {r['variant']}".strip())
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(metrics) + 1), 3.2))
    for m, (identity, label) in enumerate(labels.items()):
        values = {r["metric"]: r for r in rows if r["identity"] == identity}
        heights = [values[k]["value"] if k in values else 0.0 for k in metrics]
        errors = [(values[k]["std"] or 0.0) if k in values else 0.0 for k in metrics]
        ax.bar(np.arange(len(metrics)) + m * width, heights, width, yerr=errors, label=label[:60])
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_title(result: dict) -> str:
    """``model · dataset · split · task`` (and the prompts hash when there is one)."""
    prompts = (result.get("settings") or {}).get("prompts_hash")
    title = f"{result['model']} · {result['dataset']} · {result.get('split', '')} · {result['task']}"
    return title + (f" · prompts {prompts}" if prompts else "")


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
    ax.set_title(confusion_title(result), fontsize=7, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: list[dict], out_dir: Path) -> list[Path]:
    """Write the Markdown report, the CSV and the plots; returns the written paths (report and CSV first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results, runs = latest_per_identity(results)
    results.sort(key=result_stem)
    rows = [row for result in results for row in metric_rows(result)]
    csv_path = out_dir / "results.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    written = [out_dir / "report.md", csv_path]
    plots = []
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["dataset"], row["split"])].append(row)
    for (task, dataset, split), group in sorted(groups.items()):
        tag = hashlib.sha256(dataset.encode()).hexdigest()[:8]  # two specs with one short name stay apart
        path = out_dir / f"bars__{slug(task)}__{slug(spec_name(dataset))}__{slug(split)}__{tag}.png"
        _bar_chart(group, f"{task}: {dataset} [{split}]", path)
        plots.append(path)
    for result in results:
        if result["task"] == "zeroshot" and "confusion_matrix" in result["metrics"]:
            path = out_dir / f"confusion__{result_stem(result)}.png"
            _confusion_plot(result, path)
            plots.append(path)
    warnings = [leakage_warning(r) for r in results if leakage_warning(r)]
    head = "# Evaluation report\n\n"
    if warnings:
        head += "## Leakage warnings\n\n" + "\n".join(f"- **{w}**" for w in warnings) + "\n\n"
    images = "\n".join(f"![{p.stem}]({p.name})" for p in plots)
    text = head + markdown_table(rows, runs) + "\n## Plots\n\n" + images + "\n"
    (out_dir / "report.md").write_text(text, encoding="utf-8")
    return written + plots
