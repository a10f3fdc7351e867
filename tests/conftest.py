"""Shared test fixtures: the read-only real data in ../shared and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = Path(os.environ.get("BIOMEDCLIP_SHARED", REPO_ROOT.parent / "shared")) / "fixtures"


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """The real public data in ../shared/fixtures; a test that needs it fails loudly when it is missing."""
    if not (SHARED_FIXTURES / "PROVENANCE.tsv").is_file():
        pytest.fail(
            f"shared fixtures not found at {SHARED_FIXTURES}: clone the repo with ../shared beside it "
            "or set BIOMEDCLIP_SHARED to the shared/ folder",
            pytrace=False,
        )
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def run_cli():
    """Run ``python -m biomedclip ARGS...`` in a subprocess and return the completed process."""

    def run(*args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "biomedclip", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"biomedclip {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials and region, as a local S3-compatible server takes them."""
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
        monkeypatch.setenv(name, value)
