"""The main job on the bundled sample: corpus -> train -> evaluate -> report -> search index.

Every stage runs through the same library code as the full-scale commands (real source adapters, the resumable
corpus builder, the trainer, the evaluation suite and the FAISS index), at laptop size:

- corpus: the CC BY PMC packages of ``data/sample/pmc`` plus labelled MedMNIST images turned into pairs through
  ``imagefolder:`` caption templates;
- train: the ``tiny`` config on the CPU for ``steps`` steps;
- evaluate: retrieval on the held-out test split, zero-shot and linear probe on the bundled MedMNIST val splits;
- report: ``OUT/report.md`` with plots; index: ``OUT/index`` for ``make serve``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE = Path("data/sample")

# imagefolder: source folder under SAMPLE/imagefolder -> caption template (its class folders fill {label})
IMAGEFOLDERS: dict[str, str] = {
    "chest_xray": "a chest X-ray showing {label}",
    "breast_ultrasound": "a breast ultrasound showing {label}",
}
# labelled val sets for zero-shot and linear probe: npz under SAMPLE/labeled -> its prompts under SAMPLE/prompts
LABELLED: dict[str, str] = {
    "pneumoniamnist_28_trainval.npz": "chest_xray.yaml",
    "breastmnist_28_trainval.npz": "breast_ultrasound.yaml",
}

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo run; the defaults finish in a few minutes on a 2-core CPU."""

    sample: Path = SAMPLE
    out: Path = Path("runs/demo")
    model: str = "tiny"
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    workers: int = 2
    min_image_side: int = 28  # MedMNIST images are 28 px; the corpus default (32 px) is for PMC figures
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})


def build_corpus(config: DemoConfig, log: Log) -> dict[str, Any]:
    """Build the figure-caption corpus of the sample into ``OUT/corpus``."""
    from biomedclip.corpus.articles import WorkConfig
    from biomedclip.corpus.build import BuildConfig, build
    from biomedclip.corpus.filters import FilterConfig
    from biomedclip.corpus.sources import open_source
    from biomedclip.corpus.split import SplitConfig

    sources = [open_source(str(config.sample / "pmc"))]
    for folder, template in IMAGEFOLDERS.items():
        sources.append(open_source(f"imagefolder:{config.sample / 'imagefolder' / folder}", caption_template=template))
    build_config = BuildConfig(
        work=WorkConfig(filters=FilterConfig(min_side=config.min_image_side)),
        split=SplitConfig(**config.split),
    )
    summary = build(sources, config.out / "corpus", build_config, workers=config.workers)
    log(
        f"corpus: {summary.articles} articles, {summary.figures} figures, {summary.accepted} accepted "
        f"{summary.splits}, rejected {summary.rejected}, {summary.seconds:.1f} s"
    )
    stats = json.loads((config.out / "corpus" / "stats.json").read_text())
    tokens = stats.get("caption_tokens", {})
    if tokens:
        log(f"tokenizer: caption tokens {json.dumps(tokens)}")
    return {"summary": summary.__dict__, "caption_tokens": tokens}


