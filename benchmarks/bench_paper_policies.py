"""Training and scoring cost of the paper policies, against SASRec measured in the same run.

    python benchmarks/bench_paper_policies.py [--users N] [--days D] [--policies saqrec sine ...]
        [--batch-sizes 1 16 128] [--candidates C] [--repeats R] [--devices cpu cuda]

Simulates a world of N users for D production-served days (default 2,000 x 3), fits each policy
with its defaults on all but the last day (one torch thread), and prints per policy: the fit's
wall and CPU seconds, the epochs and seconds per epoch of each training stage (the policy's
``history_`` or ``results_``), and the wall time of ``score()`` for batches of B requests x C
candidates (default 200) from the feature store at the split, with microseconds per request and
the ratio to ``sasrec``'s (the reference, always measured first). Timings are wall clock: run it
on an otherwise idle machine.

``--devices``: where each policy trains and scores (its ``device`` parameter; default the CPU,
and ``cuda`` too when torch sees a GPU). With two devices it ends with a side-by-side table of
fit seconds and microseconds per request on each, and the CPU / GPU speed-up.
"""
from __future__ import annotations

# Kernels pinned before numpy and torch are imported, as in every satbed process
# (simulator/reproducibility.py; SATBED_KERNELS=native measures the unpinned kernels).
from simulator.reproducibility import pin_kernels

pin_kernels()

import argparse
import time

import numpy as np
import torch

from policies import make_policy
from policies.device import cuda_available
from simulator.config import SimConfig, with_overrides
from simulator.schema import RankBatch
from studies.engine.offline import make_task, simulate_logs


def stages(policy) -> list[tuple[str, int, float]]:
    """(stage, epochs, seconds per epoch) of a fitted policy's training record."""
    results = getattr(policy, "results_", None)
    if isinstance(results, dict) and results:
        return [(name, len(r.history), r.seconds_per_epoch) for name, r in results.items() if r.history]
    hist = getattr(policy, "history_", None) or []
    if isinstance(hist, dict):                        # one record per model (usm)
        return [(name, len(h), float(np.mean([e.train_seconds for e in h]))) for name, h in hist.items() if h]
    return [("model", len(hist), float(np.mean([h.train_seconds for h in hist])))] if hist else []


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--policies", nargs="+", default=["saqrec", "sine", "usm", "easq"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 128])
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--devices", nargs="+", default=["cpu", "cuda"] if cuda_available() else ["cpu"],
                    help="devices to measure on (default: cpu, and cuda when torch sees a GPU)")
    args = ap.parse_args(argv)
    if any(d.startswith("cuda") for d in args.devices) and not cuda_available():
        ap.error(f"--devices {' '.join(args.devices)}: torch sees no CUDA GPU on this machine")
    torch.set_num_threads(1)
    world = with_overrides(SimConfig(), {"platform.days": args.days, "users.n_users": args.users})
    t0 = time.perf_counter()
    task = make_task(simulate_logs(world), seed=0)
    imp = task.train.impressions
    print(f"world: {args.users:,} users x {args.days} days, simulated in {time.perf_counter() - t0:.1f} s; "
          f"training logs: {len(imp):,} impressions, {int(imp['effective_view'].sum()):,} effective views, "
          f"{int(imp['survey_submitted'].sum()):,} answers")
    rng = np.random.default_rng(0)
    top = max(args.batch_sizes)
    users = rng.choice(len(task.train.users), top, replace=len(task.train.users) < top)
    cands = rng.integers(0, len(task.train.items), (top, args.candidates))
    names = ["sasrec", *[p for p in args.policies if p != "sasrec"]]
    fits: dict[tuple[str, str], float] = {}
    scores: dict[tuple[str, str, int], float] = {}
    for device in args.devices:
        ref: dict[int, float] = {}
        rows = []
        for name in names:
            t0, c0 = time.perf_counter(), time.process_time()
            policy = make_policy(name, device=device).fit(task.train, rng=np.random.default_rng(0))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            fits[name, device] = wall
            print(f"\n{name} on {device}: fit {wall:.1f} s wall, {cpu:.1f} s CPU")
            for stage, epochs, spe in stages(policy):
                print(f"  {stage:<14} {epochs:>3} epochs x {spe:6.2f} s")
            for b in args.batch_sizes:
                batch = RankBatch(users[:b], cands[:b], 0.0, task.split_day, task.store)
                policy.score(batch)                                       # warm-up
                t = time.perf_counter()
                for _ in range(args.repeats):
                    policy.score(batch)                                   # returns numpy: synchronised
                dt = (time.perf_counter() - t) / args.repeats
                us = dt / b * 1e6
                if name == "sasrec":
                    ref[b] = us
                print(f"  score {b:>4} x {args.candidates}: {dt * 1e3:8.1f} ms, {us:7.0f} us/request, "
                      f"{us / ref[b]:.2f}x sasrec")
                rows.append((name, b, us))
                scores[name, device, b] = us
        print(f"\nus per request on {device} (ratio to sasrec):")
        print("policy".ljust(10) + "".join(f"batch {b}".rjust(18) for b in args.batch_sizes))
        for name in dict.fromkeys(r[0] for r in rows):
            cells = [f"{us:8.0f} ({us / ref[b]:.2f}x)".rjust(18) for n, b, us in rows if n == name]
            print(name.ljust(10) + "".join(cells))
    if len(args.devices) > 1:
        side_by_side(names, args.devices, args.batch_sizes, fits, scores)


def side_by_side(names: list[str], devices: list[str], batch_sizes: list[int],
                 fits: dict[tuple[str, str], float], scores: dict[tuple[str, str, int], float]) -> None:
    """Fit seconds and us/request at the largest batch on each device, and the first device's
    time over each other's (the speed-up)."""
    b, first = max(batch_sizes), devices[0]
    print(f"\nside by side: fit wall seconds, and us per request at batch {b} (speed-up vs {first})")
    print("policy".ljust(10) + "".join(f"fit {d}".rjust(22) for d in devices)
          + "".join(f"score {d}".rjust(22) for d in devices))
    for name in names:
        fit = [f"{fits[name, d]:8.1f} ({fits[name, first] / fits[name, d]:.2f}x)".rjust(22) for d in devices]
        sc = [f"{scores[name, d, b]:8.0f} ({scores[name, first, b] / scores[name, d, b]:.2f}x)".rjust(22)
              for d in devices]
        print(name.ljust(10) + "".join(fit) + "".join(sc))


if __name__ == "__main__":
    main()
