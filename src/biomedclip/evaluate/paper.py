"""``biomedclip eval paper``: every paper task whose data is found under one folder, our numbers beside the paper's.

Layout of ``DATA_ROOT`` (each subfolder is what its adapter in :mod:`biomedclip.evaluate.datasets` reads):

| subfolder | holds (adapter) | tasks |
|---|---|---|
| ``pcam/`` | PCam ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (``pcam``) | zero-shot, probe |
| ``lc25000/`` | LC25000 ``lung_colon_image_set/`` or its two subfolders (``lc25000_lung``, ``lc25000_colon``) | same |
| ``tcga_til/`` | the TCGA-TILs release, ``images-tcga-tils/...`` (``tcga_til``) | zero-shot, probe |
| ``rsna_pneumonia/`` | RSNA ``stage_2_train_labels.csv`` + ``stage_2_train_images/`` (``rsna_pneumonia``) | same|
| ``vqa_rad/`` | ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/`` (``vqa_rad``) | VQA |
| ``slake/`` | SLAKE 1.0 ``{train,validate,test}.json`` + ``imgs/`` (``slake``) | VQA |
| ``pmc15m_test/`` | the corpus's test shards ``test-NNNNNN.tar`` from ``corpus build`` (``shards``) | retrieval |

A missing subfolder skips its tasks; a task whose data cannot be read is reported as failed with the reason; both
are listed in the report. Each task runs with its command's defaults (the paper's protocols: one-to-one
retrieval, ELEVATER linear probe, METER-style VQA; zero-shot on each dataset's default split) unless the
settings say otherwise. The paper's numbers come from ``paper_results.yaml`` beside this module (with its source);
a number not entered there is shown as "not confirmed".
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from biomedclip.errors import InputError
from biomedclip.evaluate.datasets import DatasetError
from biomedclip.evaluate.linear_probe import LinearProbeConfig
from biomedclip.evaluate.models import EvalModel
from biomedclip.evaluate.results import write_result
from biomedclip.evaluate.retrieval import RetrievalConfig
from biomedclip.evaluate.tasks import RunSettings, run_linear_probe, run_retrieval, run_zeroshot
from biomedclip.evaluate.vqa import VQAConfig, run_vqa

PAPER_RESULTS = Path(__file__).with_name("paper_results.yaml")
TASKS = ("zeroshot", "linear_probe", "retrieval", "vqa")
# The ELEVATER toolkit searches patch-camelyon's hyper-parameters on a 10,000-per-class draw (final fit on all).
SEARCH_CAPS = {"pcam": 10_000}


@dataclass(frozen=True)
class PaperTask:
    """One table cell group of the paper: a task on a dataset found in ``DATA_ROOT/folder``."""

    task: str
    dataset: str  # key in paper_results.yaml
    folder: str
    adapter: str


PAPER_TASKS = (
    *(
        PaperTask(task, name, folder, name)
        for task in ("zeroshot", "linear_probe")
        for name, folder in (
            ("pcam", "pcam"),
            ("lc25000_lung", "lc25000"),
            ("lc25000_colon", "lc25000"),
            ("tcga_til", "tcga_til"),
            ("rsna_pneumonia", "rsna_pneumonia"),
        )
    ),
    PaperTask("retrieval", "pmc15m_test", "pmc15m_test", "shards"),
    PaperTask("vqa", "vqa_rad", "vqa_rad", "vqa_rad"),
    PaperTask("vqa", "slake", "slake", "slake"),
)


@dataclass(frozen=True)
class PaperSettings:
    """Which tasks to run and each task's settings (defaults: the paper's protocols)."""

    tasks: tuple[str, ...] = TASKS
    run: RunSettings = field(default_factory=RunSettings)
    linear_probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    vqa: VQAConfig = field(default_factory=VQAConfig)


def load_paper_results(path: str | Path | None = None) -> dict:
    """The paper's tables (``{source, tables: {task: {dataset: {metric: percent or None}}}}``)."""
    path = Path(path or PAPER_RESULTS)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "tables" not in data or "source" not in data:
        raise ValueError(f"{path}: expected 'source' and 'tables'")
    return data


def _ours(task: str, metrics: dict, metric: str) -> tuple[float | None, float | None]:
    """(value, std) of ``metric`` in percent from a result's metrics; linear-probe metrics are ``accuracy@F%``."""
    if task == "linear_probe":
        name, _, percent = metric.partition("@")
        entry = metrics["summary"].get(str(float(percent.rstrip("%")) / 100), {}).get(name)
        return (None, None) if entry is None else (100 * entry["mean"], 100 * entry["std"])
    value = metrics.get(metric)
    return (None, None) if value is None else (100 * value, None)


def _run_one(spec: PaperTask, model: EvalModel, dataset: str, settings: PaperSettings) -> dict:
    if spec.task == "zeroshot":
        return run_zeroshot(model, dataset, settings=settings.run)
    if spec.task == "linear_probe":
        config = settings.linear_probe
        if spec.dataset in SEARCH_CAPS and config.search_max_per_class is None:
            config = replace(config, search_max_per_class=SEARCH_CAPS[spec.dataset])
        return run_linear_probe(model, dataset, config=config, settings=settings.run)
    if spec.task == "retrieval":
        return run_retrieval(model, dataset, config=settings.retrieval, settings=settings.run)
    return run_vqa(model, dataset, config=settings.vqa, settings=settings.run)


