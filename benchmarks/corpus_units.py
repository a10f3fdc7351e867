"""CPU cost of ``corpus build --unit both`` over ``--unit figure``, the same sources, one worker, in one run.

    .venv/bin/python benchmarks/corpus_units.py                 # the fixtures' PMC packages (25 figures)
    .venv/bin/python benchmarks/corpus_units.py --copies 20     # plus 20 renamed copies of the two OA tarballs

Each build runs in a fresh output folder; CPU time is this process's and its workers' (``RUSAGE_CHILDREN``, the
build stops its pools before returning). Printed per unit: CPU seconds in all, per figure found, and, with
``--copies``, the marginal CPU per extra figure (the fixed costs of phase 2 dominate a 25-figure build). Baseline:
the ``--unit figure`` build of the same sources. Target (issue 19): ``both`` at most 1.6x the figure build.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = Path(os.environ.get("BIOMEDCLIP_SHARED", REPO.parent / "shared")) / "fixtures" / "pmc" / "packages"
TARBALLS = ("PMC7112410.tar.gz", "PMC7135076.tar.gz")


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run(unit: str, folders: list[Path], out: Path) -> tuple[float, float, int]:
    from biomedclip.corpus.build import BuildConfig, build
    from biomedclip.corpus.sources import open_source

    shutil.rmtree(out, ignore_errors=True)
    cpu, wall = _cpu(), time.perf_counter()
    summary = build([open_source(str(f)) for f in folders], out, BuildConfig(unit=unit), workers=1)
    return _cpu() - cpu, time.perf_counter() - wall, summary.figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=0, help="renamed copies of the two OA tarballs to add")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-units-") as tmp:
        root = Path(tmp)
        copies = root / "copies"
        copies.mkdir()
        for i in range(args.copies):
            for j, name in enumerate(TARBALLS):
                shutil.copy(PACKAGES / "oa_package_tarballs" / name, copies / f"PMC8{j}{i:06d}.tar.gz")
        sets = {"packages": [PACKAGES], **({"packages+copies": [PACKAGES, copies]} if args.copies else {})}
        results = {}
        for label, folders in sets.items():
            for unit in ("figure", "both"):
                cpu, wall, figures = _run(unit, folders, root / f"out-{unit}")
                results[(label, unit)] = (cpu, figures)
                print(f"{label:16s} --unit {unit:6s}: {figures:4d} figures, CPU {cpu:6.2f} s "
                      f"({1000 * cpu / figures:6.1f} ms/figure), wall {wall:5.1f} s")  # fmt: skip
            ratio = results[(label, "both")][0] / results[(label, "figure")][0]
            print(f"{label:16s} both / figure CPU: {ratio:.2f}x (target <= 1.6x)")
        if args.copies:
            for unit in ("figure", "both"):
                (base, n0), (grown, n1) = results[("packages", unit)], results[("packages+copies", unit)]
                print(f"marginal --unit {unit:6s}: {1000 * (grown - base) / (n1 - n0):6.1f} ms CPU per extra figure")


if __name__ == "__main__":
    main()
