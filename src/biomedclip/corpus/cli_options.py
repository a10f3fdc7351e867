"""Options shared by the corpus commands: article selection, and the build settings derived from their dataclasses.

``settings_options(roots)`` turns every leaf field of the settings dataclasses (``BuildConfig`` and the sources'
``SourceLimits``) into a command-line option, so a setting added to a dataclass appears on the command line, in
``--help`` and in ``--config`` files without touching the CLI. A field's option is named by the last two parts
of its path, dashes for underscores (``work.image.jpeg_quality`` -> ``--image.jpeg-quality``,
``split.train`` -> ``--split.train``, ``shard_size`` -> ``--shard-size``; a longer suffix when two would
collide); booleans get ``--x/--no-x``. A ``--config/-c`` YAML file holds the same tree as ``build_config.json``
(``{work: {image: {jpeg_quality: 85}}, split: {train: 0.8}, source: {max_member_bytes: ...}}``); options given on
the command line override it, the dataclass defaults fill the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from biomedclip.errors import InputError

PARAM_PREFIX = "setting__"


def selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--license``, ``--include-retracted``, ``--pmcids``, ``--limit`` and ``--endpoint-url`` to a command.

    The command receives them as ``selection`` (a :class:`~biomedclip.corpus.sources.Selection`) and
    ``endpoint_url``.
    """

    @functools.wraps(command)
    def run(*args: Any, license_class: str, include_retracted: bool, pmcids: Path | None, limit: int | None,
            **kwargs: Any) -> Any:  # fmt: skip
        from biomedclip.corpus.sources import Selection, read_pmcids

        wanted = read_pmcids(pmcids) if pmcids is not None else None
        try:
            selection = Selection(license=license_class, include_retracted=include_retracted, pmcids=wanted,
                                  limit=limit)  # fmt: skip
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--license") from error
        return command(*args, selection=selection, **kwargs)

    options = [
        click.option(
            "--license",
            "license_class",
            default="all",
            show_default=True,
            help="Licences of the articles kept, comma-separated: all, a group (commercial = CC0, CC BY, CC BY-SA, "
            "CC BY-ND, public domain; noncommercial = any NC; other) or a licence name (CC BY, CC BY-NC-ND, ...).",
        ),
        click.option("--include-retracted", is_flag=True, help="Keep retracted articles (dropped by default)."),
        click.option(
            "--pmcids",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="Keep only these articles: a file of PMC123 or 123 lines, or PMC's oa_file_list.csv.",
        ),
        click.option("--limit", type=click.IntRange(min=1), help="At most this many articles per source."),
        click.option(
            "--endpoint-url",
            envvar="BIOMEDCLIP_S3_ENDPOINT",
            help="S3-compatible endpoint for s3:// sources (default: AWS).",
        ),
    ]
    for option in reversed(options):
        run = option(run)
    return run


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one), computed when called."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Setting:
    """One leaf field of a settings tree: its path from the root, Python type and default."""

    path: tuple[str, ...]
    kind: type
    optional: bool
    default: Any
    help: str


