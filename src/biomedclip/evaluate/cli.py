"""``biomedclip eval``: zero-shot, retrieval, linear probe and VQA runs, and the merged report."""

from __future__ import annotations

import time
from pathlib import Path

import click

from biomedclip.evaluate.datasets import DatasetError, list_datasets

SPLIT = click.Choice(["train", "val", "test"])


def _common(function):
    """Options every task shares."""
    options = [
        click.option("--model", "model_spec", required=True, help="Built-in name, local-dir:PATH, hf-hub:ORG/NAME."),
        click.option("--dataset", required=True, help=f"NAME:PATH ({', '.join(list_datasets())}) or a path."),
        click.option("--split", type=SPLIT, default="test", show_default=True, help="Split to evaluate."),
        click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Result folder."),
        click.option("--batch-size", type=int, default=64, show_default=True),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)."),
        click.option("--workers", type=int, default=0, show_default=True, help="Image-loading processes."),
        click.option("--max-items", type=int, default=None, help="Evaluate a seeded random subset of this size."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Embedding cache folder."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _settings(kwargs: dict):
    from biomedclip.evaluate.tasks import RunSettings

    return RunSettings(
        batch_size=kwargs["batch_size"],
        device=kwargs["device"],
        num_workers=kwargs["workers"],
        max_items=kwargs["max_items"],
        seed=kwargs["seed"],
        cache_dir=kwargs["cache_dir"],
    )


def _run(task, kwargs: dict, **task_kwargs) -> None:
    """Load the model, run ``task``, write the JSON and print a one-line summary; bad input -> clean error."""
    from biomedclip.evaluate.models import load_model
    from biomedclip.evaluate.results import write_result

    start = time.perf_counter()
    try:
        model = load_model(kwargs["model_spec"], kwargs["device"])
        result = task(model, kwargs["dataset"], split=kwargs["split"], settings=_settings(kwargs), **task_kwargs)
    except (DatasetError, FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    path = write_result(result, kwargs["out_dir"])
    headline = _headline(result)
    click.echo(
        f"{result['task']} {result['dataset']} [{result['split']}]: {headline} ({time.perf_counter() - start:.1f}s)"
    )
    click.echo(f"wrote {path}")


def _headline(result: dict) -> str:
    metrics = result["metrics"]
    if result["task"] == "linear_probe":
        return ", ".join(
            f"{f}: acc {v['accuracy']['mean']:.3f}±{v['accuracy']['std']:.3f}" for f, v in metrics["summary"].items()
        )
    keys = [
        k
        for k in (
            "accuracy",
            "balanced_accuracy",
            "macro_f1",
            "auroc",
            "overall_accuracy",
            "closed_accuracy",
            "open_accuracy",
            "image_to_text_R@1",
            "text_to_image_R@1",
            "mean_recall",
        )
        if metrics.get(k) is not None
    ]
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in keys)


@click.group("eval")
def eval_group() -> None:
    """Evaluate a model on local datasets: zero-shot, retrieval, linear probe, VQA; merge results into a report."""


@eval_group.command("zeroshot")
@_common
@click.option(
    "--prompts",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML with classnames (label order) and templates; default: the paper's or the class names.",
)
@click.option(
    "--class-names",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML mapping class folder names to class text (notumor: no tumor), as given to train / corpus build.",
)
@click.option(
    "--prompts-from-run",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A training run folder: prompt with the caption template its training shards were built with.",
)
def zeroshot_command(prompts: str | None, class_names: str | None, prompts_from_run: str | None, **kwargs) -> None:
    """Zero-shot classification with prompt ensembling (accuracy, balanced accuracy, macro-F1, AUROC)."""
    from biomedclip.evaluate.prompts import load_prompt_set
    from biomedclip.evaluate.tasks import run_zeroshot

    try:
        prompt_set = load_prompt_set(prompts) if prompts else None
        if class_names or prompts_from_run:
            prompt_set = _mapped_prompts(kwargs["dataset"], kwargs["split"], class_names, prompts_from_run, prompt_set)
    except (DatasetError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    _run(run_zeroshot, kwargs, prompts=prompt_set)


def _mapped_prompts(dataset: str, split: str, class_names: str | None, run: str | None, given):
    """Class texts from the dataset's folder names through ``--class-names``, templates from ``--prompts-from-run``
    (else from ``--prompts``, else the generic ones)."""
    from biomedclip.classnames import class_texts, load_class_names
    from biomedclip.evaluate.datasets import load_dataset
    from biomedclip.evaluate.prompts import DEFAULT_TEMPLATES, PromptSet
    from biomedclip.train.prompts import run_templates

    folders = load_dataset(dataset, split).classnames
    names = load_class_names(class_names) if class_names else None
    classnames = class_texts(folders, names) if names is not None or given is None else given.classnames
    templates = run_templates(run) if run else (given.templates if given else DEFAULT_TEMPLATES)
    return PromptSet(classnames, tuple(templates))


@eval_group.command("retrieval")
@_common
@click.option("--no-dedupe", is_flag=True, help="Keep duplicate captions as separate texts (one-to-one pairs).")
@click.option("--chunk", type=int, default=4096, show_default=True, help="Query rows per similarity tile.")
def retrieval_command(no_dedupe: bool, chunk: int, **kwargs) -> None:
    """Image->text and text->image Recall@1/5/10 over the whole split (exact search in tiles)."""
    from biomedclip.evaluate.retrieval import RetrievalConfig
    from biomedclip.evaluate.tasks import run_retrieval

    _run(run_retrieval, kwargs, config=RetrievalConfig(dedupe_captions=not no_dedupe, query_chunk=chunk))


@eval_group.command("linear-probe")
@_common
@click.option("--fractions", default="0.01,0.1,1.0", show_default=True, help="Training label fractions.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds of the label subsets.")
def linear_probe_command(fractions: str, seeds: str, **kwargs) -> None:
    """Logistic regression on frozen features; C swept on val; 1%/10%/100% labels; mean ± std over seeds."""
    from biomedclip.evaluate.linear_probe import LinearProbeConfig
    from biomedclip.evaluate.tasks import run_linear_probe

    try:
        config = LinearProbeConfig(
            fractions=tuple(float(f) for f in fractions.split(",")), seeds=tuple(int(s) for s in seeds.split(","))
        )
    except ValueError as error:
        raise click.BadParameter(f"comma-separated numbers expected ({error})") from error
    _run(run_linear_probe, kwargs, config=config)


@eval_group.command("vqa")
@_common
@click.option("--epochs", type=int, default=30, show_default=True, help="Fusion training epochs.")
@click.option("--hidden", type=int, default=256, show_default=True, help="Fusion width.")
@click.option("--layers", type=int, default=2, show_default=True, help="Co-attention layers.")
@click.option("--lr", type=float, default=2e-4, show_default=True)
def vqa_command(epochs: int, hidden: int, layers: int, lr: float, **kwargs) -> None:
    """Train a co-attention fusion on frozen token features (train split); closed/open/overall accuracy."""
    from biomedclip.evaluate.vqa import VQAConfig, run_vqa

    config = VQAConfig(epochs=epochs, hidden=hidden, layers=layers, lr=lr, seed=kwargs["seed"])
    _run(run_vqa, kwargs, config=config)


@eval_group.command("report")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Report folder.")
def report_command(inputs: tuple[str, ...], out_dir: str) -> None:
    """Merge result JSONs (files or folders) into report.md, results.csv and PNG plots."""
    from biomedclip.evaluate.report import write_report
    from biomedclip.evaluate.results import read_results

    try:
        results = read_results(list(inputs))
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    if not results:
        raise click.ClickException(f"no *.result.json files in {', '.join(inputs)}")
    written = write_report(results, Path(out_dir))
    click.echo(f"merged {len(results)} results into {', '.join(str(p) for p in written)}")
