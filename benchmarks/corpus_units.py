"""CPU cost of ``corpus build --unit both`` over ``--unit figure``, the same sources, in one run.

    .venv/bin/python benchmarks/corpus_units.py                          # the fixtures' PMC packages (25 figures)
    .venv/bin/python benchmarks/corpus_units.py --copies 8               # plus 8 renamed copies of the OA tarballs
    .venv/bin/python benchmarks/corpus_units.py --copies 8 --workers 1   # phase 1 and 2 in worker processes

Warm: one untimed build of each unit runs first, so the timed builds do not pay the one-off costs of a process
(imports of the tokenizer, matplotlib and the panel modules, the glyph model's weights); what is timed is what a
long build pays per figure. Each build writes a fresh output folder. CPU time is this process's and its
children's (``RUSAGE_CHILDREN``: the build stops its pools and phase 2's fork server before returning, so their
CPU is counted); both parts are printed, so that a run with ``--workers 1`` can be checked against one with
``--workers 0`` (all in this process). ``--repeat`` builds each case several times and keeps the median.

Printed per unit: CPU seconds in all and per figure found; the ratio ``both`` / ``figure`` (issue 19's target:
at most 1.6x); with ``--copies``, the marginal CPU per extra figure of each unit and their ratio, which is what
the ratio tends to as the build grows (the fixed costs of phase 2 weigh heavily on 25 figures).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: BLAS threads only spin on the glyph model's small products

REPO = Path(__file__).resolve().parents[1]
PACKAGES = Path(os.environ.get("BIOMEDCLIP_SHARED", REPO.parent / "shared")) / "fixtures" / "pmc" / "packages"
TARBALLS = ("PMC7112410.tar.gz", "PMC7135076.tar.gz")
UNITS = ("figure", "both")


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its reaped children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _run(unit: str, folders: list[Path], out: Path, workers: int) -> tuple[float, float, float, int]:
    """One build: (CPU of this process, CPU of its children, wall seconds, figures found)."""
    from biomedclip.corpus.build import BuildConfig, build
    from biomedclip.corpus.sources import open_source

    shutil.rmtree(out, ignore_errors=True)
    (own0, kids0), wall = _cpu(), time.perf_counter()
    summary = build([open_source(str(f)) for f in folders], out, BuildConfig(unit=unit), workers=workers)
    own1, kids1 = _cpu()
    shutil.rmtree(out, ignore_errors=True)
    return own1 - own0, kids1 - kids0, time.perf_counter() - wall, summary.figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=0, help="renamed copies of the two OA tarballs to add")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: all in this process)")
    parser.add_argument("--repeat", type=int, default=1, help="builds of each case (the median CPU is kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-units-") as tmp:
        root = Path(tmp)
        copies = root / "copies"
        copies.mkdir()
        for i in range(args.copies):
            for j, name in enumerate(TARBALLS):
                shutil.copy(PACKAGES / "oa_package_tarballs" / name, copies / f"PMC8{j}{i:06d}.tar.gz")
        for unit in UNITS:  # warm-up, untimed: imports, the tokenizer, the glyph model
            _run(unit, [PACKAGES], root / "warm", args.workers)
        sets = {"packages": [PACKAGES], **({"packages+copies": [PACKAGES, copies]} if args.copies else {})}
        results: dict[tuple[str, str], tuple[float, int]] = {}
        print(f"workers={args.workers}, warm process, median of {args.repeat} build(s) per case")
        for label, folders in sets.items():
            for unit in UNITS:
                runs = [_run(unit, folders, root / f"out-{unit}", args.workers) for _ in range(args.repeat)]
                own, kids, wall, figures = sorted(runs, key=lambda r: r[0] + r[1])[len(runs) // 2]
                results[(label, unit)] = (own + kids, figures)
                print(f"{label:16s} --unit {unit:6s}: {figures:4d} figures, CPU {own + kids:6.2f} s "
                      f"(this process {own:5.2f} + children {kids:5.2f}) = {1000 * (own + kids) / figures:6.1f} "
                      f"ms/figure, wall {wall:5.1f} s")  # fmt: skip
            ratio = results[(label, "both")][0] / results[(label, "figure")][0]
            print(f"{label:16s} both / figure CPU: {ratio:.2f}x (target <= 1.6x)")
        if args.copies:
            marginal = {}
            for unit in UNITS:
                (base, n0), (grown, n1) = results[("packages", unit)], results[("packages+copies", unit)]
                marginal[unit] = (grown - base) / (n1 - n0)
                print(f"marginal --unit {unit:6s}: {1000 * marginal[unit]:6.1f} ms CPU per extra figure")
            print(f"marginal both / figure CPU: {marginal['both'] / marginal['figure']:.2f}x (the ratio at scale)")


if __name__ == "__main__":
    main()
