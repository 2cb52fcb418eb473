"""Throughput of the sweep runner: cells per minute, sequential vs process pool vs Ray, same grid.

Run it as a script (it is not a test)::

    python benchmarks/bench_sweep.py [--study aa_validity] [--variant fast] [--cells 8] [--workers 2]
                                     [--executors sequential pool ray] [--set KEY=VALUE ...]

The grid is the first ``--cells`` cells of a study variant (default: ``aa_validity --fast`` with
``replications`` raised to ``--cells``: small A/A tests of about two CPU seconds each). Every
executor runs the whole grid into its own empty results directory (no cache), so each number
includes that executor's start-up: spawning the pool's workers (imports), or starting a local
Ray instance with ``num_cpus=--workers`` and its workers. It prints, per executor: wall seconds,
cells per minute, speed-up over sequential, the cells' own CPU seconds, and whether the cells'
rows are identical to the sequential run's (they must be: every cell derives its randomness from
its seed). Ray is skipped with a note when it is not installed (``pip install 'satbed[ray]'``).
Timings are wall clock: run it on an otherwise idle machine.
"""
from __future__ import annotations

# Kernels pinned before numpy and torch are imported, as in every satbed process
# (simulator/reproducibility.py; SATBED_KERNELS=native measures the unpinned kernels).
from simulator.reproducibility import pin_kernels

pin_kernels()

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from simulator.config import parse_value
from studies.engine.base import get_study, load_config
from studies.engine.sweep import cells_per_minute, make_executor, read_cached, run_sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--study", default="aa_validity", help="study whose grid is run")
    parser.add_argument("--variant", default="fast", choices=("fast", "default", "full"))
    parser.add_argument("--cells", type=int, default=8, help="cells of the grid (the first N)")
    parser.add_argument("--workers", type=int, default=2, help="pool processes / local Ray CPUs")
    parser.add_argument("--executors", nargs="+", default=["sequential", "pool", "ray"],
                        choices=("sequential", "pool", "ray"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)

    study = get_study(args.study)
    overrides = {k: parse_value(v) for k, _, v in (s.partition("=") for s in args.set)}
    if args.study == "aa_validity" and "replications" not in overrides:
        overrides["replications"] = max(args.cells, 2)
    config = load_config(study, variant=args.variant, overrides=overrides)
    grid = list({c.key: c for c in study.cells(config)}.values())[:args.cells]
    print(f"grid: {len(grid)} cells of {args.study} ({args.variant}), {args.workers} workers for pool and Ray")

    results, reference = [], None
    for name in args.executors:
        if name == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                print("ray: skipped (not installed: pip install 'satbed[ray]')")
                continue
        executor = make_executor(name, workers=args.workers)
        with tempfile.TemporaryDirectory(prefix=f"bench-sweep-{name}-") as tmp:
            t0 = time.perf_counter()
            sweep = run_sweep(grid, Path(tmp), executor, progress=False)
            wall = time.perf_counter() - t0
            rows = [json.dumps(read_cached(Path(tmp), c)["rows"]) for c in grid]
        cpu = sum(sweep.cell_cpu_seconds.values())
        if reference is None:
            reference = rows
        results.append({"executor": name, "wall": wall, "per_min": cells_per_minute(len(grid), wall),
                        "cpu": cpu, "cell_wall": sum(sweep.cell_seconds.values()), "same": rows == reference})
        print(f"{name}: {wall:.1f} s", flush=True)

    seq = next((r["wall"] for r in results if r["executor"] == "sequential"), None)
    first = results[0]["executor"] if results else "-"
    print(f"\n{'executor':<11} {'wall s':>8} {'cells/min':>10} {'speed-up':>9} {'cell CPU s':>11} {'cell wall s':>12}"
          f"  rows == {first}'s")
    for r in results:
        speed = f"{seq / r['wall']:.2f}x" if seq else "n/a"
        print(f"{r['executor']:<11} {r['wall']:>8.1f} {r['per_min']:>10.1f} {speed:>9} {r['cpu']:>11.1f} "
              f"{r['cell_wall']:>12.1f}  {'yes' if r['same'] else 'NO'}")
    return 0 if all(r["same"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
