"""``biomedclip eval``: zero-shot, retrieval, linear probe and VQA runs, and the merged report."""

from __future__ import annotations

import time
from pathlib import Path

import click

from biomedclip.cli_options import device_option, loading_model, model_option, user_errors, workers_option
from biomedclip.errors import InputError
from biomedclip.evaluate.datasets import list_datasets

SPLIT = click.Choice(["train", "val", "test", "all"])
MODEL_HELP = "Built-in name, local-dir:PATH, hf-hub:ORG/NAME."


def _ratios(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float, float]:
    from biomedclip.labelled_folders import HashSplit

    try:
        split = HashSplit.parse(value)
    except InputError as error:
        raise click.BadParameter(str(error)) from error
    return split.train, split.val, split.test


def _common(function):
    """Options every task shares."""
    options = [
        model_option(required=True, show_default=False, help=MODEL_HELP),
        click.option("--dataset", "-d", required=True, help=f"NAME:PATH ({', '.join(list_datasets())}) or a path."),
        click.option(
            "--split",
            type=SPLIT,
            default=None,
            help="Split to score; 'all' = every image. Default: all for zero-shot on LC25000 (no official split), "
            "else test.",
        ),
        click.option(
            "--split-ratios",
            default="0.7,0.1,0.2",
            show_default=True,
            callback=_ratios,
            help="TRAIN,VAL,TEST shares of the hash split of folders without split folders; use the values given "
            "to 'corpus build' for the same folder.",
        ),
        click.option(
            "--train-catalog",
            type=click.Path(exists=True),
            default=None,
            help="A training corpus (its OUT folder or OUT/catalog): report scored images that are training images.",
        ),
        click.option(
            "--train-overlap",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="The rows 'corpus overlap' wrote for the training corpus and this dataset: report the scored "
            "images it found there (exact or near copies).",
        ),
        click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), required=True, help="Result folder."),
        click.option("--batch-size", type=int, default=64, show_default=True),
        device_option,
        workers_option(default=0, help="Image-loading processes; 0 loads in this process."),
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
        split_ratios=kwargs.get("split_ratios", RunSettings.split_ratios),
        train_catalog=kwargs.get("train_catalog"),
        train_overlap=kwargs.get("train_overlap"),
    )


def _run(task, kwargs: dict, **task_kwargs) -> None:
    """Load the model, run ``task``, write the JSON and print a one-line summary; bad input -> clean error."""
    from biomedclip.evaluate.leakage import leakage_line
    from biomedclip.evaluate.models import load_model
    from biomedclip.evaluate.results import counts_line, leakage_warning, write_result

    start = time.perf_counter()
    if kwargs["split"]:  # else each task's default split
        task_kwargs["split"] = kwargs["split"]
    with loading_model(kwargs["model"]):
        model = load_model(kwargs["model"], kwargs["device"])
    with user_errors():
        result = task(model, kwargs["dataset"], settings=_settings(kwargs), **task_kwargs)
    path = write_result(result, kwargs["out_dir"])
    headline = _headline(result)
    click.echo(
        f"{result['task']} {result['dataset']} [{result['split']}]: {headline} ({time.perf_counter() - start:.1f}s)"
    )
    if counts_line(result):
        click.echo(f"scored {counts_line(result)}")
    if leakage_warning(result):
        click.secho(leakage_warning(result), fg="red", bold=True, err=True)
    click.echo(leakage_line(result))
    for warning in result["metrics"].get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {path}")