def _leaf_type(annotation: Any) -> tuple[type, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return inner[0], True
    return annotation, False


def settings_of(roots: dict[str, Any]) -> Iterator[Setting]:
    """Every leaf field below ``roots`` (``{"": BuildConfig(), "source": SourceLimits()}``: "" merges at the top)."""

    def walk(value: Any, path: tuple[str, ...]) -> Iterator[Setting]:
        hints = typing.get_type_hints(type(value))
        for field in dataclasses.fields(value):
            if not field.metadata.get("setting", True):  # set by the program from another setting
                continue
            child = getattr(value, field.name)
            if dataclasses.is_dataclass(child):
                yield from walk(child, (*path, field.name))
            else:
                kind, optional = _leaf_type(hints[field.name])
                yield Setting((*path, field.name), kind, optional, child, _field_help(type(value), field.name))

    for name, value in roots.items():
        yield from walk(value, (name,) if name else ())


def derived_paths(roots: dict[str, Any]) -> set[tuple[str, ...]]:
    """The paths of the fields the program sets from another setting (``metadata={"setting": False}``): no option;
    a config file may hold them (``build_config.json`` does) and they are ignored there."""
    found: set[tuple[str, ...]] = set()

    def walk(value: Any, path: tuple[str, ...]) -> None:
        for field in dataclasses.fields(value):
            child = getattr(value, field.name)
            if not field.metadata.get("setting", True):
                found.add((*path, field.name))
            elif dataclasses.is_dataclass(child):
                walk(child, (*path, field.name))

    for name, value in roots.items():
        walk(value, (name,) if name else ())
    return found


def _field_help(owner: type, name: str) -> str:
    """The field's line in its class docstring's ``Attributes:`` section, else ``Class.field``."""
    for line in (owner.__doc__ or "").splitlines():
        stripped = line.strip()
        if stripped.startswith(f"{name}:"):
            return stripped.split(":", 1)[1].strip()
    return f"{owner.__name__}.{name}"


def option_names(settings: list[Setting]) -> dict[tuple[str, ...], str]:
    """The option name of each setting: its shortest unique path suffix of at least two parts (or the whole path)."""
    names = {}
    for setting in settings:
        size = min(2, len(setting.path))
        while size < len(setting.path) and sum(s.path[-size:] == setting.path[-size:] for s in settings) > 1:
            size += 1
        names[setting.path] = ".".join(setting.path[-size:]).replace("_", "-")
    return names


def _param(path: tuple[str, ...]) -> str:
    return PARAM_PREFIX + "__".join(path)


def _click_type(kind: type) -> Any:
    if typing.get_origin(kind) is typing.Literal:
        return click.Choice([str(choice) for choice in typing.get_args(kind)])
    return {int: click.INT, float: click.FLOAT, str: click.STRING}.get(kind, click.STRING)


def settings_options(roots: dict[str, Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--config/-c`` and one option per setting of ``roots``; the command receives ``settings``.

    ``settings`` is a nested dict (the tree of ``roots``) of the values given by the config file and the
    options, with defaults for the rest; ``build_settings`` turns a part of it into its dataclass.
    """
    settings = list(settings_of(roots))
    names = option_names(settings)
    derived = derived_paths(roots)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def run(*args: Any, config_file: Path | None, **kwargs: Any) -> Any:
            given = {key: kwargs.pop(key) for key in list(kwargs) if key.startswith(PARAM_PREFIX)}
            tree = _read_config(config_file, settings, derived) if config_file else {}
            for setting in settings:
                value = given[_param(setting.path)]
                if value is not None:
                    _put(tree, setting.path, value)
            return command(*args, settings=tree, **kwargs)

        for setting in reversed(settings):
            name = names[setting.path]
            default = "none" if setting.default is None else str(setting.default)
            if setting.kind is bool:
                declaration = f"--{name}/--no-{name}"
                option = click.option(declaration, _param(setting.path), default=None, show_default=default,
                                      help=setting.help)  # fmt: skip
            else:
                option = click.option(f"--{name}", _param(setting.path), type=_click_type(setting.kind),
                                      default=None, show_default=default, help=setting.help)  # fmt: skip
            run = option(run)
        return click.option(
            "--config",
            "-c",
            "config_file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="YAML file of settings, shaped like OUT/build_config.json; options override it.",
        )(run)

    return decorate


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _read_config(file: Path, settings: list[Setting], derived: set[tuple[str, ...]]) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InputError(f"cannot read the config {file}: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InputError(f"{file}: the top level must be a mapping of settings")
    known = {s.path: s for s in settings}
    tree: dict[str, Any] = {}

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for key, value in node.items():
            here = (*path, str(key))
            if here in derived:
                continue
            if here in known:
                _put(tree, here, _coerce(value, known[here], path_text=".".join(here)))
            elif isinstance(value, dict) and any(p[: len(here)] == here for p in known):
                walk(value, here)
            else:
                valid = ", ".join(".".join(p) for p in known)
                raise InputError(f"{file.name}: unknown setting {'.'.join(here)!r}; valid: {valid}")

    walk(loaded, ())
    return tree


def _coerce(value: Any, setting: Setting, path_text: str) -> Any:
    if value is None and setting.optional:
        return None
    kind = setting.kind
    if typing.get_origin(kind) is typing.Literal:
        if value in typing.get_args(kind):
            return value
        raise InputError(f"setting {path_text} must be one of {', '.join(map(str, typing.get_args(kind)))}, "
                         f"not {value!r}")  # fmt: skip
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise InputError(f"setting {path_text} must be {kind.__name__}, not {value!r}")


def build_settings(cls: type, values: dict[str, Any]) -> Any:
    """An instance of the settings dataclass ``cls`` from a (partial) nested dict; defaults for the rest.

    A value its dataclass refuses (``__post_init__`` raising ``ValueError``) becomes an ``InputError``.
    """
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value = values[field.name]
        kind = hints[field.name]
        kwargs[field.name] = build_settings(kind, value) if dataclasses.is_dataclass(kind) else value
    try:
        return cls(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError) as error:
        raise InputError(f"invalid {cls.__name__} settings {values}: {error}") from error
