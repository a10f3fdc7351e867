"""The ``biomedclip`` command: one entry point whose command groups live beside the code they drive.

Groups are imported lazily: ``biomedclip --help`` lists them from :data:`SUMMARIES` without importing any, and
a group's heavy dependencies (torch, ray, faiss) load only when that group runs.
"""

from __future__ import annotations

import importlib

import click

from biomedclip import __version__

# name -> "module:attribute" of a click command or group. A group is listed once it does something real.
COMMANDS: dict[str, str] = {
    "classify": "biomedclip.serve.cli:classify",
    "corpus": "biomedclip.corpus.cli:corpus",
    "demo": "biomedclip.demo_cli:demo",
    "embed": "biomedclip.serve.cli:embed",
    "eval": "biomedclip.evaluate.cli:eval_group",
    "index": "biomedclip.serve.cli:index",
    "model": "biomedclip.model.cli:model",
    "panels": "biomedclip.panels.cli:panels",
    "serve": "biomedclip.serve.cli:serve",
    "train": "biomedclip.train.cli:train",
}

# name -> the first line of the command's docstring, shown by ``biomedclip --help`` without importing the
# command (tests/test_cli.py checks that each one matches its command).
SUMMARIES: dict[str, str] = {
    "classify": "Classify IMAGES zero-shot over --labels and print each image's class probabilities.",
    "corpus": "Build the PMC figure-caption corpus.",
    "demo": "Corpus -> train -> evaluate -> report -> search index on the bundled real sample, on the CPU.",
    "embed": "Embed IMAGES (and --text strings) into a Parquet file, or corpus --shards into a vector folder.",
    "eval": "Evaluate a model on local datasets: zero-shot, retrieval, linear probe, VQA; merge results into a report.",
    "index": "Build and query a FAISS index of figures from corpus shards.",
    "model": "The BiomedCLIP model: trained checkpoints and architectures, tokenizer training, export.",
    "panels": "Compound figures: panel boxes, letters and subcaptions (detect, subcaptions, eval).",
    "serve": "Run the HTTP service and web page (search, classify, embed; OpenAPI docs at /docs).",
    "train": "Train BiomedCLIP contrastively on WebDataset shards.",
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module only when it is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with their summaries, importing only those that have none in :data:`SUMMARIES`."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            summary = SUMMARIES.get(name)
            if summary is None:
                command = self.get_command(ctx, name)
                summary = command.get_short_help_str(limit) if command is not None else ""
            rows.append((name, click.Command(name, help=summary).get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; a ``BiomedclipError`` becomes one ``Error:`` line and its exit code, no traceback."""
        from biomedclip.errors import BiomedclipError

        try:
            return super().invoke(ctx)
        except BiomedclipError as error:
            failure = click.ClickException(str(error))
            failure.exit_code = error.exit_code
            raise failure from error


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="biomedclip")
def main() -> None:
    """BiomedCLIP: build the PMC figure-caption corpus, train, evaluate and serve the model."""