def _headline(result: dict) -> str:
    metrics = result["metrics"]
    if result["task"] == "linear_probe":
        seeds = len(result["settings"].get("linear_probe", {}).get("seeds", [])) or "?"
        chance = metrics.get("seeds_at_chance", {})
        return ", ".join(
            f"{f}: acc {v['accuracy']['mean']:.3f}±{v['accuracy']['std']:.3f} "
            f"(range {v['accuracy']['min']:.3f}-{v['accuracy']['max']:.3f} over {seeds} seeds"
            f"{', ' + str(len(chance[f])) + ' at chance' if chance.get(f) else ''})"
            for f, v in metrics["summary"].items()
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
    except ValueError as error:  # DatasetError and bad class-name or run files: an input error, exit 2
        raise InputError(str(error)) from error
    _run(run_zeroshot, kwargs, prompts=prompt_set)


def _mapped_prompts(dataset: str, split: str, class_names: str | None, run: str | None, given):
    """Class texts from the dataset's folder names through ``--class-names``, templates from ``--prompts-from-run``
    (else from ``--prompts``, else the generic ones)."""
    from biomedclip.classnames import class_texts, load_class_names
    from biomedclip.evaluate.datasets import default_split, load_dataset
    from biomedclip.evaluate.prompts import DEFAULT_TEMPLATES, PromptSet
    from biomedclip.train.prompts import run_templates

    folders = load_dataset(dataset, split or default_split(dataset, "zeroshot")).classnames
    names = load_class_names(class_names) if class_names else None
    classnames = class_texts(folders, names) if names is not None or given is None else given.classnames
    templates = run_templates(run) if run else (given.templates if given else DEFAULT_TEMPLATES)
    return PromptSet(classnames, tuple(templates))


@eval_group.command("retrieval")
@_common
@click.option(
    "--merge-captions",
    is_flag=True,
    help="Merge identical captions into one text; any image carrying it counts (default: one-to-one, as the paper).",
)
@click.option("--chunk", type=int, default=4096, show_default=True, help="Query rows per similarity tile.")
@click.option(
    "--min-tokens",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Score only pairs whose caption has at least this many WordPiece tokens (e.g. 257: past a 256-token "
    "context), counted as the corpus report counts them.",
)
def retrieval_command(merge_captions: bool, chunk: int, min_tokens: int, **kwargs) -> None:
    """Image->text and text->image Recall@1/5/10 over the whole split, one-to-one (exact search in tiles)."""
    from biomedclip.evaluate.retrieval import RetrievalConfig
    from biomedclip.evaluate.tasks import run_retrieval

    config = RetrievalConfig(merge_captions=merge_captions, query_chunk=chunk, min_tokens=min_tokens)
    _run(run_retrieval, kwargs, config=config)


@eval_group.command("linear-probe")
@_common
@click.option("--fractions", default="0.01,0.1,1.0", show_default=True, help="Training label fractions.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds of the label subsets.")
@click.option(
    "--protocol",
    type=click.Choice(["elevater", "logistic"]),
    default="elevater",
    show_default=True,
    help="elevater: SGD head, lr x weight-decay search on a 20% class-balanced cut, refit (the paper's); "
    "logistic: scikit-learn logistic regression, C swept on val (faster).",
)
@click.option("--probe-epochs", type=int, default=100, show_default=True, help="SGD epochs per fit (elevater).")
def linear_probe_command(fractions: str, seeds: str, protocol: str, probe_epochs: int, **kwargs) -> None:
    """Linear probe on frozen features at 1%/10%/100% of the training labels; mean ± std over seeds."""
    from biomedclip.evaluate.linear_probe import LinearProbeConfig
    from biomedclip.evaluate.tasks import run_linear_probe

    try:
        config = LinearProbeConfig(
            protocol=protocol,
            fractions=tuple(float(f) for f in fractions.split(",")),
            seeds=tuple(int(s) for s in seeds.split(",")),
            epochs=probe_epochs,
            device=kwargs["device"],
        )
    except ValueError as error:
        raise click.BadParameter(f"comma-separated numbers expected ({error})") from error
    _run(run_linear_probe, kwargs, config=config)


@eval_group.command("vqa")
@_common
@click.option(
    "--head",
    type=click.Choice(["meter", "light"]),
    default="meter",
    show_default=True,
    help="meter: fine-tune both encoders with 6 x 768 co-attention layers, BCE on soft scores (the paper's); "
    "light: frozen encoders, 2 x 256 layers, cross-entropy (fast).",
)
@click.option("--epochs", type=int, default=30, show_default=True, help="Training epochs.")
@click.option("--hidden", type=int, default=None, help="Fusion width [meter 768, light 256].")
@click.option("--layers", type=int, default=None, help="Co-attention layers [meter 6, light 2].")
@click.option("--heads", "attention_heads", type=int, default=None, help="Attention heads [meter 12, light 4].")
@click.option("--lr", type=float, default=None, help="Learning rate [meter 1e-5 encoders (x10 fusion), light 2e-4].")
def vqa_command(
    head: str,
    epochs: int,
    hidden: int | None,
    layers: int | None,
    attention_heads: int | None,
    lr: float | None,
    **kwargs,
) -> None:
    """Train a VQA model on the train split; closed/open/overall accuracy on --split."""
    from biomedclip.evaluate.vqa import VQAConfig, run_vqa

    try:
        config = VQAConfig.for_head(
            head, epochs=epochs, hidden=hidden, layers=layers, heads=attention_heads, lr=lr, seed=kwargs["seed"]
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
    _run(run_vqa, kwargs, config=config)


@eval_group.command("paper")
@model_option(required=True, show_default=False, help=MODEL_HELP)
@click.option(
    "--data-root",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder with pcam/, lc25000/, tcga_til/, rsna_pneumonia/, vqa_rad/, slake/, pmc15m_test/ (any subset).",
)
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), required=True, help="Report folder.")
@click.option("--tasks", default="zeroshot,linear_probe,retrieval,vqa", show_default=True, help="Tasks to run.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@device_option
@workers_option(default=0, help="Image-loading processes; 0 loads in this process.")
@click.option("--max-items", type=int, default=None, help="Score a seeded random subset of each split (a quick look).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Embedding cache folder.")
@click.option(
    "--train-catalog",
    type=click.Path(exists=True),
    default=None,
    help="A training corpus (its OUT folder or OUT/catalog): report scored images that are training images.",
)
@click.option("--probe-epochs", type=int, default=100, show_default=True, help="Linear-probe SGD epochs per fit.")
@click.option("--probe-seeds", default="0,1,2", show_default=True, help="Seeds of the linear-probe label subsets.")
@click.option("--vqa-head", type=click.Choice(["meter", "light"]), default="meter", show_default=True)
@click.option("--vqa-epochs", type=int, default=30, show_default=True)
@click.option("--vqa-hidden", type=int, default=None, help="VQA fusion width [meter 768, light 256].")
@click.option("--vqa-layers", type=int, default=None, help="VQA co-attention layers [meter 6, light 2].")
@click.option("--vqa-heads", type=int, default=None, help="VQA attention heads [meter 12, light 4].")
def paper_command(
    model: str, data_root: str, out_dir: str, tasks: str, probe_epochs: int, probe_seeds: str, **kwargs
) -> None:
    """Run every paper task whose data is under --data-root; write our numbers beside the paper's."""
    from biomedclip.evaluate.linear_probe import LinearProbeConfig
    from biomedclip.evaluate.models import load_model
    from biomedclip.evaluate.paper import PaperSettings, run_paper
    from biomedclip.evaluate.vqa import VQAConfig

    try:
        seeds = tuple(int(s) for s in probe_seeds.split(","))
    except ValueError as error:
        raise InputError(f"--probe-seeds: comma-separated integers expected, got {probe_seeds!r}") from error
    vqa = {k: kwargs.pop(f"vqa_{k}") for k in ("head", "epochs", "hidden", "layers", "heads")}
    device = kwargs["device"]
    settings = PaperSettings(
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()),
        run=_settings(kwargs),
        linear_probe=LinearProbeConfig(seeds=seeds, epochs=probe_epochs, device=device),
        vqa=VQAConfig.for_head(vqa.pop("head"), seed=kwargs["seed"], **vqa),
    )
    start = time.perf_counter()
    with loading_model(model):
        loaded = load_model(model, device)
    report = run_paper(loaded, data_root, out_dir, settings)
    for run in report["runs"]:
        if run["status"] != "ran":
            click.echo(f"{run['task']} {run['dataset']}: {run['status']} ({run['reason']})")
        for warning in run.get("warnings", []):
            click.echo(f"warning: {run['task']} {run['dataset']}: {warning}", err=True)
    ran = sum(run["status"] == "ran" for run in report["runs"])
    click.echo(f"ran {ran} of {len(report['runs'])} paper tasks in {time.perf_counter() - start:.1f}s")
    click.echo(f"wrote {Path(out_dir) / 'paper_report.md'} and paper_report.json")


@eval_group.command("report")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), required=True, help="Report folder.")
def report_command(inputs: tuple[str, ...], out_dir: str) -> None:
    """Merge result JSONs (files or folders) into report.md, results.csv and PNG plots."""
    from biomedclip.evaluate.report import write_report
    from biomedclip.evaluate.results import read_results

    with user_errors():
        results = read_results(list(inputs))
    if not results:
        raise InputError(f"no *.result.json files in {', '.join(inputs)}")
    written = write_report(results, Path(out_dir))
    click.echo(f"merged {len(results)} results into {', '.join(str(p) for p in written)}")
