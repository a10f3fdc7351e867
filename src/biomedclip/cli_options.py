"""The options every command group shares, declared once as ``docs/CLI.md`` sets them out.

``--model/-m``, ``--device`` and ``--workers/-w`` mean the same everywhere; ``tests/test_cli_conventions.py``
walks every registered command to check the names and short flags mechanically. Light: torch is imported only
when a ``--device`` value is checked, that is when a command runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import click

from biomedclip.errors import BiomedclipError, InputError, RunError

MODEL_HELP = "Model: hf-hub:ORG/NAME, local-dir:PATH, a checkpoint folder or weight file, or a registry architecture."
DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps; asking for an absent device is an error."


def model_option(
    *, default: str | None = None, required: bool = False, help: str = MODEL_HELP, show_default: bool | str = True
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--model/-m MODEL`` (the command receives ``model``): required, or a default given by the command."""
    return click.option(
        "--model", "-m", "model", default=default, required=required, show_default=show_default, help=help
    )


def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The device as ``torch.device`` spells it; an unknown or absent one raises ``InputError`` (exit 2)."""
    from biomedclip.model.inference import select_device

    return str(select_device(value))


def device_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--device DEVICE`` (default ``auto``), checked by :func:`biomedclip.model.inference.select_device`."""
    return click.option("--device", default="auto", show_default=True, callback=_check_device, help=DEVICE_HELP)(
        command
    )


def workers_option(
    *, default: int | None, help: str, show_default: bool | str = True
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--workers/-w N``; ``default=None`` lets the command compute its default when it runs, never at import."""
    return click.option(
        "--workers", "-w", type=click.IntRange(min=0), default=default, show_default=show_default, help=help
    )


@contextlib.contextmanager
def loading_model(name: str) -> Iterator[None]:
    """Turn a model string that loads nothing (an unknown name, a missing folder or hub entry) into ``InputError``."""
    try:
        yield
    except BiomedclipError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"cannot load model {name!r}: {error}") from error


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Around a command's work: a missing file becomes an ``InputError`` (exit 2), a ValueError about the data a
    ``RunError`` (exit 1); the project's own errors pass as they are."""
    try:
        yield
    except BiomedclipError:
        raise
    except FileNotFoundError as error:
        raise InputError(str(error)) from error
    except ValueError as error:
        raise RunError(str(error)) from error
