"""check_policy over every registered policy, and on deliberately broken policies."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np
import pytest

from policies import available_policies, make_policy
from policies.base import check_fitted
from policies.checks import CHECKS, check_policy, simulator_imports
from policies.data import check_observable

# small models so that each policy's battery (four fits) takes a few seconds
FAST = dict(max_epochs=2, d_model=16, n_layers=1, max_len=20, eval_negatives=20)
FAST_PARAMS = {"sasrec": FAST, "sasrec_n": FAST,
               "sine": dict(encoder=dict(d_model=16, n_layers=1, max_len=20),
                            train=dict(max_epochs=2, eval_negatives=20)),
               "saqrec": dict(encoder=dict(d_model=16, n_layers=1, max_len=20, n_levels=3),
                              train=dict(max_epochs=2, pretrain_epochs=1, eval_negatives=20), aux=dict(epochs=2)),
               "usm": dict(network=dict(hidden=(32, 16, 8), head_hidden=(8,), d_emb=8),
                           train=dict(max_epochs=3, engagement_per_epoch=2000), distill=dict(pseudo_per_epoch=2000)),
               "easq": dict(encoder=dict(d_model=16, max_len=20), train=dict(max_epochs=2), satisfaction=dict(epochs=3),
                            align=dict(epochs=2))}


# the shipped policies: names starting with "_" are registered by other test modules (collected first)
@pytest.mark.parametrize("name", sorted(n for n in available_policies() if not n.startswith("_")))
def test_check_policy(name, tiny_world):
    def factory():
        return make_policy(name, **FAST_PARAMS.get(name, {}))
    prepare = tiny_world.attach if getattr(factory(), "requires_world", False) else None
    ran = check_policy(factory, tiny_world.train, tiny_world.batch(), prepare=prepare)
    expected = [c for c in CHECKS if c != "update" or callable(getattr(factory(), "update", None))]
    assert ran == expected


def test_check_policy_wants_observable_training_logs(tiny_world):
    with pytest.raises(ValueError, match="needs observable training logs"):
        check_policy(lambda: make_policy("most_popular"), tiny_world.logs, tiny_world.batch())


# --- broken policies: each must be caught by the check that names its fault -----------------

@dataclass
class Good:
    """A minimal correct policy: scores by the item id, after validating its logs."""
    name: str = "good"
    temperature: float | None = None
    fitted_: bool = field(default=False, init=False)
    offset_: float = field(default=0.0, init=False)

    def fit(self, train, *, rng):
        check_observable(train)
        self.offset_ = float(rng.integers(0, 10))
        self.fitted_ = True
        return self

    def score(self, batch):
        check_fitted(self)
        return batch.candidates.astype(float) + self.offset_


class NoFitCheck(Good):
    def score(self, batch):
        return batch.candidates.astype(float)


class ReturnsNone(Good):
    def fit(self, train, *, rng):
        super().fit(train, rng=rng)


class MutatesLogs(Good):
    def fit(self, train, *, rng):
        train.impressions["ts"] = 0.0
        return super().fit(train, rng=rng)


class WrongShape(Good):
    def score(self, batch):
        return super().score(batch)[:, :-1]


class NonFinite(Good):
    def score(self, batch):
        s = super().score(batch)
        s[0, 0] = np.nan
        return s


class Nondeterministic(Good):
    calls = 0

    def score(self, batch):
        Nondeterministic.calls += 1
        return super().score(batch) + Nondeterministic.calls


class ReadsOracle(Good):
    def fit(self, train, *, rng):
        self.fitted_ = True
        return self


class ChecksOnlyImpressions(Good):
    def fit(self, train, *, rng):
        if any(c.startswith("true_") for c in train.impressions.columns):
            raise ValueError("policies must be given observable data only; got oracle column(s) true_x")
        self.fitted_ = True
        return self


@dataclass
class BadTemperature(Good):
    temperature: float | None = 0.0


class BadUpdate(Good):
    def update(self, new):
        self.offset_ = float("inf")


@pytest.mark.parametrize("cls, check", [
    (NoFitCheck, "not_fitted"), (ReturnsNone, "fit_returns_self"), (MutatesLogs, "fit_returns_self"),
    (WrongShape, "score_shape"), (NonFinite, "score_shape"), (Nondeterministic, "deterministic"),
    (ReadsOracle, "refuses_oracle"), (ChecksOnlyImpressions, "refuses_oracle"),
    (BadTemperature, "temperature"), (BadUpdate, "update"),
])
def test_check_policy_catches_broken_policies(cls, check, tiny_world):
    train = tiny_world.train
    train = type(train)(train.impressions.sample(frac=1.0, random_state=0), train.items, train.users)
    with pytest.raises(AssertionError, match=rf"\[{check}\]"):
        check_policy(cls, train, tiny_world.batch())
    assert check_policy(Good, tiny_world.train, tiny_world.batch())[-1] == "temperature"


def test_import_check_follows_policies_modules(tmp_path, monkeypatch):
    pkg = tmp_path / "policies_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("from simulator.features import FeatureStore\n")
    (pkg / "leaky.py").write_text(textwrap.dedent("""
        import numpy as np
        from simulator.schema import LogData
        from policies.data import pad
        import policies_probe.helper
        class Leaky:
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from policies_probe.leaky import Leaky
    # policies_probe is not under "policies.", so only the direct imports count here
    assert simulator_imports(Leaky) == {}
    (pkg / "leaky2.py").write_text("import simulator.platform\nclass Leaky2: pass\n")
    from policies_probe.leaky2 import Leaky2
    assert simulator_imports(Leaky2) == {"leaky2.py": {"simulator.platform"}}
    from policies.sasrec import SASRec
    assert simulator_imports(SASRec) == {}
    (pkg / "checked.py").write_text("from simulator.checks import check_positive\nfrom simulator.config import SimConfig\n"
                                    "class Checked: pass\n")
    from policies_probe.checked import Checked
    assert simulator_imports(Checked) == {"checked.py": {"simulator.config"}}     # the checks, not the config