def run_paper(
    model: EvalModel, data_root: str | Path, out_dir: str | Path, settings: PaperSettings | None = None
) -> dict:
    """Run every paper task found under ``data_root``, write each result and the side-by-side report.

    Returns:
        The report record (also written as ``paper_report.json`` beside ``paper_report.md``).
    """
    settings = settings or PaperSettings()
    data_root, out_dir = Path(data_root), Path(out_dir)
    unknown = set(settings.tasks) - set(TASKS)
    if unknown:
        raise InputError(f"unknown paper task(s) {', '.join(sorted(unknown))}: choose from {', '.join(TASKS)}")
    folders = sorted({spec.folder for spec in PAPER_TASKS})
    if not data_root.is_dir() or not any((data_root / folder).is_dir() for folder in folders):
        raise InputError(f"no paper dataset under {data_root}: expected one or more of {', '.join(folders)}/")
    paper = load_paper_results()
    runs, rows = [], []
    for spec in PAPER_TASKS:
        run: dict[str, Any] = {"task": spec.task, "dataset": spec.dataset, "folder": spec.folder}
        runs.append(run)
        if spec.task not in settings.tasks:
            run |= {"status": "skipped", "reason": "task not selected"}
            continue
        if not (data_root / spec.folder).is_dir():
            run |= {"status": "skipped", "reason": f"no {spec.folder}/ under {data_root}"}
            continue
        start = time.perf_counter()
        try:
            result = _run_one(spec, model, f"{spec.adapter}:{data_root / spec.folder}", settings)
        except (DatasetError, InputError, ValueError, FileNotFoundError) as error:
            run |= {"status": "failed", "reason": str(error)}
            continue
        run |= {
            "status": "ran",
            "seconds": round(time.perf_counter() - start, 1),
            "result_file": str(write_result(result, out_dir)),
            "split": result.get("split"),
            "warnings": result["metrics"].get("warnings", []),
        }
        for metric, theirs in paper["tables"][spec.task][spec.dataset].items():  # the metrics the paper reports
            ours, std = _ours(spec.task, result["metrics"], metric)
            delta = None if ours is None or theirs is None else ours - theirs
            counts = result.get("counts", {})
            rows.append(
                {"task": spec.task, "dataset": spec.dataset, "metric": metric, "ours": ours, "std": std}
                | {"paper": theirs, "delta": delta, "n": counts.get("n"), "found": counts.get("found")}
                | {"split_rule": counts.get("rule") or f"split {result.get('split')}"}
            )
    report = {
        "model": model.name,
        "data_root": str(data_root),
        "paper": paper["source"],
        "paper_tables": {task: table.get("table") for task, table in paper["tables"].items()},
        "settings": {
            "tasks": list(settings.tasks),
            "run": asdict(settings.run),
            "linear_probe": asdict(settings.linear_probe),
            "retrieval": asdict(settings.retrieval),
            "vqa": asdict(settings.vqa),
        },
        "rows": rows,
        "runs": runs,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "paper_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / "paper_report.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def _number(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} ± {std:.2f}" if std is not None else f"{value:.2f}"


def render_markdown(report: dict) -> str:
    """The report as Markdown: ours vs the paper per task/dataset/metric, then what ran, was skipped or failed."""
    source = report["paper"]
    lines = [
        f"# BiomedCLIP paper comparison: {report['model']}",
        "",
        f"Data: `{report['data_root']}`. Paper: {source['title']} ({source['venue']}, {source['url']}; "
        f"arXiv:{source['arxiv']}). Values in percent; linear probe: mean ± std over seeds.",
        "",
        "The paper's column comes from:",
    ]
    lines += [
        f"- {task}: {where}" if where else f"- {task}: not confirmed (no stored copy of its table was read)"
        for task, where in report["paper_tables"].items()
    ]
    lines += [
        "",
        "`n scored` is how many of our images (retrieval: pairs) produced our number, of how many were found, and how",
        "the scored split was chosen; the paper's own test sets may differ in size.",
        "",
        "| task | dataset | metric | ours | n scored | paper | ours − paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        paper = "not confirmed" if row["paper"] is None else _number(row["paper"])
        delta = "—" if row["delta"] is None else f"{row['delta']:+.2f}"
        scored = "—" if row.get("n") is None else f"{row['n']:,} of {row['found']:,} ({row['split_rule']})"
        lines.append(
            f"| {row['task']} | {row['dataset']} | {row['metric']} | {_number(row['ours'], row['std'])} "
            f"| {scored.replace('|', '/')} | {paper} | {delta} |"
        )
    lines += ["", "## Runs", "", "| task | dataset | status | detail |", "|---|---|---|---|"]
    for run in report["runs"]:
        if run["status"] == "ran":
            detail = f"split {run['split']}, {run['seconds']} s, `{Path(run['result_file']).name}`"
            detail += "".join(f"; warning: {w}" for w in run["warnings"])
        else:
            detail = run["reason"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {run['task']} | {run['dataset']} | {run['status']} | {detail} |")
    return "\n".join(lines) + "\n"