def train_model(config: DemoConfig, log: Log) -> Path:
    """Train the tiny model on the corpus' train shards; returns the exported checkpoint folder."""
    from biomedclip.shards import expand_shards
    from biomedclip.train.config import build_config
    from biomedclip.train.data import count_samples
    from biomedclip.train.loop import train

    shards = config.out / "corpus" / "shards"
    train_spec = str(shards / "train-*.tar")
    samples = count_samples(expand_shards(train_spec))
    epochs = max(1, math.ceil(config.steps * config.batch_size / samples))
    train_config = build_config(
        {
            "model": {"name": config.model, "patch_dropout": 0.0, "grad_checkpointing": False},
            "data": {"train": train_spec, "val": str(shards / "val-*.tar"), "workers": 1, "shuffle_buffer": 512},
            "optim": {
                "lr": config.lr,
                "warmup_steps": max(1, config.steps // 10),
                "batch_size": config.batch_size,
                "epochs": epochs,
                "max_steps": config.steps,
            },
            "eval": {"retrieval": True},
            "run": {
                "output_dir": str(config.out / "train"),
                "device": "cpu",
                "precision": "fp32",
                "log_every": max(1, config.steps // 10),
                "checkpoint_every": max(1, config.steps // 2),
            },
        }
    )
    log(f"train: {config.model} on {samples} pairs, {config.steps} steps of {config.batch_size} ({epochs} epochs)")

    def on_log(record: dict[str, Any]) -> None:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items() if k != "kind"}
        log(f"  {record.get('kind', 'train')}: {shown}")

    result = train(train_config, on_log=on_log)
    return result.output_dir / "final"


def evaluate_model(config: DemoConfig, checkpoint: Path, log: Log) -> list[dict]:
    """Retrieval on the test shards; zero-shot and linear probe on the labelled val sets."""
    from biomedclip.evaluate.linear_probe import LinearProbeConfig
    from biomedclip.evaluate.models import load_model
    from biomedclip.evaluate.prompts import load_prompt_set
    from biomedclip.evaluate.results import write_result
    from biomedclip.evaluate.tasks import RunSettings, run_linear_probe, run_retrieval, run_zeroshot

    model = load_model(f"local-dir:{checkpoint}", device="cpu")
    settings = RunSettings(batch_size=128, device="cpu", cache_dir=str(config.out / "eval" / "cache"))
    results = [run_retrieval(model, f"shards:{config.out / 'corpus' / 'shards'}", split="test", settings=settings)]
    for npz, prompts in LABELLED.items():
        dataset = f"npz:{config.sample / 'labeled' / npz}"
        prompt_set = load_prompt_set(config.sample / "prompts" / prompts)
        results.append(run_zeroshot(model, dataset, split="val", prompts=prompt_set, settings=settings))
        # The paper's ELEVATER probe with 20 SGD epochs instead of 100 (the CPU demo's time budget).
        probe = LinearProbeConfig(fractions=(0.1, 1.0), seeds=(0, 1), epochs=20)
        results.append(run_linear_probe(model, dataset, split="val", config=probe, settings=settings))
    for result in results:
        write_result(result, config.out / "eval")
        log(f"eval {result['task']} {Path(result['dataset']).name}: {_headline(result['metrics'])}")
    return results


def _headline(metrics: dict[str, Any]) -> str:
    """The few numbers worth a console line."""
    if "summary" in metrics:
        return ", ".join(f"accuracy@{frac} {v['accuracy']['mean']:.3f}" for frac, v in metrics["summary"].items())
    keys = [k for k in metrics if k.startswith(("image_to_text", "text_to_image", "accuracy", "auroc"))]
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if isinstance(metrics[k], float))


def build_search_index(config: DemoConfig, checkpoint: Path, log: Log) -> Path:
    """Index every accepted figure of the corpus for the search page."""
    from biomedclip.api import load
    from biomedclip.serve.build import build_index
    from biomedclip.shards import expand_shards

    index_dir = config.out / "index"
    shards = expand_shards(str(config.out / "corpus" / "shards"))
    report = build_index(load(f"local-dir:{checkpoint}", device="cpu"), shards, index_dir, rebuild=True)
    log(f"index: {report.total} figures ({report.kind}) in {index_dir}")
    return index_dir


def write_report(config: DemoConfig, corpus: dict[str, Any], results: list[dict], checkpoint: Path) -> Path:
    """``OUT/report.md``: the corpus summary, the training curve, the evaluation table and its plots."""
    from biomedclip.evaluate.report import write_report as write_eval_report

    out = config.out
    write_eval_report(results, out / "eval" / "report")
    loss_plot = _plot_training_loss(out / "train" / "metrics.jsonl", out / "training_loss.png")
    summary = corpus["summary"]
    lines = [
        "# biomedclip demo report",
        "",
        "## Corpus",
        f"{summary['articles']} articles, {summary['figures']} figures, {summary['accepted']} accepted; "
        f"splits {summary['splits']}; rejected {summary['rejected']}. Details: [corpus report](corpus/report.md).",
        "",
        f"Caption length in WordPiece tokens: `{json.dumps(corpus['caption_tokens'])}`",
        "",
        "## Training",
        f"Model `{config.model}`, {config.steps} steps of {config.batch_size} pairs on the CPU; checkpoint "
        f"`{checkpoint}` (open_clip layout).",
        "",
        f"![training loss]({loss_plot.name})" if loss_plot else "",
        "",
        "## Evaluation",
        "",
        _embedded(out / "eval" / "report" / "report.md", "eval/report/"),
        "",
        "## Search",
        "Start the search page with `make serve` and open http://127.0.0.1:8000/.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _embedded(markdown: Path, prefix: str) -> str:
    """A sub-report without its title, its headings one level down and its links relative to ``OUT``."""
    lines = markdown.read_text().splitlines()[1:]
    return "\n".join(("#" + line if line.startswith("#") else line) for line in lines).replace("](", f"]({prefix}")


def _plot_training_loss(metrics_file: Path, out: Path) -> Path | None:
    """Training loss per logged step, from the trainer's JSONL metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics_file.is_file():
        return None
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    points = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*points, strict=True), marker="o")
    ax.set(xlabel="step", ylabel="contrastive loss", title="training loss")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run_demo(config: DemoConfig, log: Log) -> Path:
    """Run every stage and return the path of ``report.md``."""
    log("[1/5] corpus build")
    corpus = build_corpus(config, log)
    log("[2/5] training")
    checkpoint = train_model(config, log)
    log("[3/5] evaluation")
    results = evaluate_model(config, checkpoint, log)
    log("[4/5] search index")
    build_search_index(config, checkpoint, log)
    log("[5/5] report")
    return write_report(config, corpus, results, checkpoint)
