"""Fingerprints of a short simulation and of small SASRec and SAQRec fits, for comparing runs
across kernel settings (``tests/simulator/test_reproducibility.py``).

From the repository root, ``PYTHONPATH=tests python -c "import kernel_probe as k;
print(k.fingerprints())"`` (run from tests/, ``policies`` would resolve to tests/policies). This
module pins nothing itself: the caller's environment decides the kernels.
"""
from __future__ import annotations

import hashlib
import tempfile
import warnings
from pathlib import Path


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()


def fingerprints() -> dict[str, str]:
    """sha256 of the simulated log, and of each policy's weights and scores (one torch thread)."""
    import numpy as np
    import pandas as pd
    import torch

    from policies import make_policy
    from simulator.logs import read_run
    from simulator.schema import RankBatch
    from experiments.simulate import simulate
    from studies.engine.offline import feature_store_from
    from tests_support import tiny

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            simulate(tiny(n_users=200, n_items=800, days=2), Path(tmp) / "run", progress=False)
            logs = read_run(Path(tmp) / "run")
        out = {"log": _digest(pd.util.hash_pandas_object(logs.impressions, index=False).to_numpy())}
        train = logs.observable()
        store = feature_store_from(train)
        rng = np.random.default_rng(0)
        users = np.unique(train.impressions["user_id"])[:32]
        batch = RankBatch(users, rng.integers(0, len(train.items), (len(users), 50)), 0.0, 0, store)
        fits = {"sasrec": dict(max_epochs=2),
                "saqrec": dict(train=dict(max_epochs=1, pretrain_epochs=1), aux=dict(epochs=1))}
        for name, params in fits.items():
            policy = make_policy(name, progress=False, **params)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")            # SAQRec warns about its tiny answer count
                policy.fit(train, rng=np.random.default_rng(0))
            weights = [t.detach().numpy() for v in sorted(vars(policy).items()) if isinstance(v[1], torch.nn.Module)
                       for t in v[1].state_dict().values()]
            out[f"{name}_weights"] = _digest(*weights)
            out[f"{name}_scores"] = _digest(np.ascontiguousarray(policy.score(batch)))
        return out
    finally:
        torch.set_num_threads(previous)
