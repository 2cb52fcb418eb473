"""The cost of the kernel pin (simulator/reproducibility.py): SASRec and SAQRec fit and scoring
time with the pin on (``avx2``, the default), off (``native``) and at its strictest
(``compatible``), in one run.

    python benchmarks/bench_kernels.py [--users N] [--days D] [--modes avx2 native compatible]
        [--batch B] [--candidates C] [--repeats R]

The kernels are chosen when a process starts, so each mode runs in its own fresh child process
(``SATBED_KERNELS=<mode>``, every pinned variable of this process removed from its environment).
Each child simulates the same world (default 2,000 users x 3 days), fits ``sasrec`` and
``saqrec`` with their defaults on all but the last day (one torch thread) and times ``score()``
on one batch of B requests x C candidates (best of R). The modes run in turn (times are taken
inside each child, so its start-up is not counted), and the output gives each time and its ratio
to ``native``'s, measured in the same run.
Timings are wall clock: run it on an otherwise idle machine. On an AVX2-only CPU ``avx2`` and
``native`` run the same ATen / oneDNN / numpy kernels, and the pin's only effect is MKL's CNR mode.
"""
from __future__ import annotations

# Kernels pinned before numpy and torch are imported, as in every satbed process
# (simulator/reproducibility.py; each mode below runs in a child with its own setting).
from simulator.reproducibility import ENV_VAR, MODES, kernel_env, pin_kernels

pin_kernels()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

POLICIES = ("sasrec", "saqrec")


def child(args: argparse.Namespace) -> dict:
    import warnings

    import numpy as np
    import torch

    from policies import make_policy
    from simulator.config import SimConfig, with_overrides
    from simulator.reproducibility import kernel_report
    from simulator.schema import RankBatch
    from studies.engine.offline import make_task, simulate_logs
    torch.set_num_threads(1)
    world = with_overrides(SimConfig(), {"platform.days": args.days, "users.n_users": args.users})
    task = make_task(simulate_logs(world), seed=0)
    rng = np.random.default_rng(0)
    users = rng.choice(len(task.train.users), args.batch, replace=len(task.train.users) < args.batch)
    batch = RankBatch(users, rng.integers(0, len(task.train.items), (args.batch, args.candidates)), 0.0,
                      task.split_day, task.store)
    out = {"report": kernel_report(), "impressions": len(task.train.impressions)}
    for name in POLICIES:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            policy = make_policy(name, progress=False).fit(task.train, rng=np.random.default_rng(0))
        fit = time.perf_counter() - t0
        policy.score(batch)                                         # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            policy.score(batch)
            best = min(best, time.perf_counter() - t)
        out[name] = {"fit_s": fit, "score_us_per_request": best / args.batch * 1e6}
    return out


def run_mode(mode: str, argv: list[str]) -> dict:
    pinned = set(kernel_env("avx2"))
    env = {k: v for k, v in os.environ.items() if k not in pinned}
    env[ENV_VAR] = mode
    done = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {mode} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=["avx2", "native", "compatible"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--child"]
    modes = list(dict.fromkeys(["native", *args.modes]))           # native is the reference
    print(f"world: {args.users:,} users x {args.days} days; fit {', '.join(POLICIES)}; "
          f"score {args.batch} requests x {args.candidates} candidates, best of {args.repeats}")
    results = {}
    for mode in modes:
        t = time.perf_counter()
        results[mode] = run_mode(mode, passed)
        r = results[mode]["report"]
        print(f"  {mode:<10} child {time.perf_counter() - t:6.1f} s; torch {r['torch_capability']}, "
              f"MKL_CBWR={r['env']['MKL_CBWR']}, numpy AVX-512 {'on' if r['numpy_avx512'] else 'off'}")
    ref = results["native"]
    print(f"\n{'mode':<12}" + "".join(f"{p + ' fit':>18}{p + ' score':>22}" for p in POLICIES))
    for mode in modes:
        cells = []
        for p in POLICIES:
            fit, score = results[mode][p]["fit_s"], results[mode][p]["score_us_per_request"]
            cells.append(f"{fit:8.1f} s ({fit / ref[p]['fit_s']:.2f}x)"
                         f"{score:11.0f} us ({score / ref[p]['score_us_per_request']:.2f}x)")
        print(f"{mode:<12}" + "".join(f"{c:>40}" for c in cells))
    print("\nratios are to `native` (the kernels unpinned), measured in this run")


if __name__ == "__main__":
    main()
