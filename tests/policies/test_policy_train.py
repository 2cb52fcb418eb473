"""The shared training loop: early stopping, best weights, seeding, the in-loop metric."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from estimators import hit_rate, ndcg
from policies.train import TrainConfig, build_module, sampled_metrics, train_model
from simulator.checks import ConfigError


@dataclass(frozen=True)
class _Data:
    x: np.ndarray
    y: np.ndarray


def _regression(n=64, seed=0) -> _Data:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return _Data(x, (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None])


def _mse(model, b):
    return ((model(b.x) - b.y) ** 2).mean()


def _linear(seed=0) -> nn.Module:
    return build_module(lambda: nn.Linear(3, 1), np.random.default_rng(seed))


def test_stops_when_the_metric_stops_improving_and_restores_the_best_weights():
    metrics = iter([0.0, 0.1, 0.5, 0.4, 0.45, 0.3, 0.9, 0.9])   # initial model, then epochs 1, 2, ...
    snapshots = {}
    model = _linear()

    def evaluate(m):
        snapshots[len(snapshots)] = {k: v.clone() for k, v in m.state_dict().items()}
        return next(metrics)

    data = _regression()
    result = train_model(model, lambda rng: data, _mse, evaluate,
                         TrainConfig(batch_size=16, lr=0.05, max_epochs=10, patience=3), np.random.default_rng(0))
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5]   # best at 2, then 3 epochs without gain
    assert result.best_epoch == 2 and result.best_metric == 0.5 and result.stopped_early
    assert [r.best for r in result.history] == [True, True, False, False, False]
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[2][k]), k                  # weights after epoch 2
        assert not torch.equal(v, snapshots[5][k]), k              # not the last epoch's
    rec = result.history[0]
    assert rec.loss > 0 and rec.train_seconds > 0 and rec.eval_seconds >= 0
    assert result.seconds_per_epoch == pytest.approx(np.mean([r.train_seconds for r in result.history]))


def test_min_delta_and_max_epochs():
    metrics = iter([0.0] + [0.01 * i for i in range(1, 30)])
    result = train_model(_linear(), lambda rng: _regression(), _mse, lambda m: next(metrics),
                         TrainConfig(max_epochs=6, patience=2, min_delta=0.015), np.random.default_rng(0))
    # a gain counts when it exceeds min_delta over the best so far: +0.01 per epoch does not, so
    # only every second epoch improves (+0.02); patience 2 is never exhausted
    assert [r.best for r in result.history] == [False, True, False, True, False, True]
    assert len(result.history) == 6 and not result.stopped_early and result.best_epoch == 6


def test_training_reduces_the_loss_and_is_reproducible():
    def run(seed):
        model = _linear(seed)
        result = train_model(model, lambda rng: _regression(), _mse, lambda m: -_mse(m, _torch(_regression())).item(),
                             TrainConfig(batch_size=8, lr=0.05, max_epochs=15, patience=15), np.random.default_rng(seed))
        return model, result

    state = torch.random.get_rng_state()
    (m1, r1), (m2, r2), (m3, _) = run(0), run(0), run(1)
    assert torch.equal(torch.random.get_rng_state(), state)       # no global torch state leaks
    assert r1.history[-1].loss < 0.05 * r1.history[0].loss
    assert torch.equal(m1.weight, m2.weight) and [r.loss for r in r1.history] == [r.loss for r in r2.history]
    assert not torch.equal(m1.weight, m3.weight)


def _torch(d: _Data) -> _Data:
    return _Data(torch.from_numpy(d.x), torch.from_numpy(d.y))


def test_dropout_is_reproducible_under_the_seed():
    def run():
        model = build_module(lambda: nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 1)),
                             np.random.default_rng(0))
        train_model(model, lambda rng: _regression(), _mse, None, TrainConfig(max_epochs=3), np.random.default_rng(0))
        return model
    for a, b in zip(run().parameters(), run().parameters()):
        assert torch.equal(a, b)


def test_without_validation_every_epoch_runs_and_the_last_weights_stay():
    model = _linear()
    seen = []

    def make_epoch(rng):
        seen.append(1)
        return _regression(seed=len(seen))              # fresh data each epoch

    result = train_model(model, make_epoch, _mse, None, TrainConfig(max_epochs=4, patience=1),
                         np.random.default_rng(0))
    assert len(seen) == 4 and len(result.history) == 4 and result.best_epoch == 4
    assert all(np.isnan(r.metric) for r in result.history)


def test_mini_batches_cover_every_example_once_per_epoch():
    sizes, firsts = [], []

    def loss(model, b):
        sizes.append(len(b.x))
        firsts.append(b.x[:, 0].tolist())
        return _mse(model, b)

    data = _Data(np.arange(30, dtype=np.float32).repeat(3).reshape(30, 3), np.zeros((30, 1), np.float32))
    train_model(_linear(), lambda rng: data, loss, None, TrainConfig(batch_size=8, max_epochs=2),
                np.random.default_rng(0))
    assert sizes == [8, 8, 8, 6] * 2
    epoch1 = sum(firsts[:4], [])
    assert sorted(epoch1) == list(range(30)) and epoch1 != list(range(30))   # all, shuffled


def test_bad_training_data_and_losses():
    with pytest.raises(ValueError, match="same first dimension"):
        train_model(_linear(), lambda rng: _Data(np.zeros((4, 3), np.float32), np.zeros((5, 1), np.float32)),
                    _mse, None, TrainConfig(max_epochs=1), np.random.default_rng(0))
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1"):
        train_model(_linear(), lambda rng: _regression(), lambda m, b: _mse(m, b) * float("nan"), None,
                    TrainConfig(max_epochs=1), np.random.default_rng(0))


@pytest.mark.parametrize("kw, message", [
    (dict(batch_size=0), "batch_size=0 must be an integer >= 1"),
    (dict(max_epochs=0), "max_epochs=0 must be an integer >= 1"),
    (dict(max_epochs=2.0), "max_epochs=2.0 must be an integer >= 1"),
    (dict(patience=0), "patience=0 must be an integer >= 1"),
    (dict(lr=0.0), "lr=0.0 must be > 0"),
    (dict(lr=float("nan")), "lr=nan must be a finite number"),
    (dict(weight_decay=-1.0), "weight_decay=-1.0 must be >= 0"),
    (dict(min_delta=-1e-3), "min_delta=-0.001 must be >= 0"),
])
def test_bad_train_configs(kw, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        TrainConfig(**kw)


def test_sampled_metrics_match_the_estimators():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(300, 100)).astype(float)   # many ties
    hr, nd = sampled_metrics(scores, k=10)
    assert hr == pytest.approx(hit_rate(scores[:, 0], scores[:, 1:], k=10).value, abs=1e-12)
    assert nd == pytest.approx(ndcg(scores[:, 0], scores[:, 1:], k=10).value, abs=1e-12)
    assert sampled_metrics(np.zeros((5, 100)), k=10)[0] == pytest.approx(0.1)   # constant: chance
    perfect = np.c_[np.ones(4), np.zeros((4, 99))]
    assert sampled_metrics(torch.from_numpy(perfect), k=10) == (1.0, 1.0)
    with pytest.raises(ValueError, match=r"scores must have shape \(n >= 1, 1 \+ K >= 2\), got \(3,\)"):
        sampled_metrics(np.zeros(3))
