from biomedclip import __version__
from biomedclip.cli import COMMANDS


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
