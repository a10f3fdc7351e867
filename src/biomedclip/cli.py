"""The ``biomedclip`` command: one entry point whose command groups live beside the code they drive.

Groups are imported lazily, so ``biomedclip --help`` stays fast and a group's heavy dependencies
(torch, ray, faiss) load only when that group runs.
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
    "serve": "biomedclip.serve.cli:serve",
    "train": "biomedclip.train.cli:train",
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
