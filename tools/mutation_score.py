"""Mutation score per core module, from the results of ``mutmut run`` (see ``make mutation``, docs/MUTATION.md).

``SCOPE`` is the one list of what is mutated: per module, the mutmut names (``fnmatch`` patterns over
``package.module.x_function__mutmut_N``) of its functions in scope. ``--patterns`` prints them for ``mutmut run``;
without it the script reads ``mutmut results --all true`` and prints killed/total per module and overall.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

JATS_CAPTION_FUNCTIONS = ("xǁ_Outputǁ*", "x__normalise", "x__render", "x__render_children", "x__last_char",
                          "x__is_citation", "x_caption_text", "x__depth")  # fmt: skip
SCOPE: dict[str, tuple[str, ...]] = {
    "train/loss.py": ("biomedclip.train.loss.*",),
    "corpus/dedup.py": ("biomedclip.corpus.dedup.*",),
    "corpus/filters.py": ("biomedclip.corpus.filters.*",),
    "corpus/split.py": ("biomedclip.corpus.split.*",),
    "evaluate/retrieval.py": ("biomedclip.evaluate.retrieval.*",),
    "evaluate/metrics.py": ("biomedclip.evaluate.metrics.*",),
    "zero-shot scoring": (
        "biomedclip.model.inference.x_build_zeroshot_classifier__mutmut_*",
        "biomedclip.model.inference.x_zeroshot_*",
        "biomedclip.evaluate.zeroshot.x_evaluate_zeroshot__mutmut_*",
    ),
    "corpus/jats.py captions": tuple(f"biomedclip.corpus.jats.{name}__mutmut_*" for name in JATS_CAPTION_FUNCTIONS),
    "model/tokenizer.py": ("biomedclip.model.tokenizer.*",),
}
KILLED = {"killed", "timeout", "caught by type check"}  # mutmut's own score counts a timeout as killed


def module_of(mutant: str) -> str | None:
    """The ``SCOPE`` entry that ``mutant`` belongs to, or None."""
    return next((module for module, patterns in SCOPE.items() if any(fnmatch(mutant, p) for p in patterns)), None)


def read_results(lines: list[str]) -> dict[str, Counter]:
    """``{module: Counter(status)}`` from the ``name: status`` lines of ``mutmut results --all true``."""
    counts: dict[str, Counter] = {module: Counter() for module in SCOPE}
    for line in lines:
        name, sep, status = line.strip().partition(": ")
        module = module_of(name) if sep else None
        if module is not None:
            counts[module][status] += 1
    return counts


def score_table(counts: dict[str, Counter]) -> list[str]:
    """Markdown rows: module, killed, total run, score, and how many mutants were not run."""
    rows = ["| module | killed | total | score | not run |", "|---|---:|---:|---:|---:|"]
    all_killed = all_total = 0
    for module, statuses in counts.items():
        not_run = statuses["not checked"]
        total = sum(statuses.values()) - not_run
        killed = sum(statuses[s] for s in KILLED)
        all_killed, all_total = all_killed + killed, all_total + total
        rows.append(f"| {module} | {killed} | {total} | {_percent(killed, total)} | {not_run} |")
    rows.append(f"| **all** | {all_killed} | {all_total} | {_percent(all_killed, all_total)} | |")
    return rows


def _percent(killed: int, total: int) -> str:
    return f"{100 * killed / total:.1f}%" if total else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", action="store_true", help="print the mutant-name patterns for `mutmut run`")
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants of the scope too")
    args = parser.parse_args()
    if args.patterns:
        print(" ".join(p for patterns in SCOPE.values() for p in patterns))  # Makefile: split, globbing off
        return 0
    mutmut = Path(sys.executable).with_name("mutmut")
    lines = subprocess.run([mutmut, "results", "--all", "true"], capture_output=True, text=True, check=True).stdout
    lines = lines.splitlines()
    print("\n".join(score_table(read_results(lines))))
    if args.survivors:
        for line in lines:
            name, _, status = line.strip().partition(": ")
            if module_of(name) and status not in KILLED | {"not checked"}:
                print(f"{status}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
