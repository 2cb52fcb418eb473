"""What the off-policy logging mode costs: time and bytes per impression, against the plain run.

Run it as a script (it is not a test)::

    python benchmarks/bench_ope_logging.py [--users N] [--days D] [--seed S]

It simulates the same world twice with the production policy (stochastic, temperature 1), each in
a fresh child process: once as ``satbed simulate`` does by default (the reference) and once with
``platform.log_candidates = true`` (each request's candidates and scores written next to the logs,
and every impression's ``propensity_marginal`` computed). It prints both runs' wall time and
impressions/s and their ratio, the seconds spent in the marginal-propensity quadrature
(:func:`simulator.plackett_luce.marginal_propensities`, timed in the child), and the bytes on disk
per impression of ``logs/`` and ``candidates/``. Both runs log the same impressions (the mode
draws no random numbers), which the script checks. Timings are wall clock: run it on an otherwise
idle machine.
"""
from __future__ import annotations

# Kernels pinned before numpy and torch are imported, as in every satbed process.
from simulator.reproducibility import pin_kernels

pin_kernels()

import argparse
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from simulator.config import SimConfig, with_overrides


def _run(config: SimConfig, out: str) -> dict:
    """Simulate in this (child) process; time the quadrature by wrapping it where the platform calls it."""
    import simulator.platform as platform
    from simulator.logs import read_impressions
    from experiments.simulate import simulate
    quadrature = {"s": 0.0, "calls": 0}
    inner = platform.marginal_propensities

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            quadrature["s"] += time.perf_counter() - t0
            quadrature["calls"] += 1

    platform.marginal_propensities = timed
    t0 = time.perf_counter()
    simulate(config, Path(out), progress=False)
    seconds = time.perf_counter() - t0
    logs = read_impressions(Path(out) / "logs", columns=["request_id", "item_id", "watch_time"])
    size = {d: sum(f.stat().st_size for f in (Path(out) / d).rglob("*.parquet")) if (Path(out) / d).exists() else 0
            for d in ("logs", "candidates")}
    return {"seconds": seconds, "rows": len(logs), "quadrature_s": quadrature["s"], **size,
            "digest": int(logs["item_id"].sum()) ^ int(logs["request_id"].sum()), "watch": float(logs["watch_time"].sum())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    base = with_overrides(SimConfig(seed=args.seed), {"users.n_users": args.users, "platform.days": args.days})
    logged = with_overrides(base, {"platform.log_candidates": True})
    ctx = multiprocessing.get_context("spawn")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in (("reference (log_candidates = false)", base), ("log_candidates = true", logged)):
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                results[name] = pool.submit(_run, config, str(Path(tmp) / name.split()[0])).result()
    (ref_name, ref), (name, ope) = results.items()
    if (ref["rows"], ref["digest"], ref["watch"]) != (ope["rows"], ope["digest"], ope["watch"]):
        raise SystemExit("the two runs logged different impressions: the logging mode changed the simulation")
    print(f"world: {args.users:,} users x {args.days} days, seed {args.seed}; {ref['rows']:,} impressions "
          "(the same in both runs)")
    for label, r in results.items():
        print(f"  {label:36s} {r['seconds']:7.1f} s  {r['rows'] / r['seconds']:9,.0f} impressions/s  "
              f"logs/ {r['logs'] / r['rows']:6.1f} B/impression  candidates/ {r['candidates'] / r['rows']:6.1f} "
              "B/impression")
    print(f"  time ratio (log_candidates / reference): {ope['seconds'] / ref['seconds']:.2f}x; marginal-propensity "
          f"quadrature {ope['quadrature_s']:.1f} s ({ope['quadrature_s'] / ope['seconds']:.0%} of the run, "
          f"{1e6 * ope['quadrature_s'] / ope['rows']:.0f} µs per impression)")
    print(f"  bytes per impression: {ref['logs'] / ref['rows']:.1f} (reference) -> "
          f"{(ope['logs'] + ope['candidates']) / ope['rows']:.1f} with candidates "
          f"({(ope['logs'] + ope['candidates']) / ref['logs']:.2f}x)")


if __name__ == "__main__":
    main()
