"""Every registered command follows docs/CLI.md: option names, short flags, defaults and exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from biomedclip.cli import COMMANDS, main
from biomedclip.model.config import RELEASED_CHECKPOINT

# concept -> (long name, short flag, parameter names that mean it). An option that names the concept by its long
# name or by its parameter must carry both flags.
CONVENTIONS = {
    "model": ("--model", "-m", {"model", "model_spec", "model_name"}),
    "shards": ("--shards", "-s", {"shards", "shard", "shard_spec"}),
    "dataset": ("--dataset", "-d", {"dataset", "dataset_spec"}),
    "out": ("--out", "-o", {"out", "out_dir", "out_path", "output", "output_dir"}),
    "config": ("--config", "-c", {"config", "config_path", "config_file"}),
    "workers": ("--workers", "-w", {"workers", "num_workers"}),
}
# Commands where a default model would be a guess: the model must be named.
MODEL_REQUIRED = {"eval zeroshot", "eval retrieval", "eval linear-probe", "eval vqa", "eval paper", "model export"}


def _default(param: click.Parameter) -> object:
    """The declared default; an option declared without one (click 8.3's ``UNSET`` sentinel) reads as None."""
    return None if param.default is getattr(click.core, "UNSET", None) else param.default


def _walk(command: click.Command, path: tuple[str, ...], ctx: click.Context):
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            yield from _walk(command.get_command(ctx, name), (*path, name), ctx)
    else:
        yield " ".join(path), command


def all_commands() -> dict[str, click.Command]:
    ctx = click.Context(main)
    commands = {}
    for name in COMMANDS:
        commands.update(_walk(main.get_command(ctx, name), (name,), ctx))
    return commands


COMMAND_NAMES = sorted(all_commands())


def test_every_group_is_walked():
    expected = {"corpus build", "corpus figures", "model list", "model export", "model train-tokenizer", "serve",
                "eval zeroshot", "eval retrieval", "eval linear-probe", "eval vqa", "eval report", "eval paper",
                "index build", "index search", "embed", "classify", "demo", "train"}  # fmt: skip
    assert expected <= set(COMMAND_NAMES)


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_conventional_options_have_their_names_and_short_flags(name):
    command = all_commands()[name]
    for param in command.params:
        names = set(param.opts) | set(param.secondary_opts)
        for concept, (long, short, dests) in CONVENTIONS.items():
            if long in names or param.name in dests:
                assert isinstance(param, click.Option), f"{name}: {concept} is positional ({param.name}); use {long}"
                assert long in param.opts and short in param.opts, f"{name}: {param.opts} should be {long}/{short}"
        if "--device" in names:
            assert param.opts == ["--device"], f"{name}: --device takes no short flag ({param.opts})"
            assert _default(param) in ("auto", None), f"{name}: --device defaults to {param.default!r}"


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_a_default_model_is_only_the_released_checkpoint(name):
    for param in all_commands()[name].params:
        if "--model" in param.opts:
            if name in MODEL_REQUIRED:
                assert param.required, f"{name}: --model must be required"
            else:
                assert _default(param) in (None, RELEASED_CHECKPOINT), f"{name}: --model defaults to {param.default!r}"


def test_no_short_flag_means_two_things():
    meanings: dict[str, set[str]] = defaultdict(set)
    ctx = click.Context(main)
    for command in all_commands().values():
        params = [*command.params, command.get_help_option(ctx)]
        for param in (p for p in params if isinstance(p, click.Option)):
            flags = [*param.opts, *param.secondary_opts]
            longs = sorted(f for f in flags if f.startswith("--")) or ["(none)"]
            for short in (f for f in flags if not f.startswith("--")):
                meanings[short].add(longs[0])
    clashes = {short: longs for short, longs in meanings.items() if len(longs) > 1}
    assert not clashes, clashes
    for concept, (long, short, _) in CONVENTIONS.items():
        assert meanings.get(short, {long}) == {long}, concept


def test_workers_defaults_are_not_computed_at_import():
    """Import every command with a 977-CPU machine faked: no --workers default may have read it."""
    code = (
        "import os\n"
        "os.cpu_count = lambda: 977\n"
        "os.sched_getaffinity = lambda pid: set(range(977))\n"
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_cli_conventions import _default, all_commands\n"
        "for name, command in all_commands().items():\n"
        "    for param in command.params:\n"
        "        if '--workers' in param.opts:\n"
        "            print(name, _default(param))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    defaults = dict(line.rsplit(" ", 1) for line in out.splitlines())
    assert defaults["corpus build"] == "None"  # computed when the command runs
    assert "977" not in defaults.values()


def _invoke(*args) -> click.testing.Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _assert_one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    for word in words:
        assert word in error_lines[0], result.output


@pytest.fixture(scope="module")
def image(shared_fixtures):
    return sorted((shared_fixtures / "images" / "bccd" / "JPEGImages").glob("*.jpg"))[0]


@pytest.mark.parametrize("device", ["cuda:99", "tpu"])
@pytest.mark.parametrize(
    "args",
    [
        ["embed", "{image}", "-m", "tiny", "-o", "{tmp}/e.parquet"],
        ["classify", "{image}", "-m", "tiny", "--labels", "a,b"],
        ["index", "build", "-m", "tiny", "-s", "{tmp}", "-o", "{tmp}/index"],
        ["index", "search", "{tmp}", "a query"],
        ["serve", "-m", "tiny"],
        ["eval", "zeroshot", "-m", "tiny", "-d", "{tmp}", "-o", "{tmp}/out"],
        ["eval", "paper", "-m", "tiny", "--data-root", "{tmp}", "-o", "{tmp}/out"],
    ],
    ids=lambda args: " ".join(a for a in args[:2] if a[0] not in "{-"),
)
def test_an_absent_device_is_an_input_error_everywhere(args, device, image, tmp_path):
    filled = [a.format(image=image, tmp=tmp_path) for a in args]
    _assert_one_line_error(_invoke(*filled, "--device", device), 2, repr(device))


@pytest.mark.parametrize(
    "args",
    [
        ["corpus", "figures", "{missing}", "-o", "{tmp}/f.jsonl"],
        ["corpus", "build", "--source", "{missing}", "-o", "{tmp}/corpus", "-w", "0"],
        ["model", "train-tokenizer", "-s", "{missing}/train-*.tar", "-o", "{tmp}/vocab"],
        ["index", "build", "-m", "tiny", "--device", "cpu", "-s", "{missing}", "-o", "{tmp}/index"],
        ["eval", "zeroshot", "-m", "tiny", "--device", "cpu", "-d", "{missing}", "-o", "{tmp}/out"],
        ["eval", "report", "{missing}", "-o", "{tmp}/report"],
        ["embed", "{missing}", "-o", "{tmp}/e.parquet"],
        ["serve", "--index", "{missing}"],
    ],
    ids=lambda args: " ".join(a for a in args[:2] if a[0] not in "{-"),
)
def test_a_missing_input_is_exit_2_with_one_line(args, tmp_path):
    missing = tmp_path / "no-such-input"
    result = _invoke(*[a.format(missing=missing, tmp=tmp_path) for a in args])
    _assert_one_line_error(result, 2, "no-such-input")


@pytest.mark.parametrize(
    "args",
    [
        ["embed", "{image}", "-o", "{tmp}/e.parquet"],
        ["classify", "{image}", "--labels", "a,b"],
        ["index", "build", "-s", "{tmp}", "-o", "{tmp}/index"],
        ["eval", "zeroshot", "-d", "{tmp}", "-o", "{tmp}/out"],
        ["model", "export", "--format", "onnx", "-o", "{tmp}/export"],
    ],
    ids=lambda args: " ".join(a for a in args[:2] if a[0] not in "{-"),
)
def test_a_model_that_names_nothing_is_exit_2_everywhere(args, image, tmp_path):
    (tmp_path / "train-000000.tar").touch()  # a shard spec that names a file, so the model is what fails
    filled = [a.format(image=image, tmp=tmp_path) for a in args]
    result = _invoke(*filled, "-m", "no-such-model", *(["--device", "cpu"] if args[0] != "model" else []))
    _assert_one_line_error(result, 2, "no-such-model")


def test_a_folder_without_results_is_exit_2(tmp_path):
    _assert_one_line_error(_invoke("eval", "report", tmp_path, "-o", tmp_path / "report"), 2, "no *.result.json")
