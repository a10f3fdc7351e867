import subprocess
import sys

import click

from biomedclip import __version__
from biomedclip.cli import COMMANDS, SUMMARIES, LazyGroup, main


def test_help_lists_every_registered_group(run_cli):
    out = run_cli("--help").stdout
    assert "Usage: python -m biomedclip" in out
    for name in COMMANDS:
        assert name in out


def test_version(run_cli):
    assert __version__ in run_cli("--version").stdout


def test_unknown_command_fails_with_message(run_cli):
    proc = run_cli("no-such-command", check=False)
    assert proc.returncode == 2
    assert "No such command" in proc.stderr


def test_shared_fixtures_have_provenance(shared_fixtures):
    header = (shared_fixtures / "PROVENANCE.tsv").read_text().splitlines()[0].split("\t")
    assert header[:5] == ["file", "source_repo", "source_path", "commit", "license"]


HEAVY_MODULES = ("torch", "numpy", "faiss", "PIL", "pyarrow", "pandas", "fastapi", "open_clip", "transformers", "ray")


def test_import_and_top_level_help_load_no_heavy_module():
    code = (
        "import sys, biomedclip.cli\n"
        "imported = set(sys.modules)\n"
        "try:\n"
        "    biomedclip.cli.main(['--help'], prog_name='biomedclip')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in imported), "
        f"sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Commands:" in out
    assert out.strip().splitlines()[-1] == "[] []"


def test_help_summaries_match_the_commands_docstrings():
    for name in COMMANDS:
        command = LazyGroup().get_command(click.Context(main), name)
        assert SUMMARIES[name] == command.get_short_help_str(limit=10_000), name
