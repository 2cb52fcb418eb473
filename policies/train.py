"""The one training loop every neural policy uses: mini-batches, Adam, early stopping.

A model supplies three things and the loop does the rest:

- ``make_epoch(rng)``: the epoch's training examples as a dataclass whose array fields all have
  the same first dimension (called once per epoch, so negatives can be resampled each epoch);
- ``loss_fn(model, batch)``: the mean loss of a mini-batch (the same dataclass, its array fields
  sliced and turned into torch tensors);
- ``evaluate(model)``: the validation metric, higher is better (e.g. :func:`sampled_metrics`
  on held-out targets with sampled negatives), computed in eval mode without gradients.

Randomness: the loop draws one seed from the numpy ``rng`` and runs under
``torch.random.fork_rng`` seeded with it, so dropout is reproducible and no global torch state
leaks out; mini-batch order comes from the numpy ``rng``. Modules are built with
:func:`build_module`, under the same discipline. The loop trains where the model is (a policy's
``device``, :mod:`policies.device`): each mini-batch goes there, and on a GPU the device's
generator is seeded and restored too and deterministic kernels are used. It never sets the number
of torch threads (the caller, e.g. the A/B runner, does).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from estimators import sampled_rank_metrics
from policies.device import deterministic_on, fork_devices, module_device, to_device
from simulator.checks import check_int_at_least, check_nonnegative, check_positive

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train`.

    Attributes:
        batch_size: examples per mini-batch.
        lr: Adam learning rate.
        weight_decay: Adam L2 penalty.
        max_epochs: upper bound on epochs.
        patience: stop after this many epochs without improving the best validation metric by
            more than ``min_delta``.
        min_delta: smallest improvement that counts.
        max_grad_norm: clip the gradient norm (None: no clipping).
        progress: show a tqdm bar over epochs.
        desc: the bar's label.
    """
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 20
    patience: int = 3
    min_delta: float = 0.0
    max_grad_norm: float | None = None
    progress: bool = False
    desc: str = "training"

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_epochs", "patience"):
            check_int_at_least(name, getattr(self, name), 1)
        check_positive("lr", self.lr)
        check_nonnegative("weight_decay", self.weight_decay)
        check_nonnegative("min_delta", self.min_delta)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training: mean training loss, validation metric, wall time in seconds."""
    epoch: int
    loss: float
    metric: float
    train_seconds: float
    eval_seconds: float
    best: bool


@dataclass(frozen=True)
class TrainResult:
    history: list[EpochRecord]
    best_epoch: int                 # 1-based; 0 if no epoch improved on the initial model
    best_metric: float
    stopped_early: bool

    @property
    def seconds_per_epoch(self) -> float:
        """Mean training time per epoch (validation excluded)."""
        return float(np.mean([r.train_seconds for r in self.history])) if self.history else 0.0


def torch_seed(rng: np.random.Generator) -> int:
    """A torch seed drawn from the numpy generator (the one bridge between the two)."""
    return int(rng.integers(0, 2 ** 63 - 1))


def seed_generators(seed: int, device: torch.device) -> None:
    """Seed the CPU's generator and, on a GPU, that GPU's: the ones that ``fork_rng`` saved (not
    ``torch.manual_seed``, which reseeds every GPU of the process and would leak out)."""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def build_module(factory: Callable[[], M], rng: np.random.Generator,
                 device: torch.device | str = "cpu") -> M:
    """``factory()`` with torch's default generator seeded from ``rng`` inside ``fork_rng``:
    reproducible initial weights, and the global torch random state is left untouched. The module
    is built on the CPU and then moved to ``device``, so it starts from the same weights on every
    device."""
    with torch.random.fork_rng(devices=[]):
        seed_generators(torch_seed(rng), torch.device("cpu"))          # the CPU's only: no GPU's is touched
        module = factory()
    device = torch.device(device)
    return module if device.type == "cpu" else module.to(device)


def sampled_metrics(scores: np.ndarray | torch.Tensor, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k of one positive (column 0) among sampled negatives, for early stopping:
    :func:`estimators.sampled_rank_metrics` of the scores as a numpy array."""
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    return sampled_rank_metrics(s, k=k)


def _slice(data: Any, idx: np.ndarray, device: torch.device) -> Any:
    """``data`` with every numpy array field indexed by ``idx`` and turned into a torch tensor
    on ``device``."""
    return dataclasses.replace(data, **{
        f.name: to_device(getattr(data, f.name)[idx], device)
        for f in dataclasses.fields(data) if isinstance(getattr(data, f.name), np.ndarray)})


def _n_examples(data: Any) -> int:
    sizes = {f.name: len(getattr(data, f.name)) for f in dataclasses.fields(data)
             if isinstance(getattr(data, f.name), np.ndarray)}
    if not sizes:
        raise ValueError(f"{type(data).__name__} has no numpy array field to train on")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"training arrays must have the same first dimension, got {sizes}")
    return next(iter(sizes.values()))


def train_model(model: nn.Module, make_epoch: Callable[[np.random.Generator], Any],
          loss_fn: Callable[[nn.Module, Any], torch.Tensor], evaluate: Callable[[nn.Module], float] | None,
          config: TrainConfig, rng: np.random.Generator, *,
          optimizer: torch.optim.Optimizer | None = None) -> TrainResult:
    """Train ``model`` in place with Adam and early stopping; it ends with its best weights.

    Each epoch: ``make_epoch(rng)``, shuffled mini-batches of ``config.batch_size``, one Adam step
    each; then ``evaluate(model)`` in eval mode under ``torch.no_grad``. The weights of the best
    validation epoch are restored at the end (the initial model counts as epoch 0, so training
    that never improves the metric leaves the model as it was). With ``evaluate=None`` there is
    no validation: every epoch runs (``metric`` is NaN) and the final weights are kept, as for a
    few fine-tuning epochs on new logs.

    ``optimizer``: an existing optimiser to step instead of a fresh Adam (``config.lr`` and
    ``weight_decay`` are then unused); its state carries over between calls, e.g. across the
    online updates of a serving policy.

    Returns:
        The per-epoch record (loss, metric, seconds), the best epoch and whether it stopped early.
    """
    opt = optimizer if optimizer is not None else \
        torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[EpochRecord] = []
    device = module_device(model)
    with torch.random.fork_rng(devices=fork_devices(device)), deterministic_on(device):
        seed_generators(torch_seed(rng), device)
        model.eval()
        with torch.no_grad():
            best_metric = float(evaluate(model)) if evaluate is not None else math.nan
        best_state = copy.deepcopy(model.state_dict())
        best_epoch, bad = 0, 0
        bar = tqdm(range(1, config.max_epochs + 1), desc=config.desc, unit="epoch",
                   disable=not config.progress, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            data = make_epoch(rng)
            n = _n_examples(data)
            order = rng.permutation(n)
            model.train()
            total, count = 0.0, 0
            for start in range(0, n, config.batch_size):
                idx = order[start:start + config.batch_size]
                loss = loss_fn(model, _slice(data, idx, device))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}; lower lr={config.lr}?")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
            t1 = time.perf_counter()
            model.eval()
            with torch.no_grad():
                metric = float(evaluate(model)) if evaluate is not None else math.nan
            t2 = time.perf_counter()
            improved = evaluate is None or metric > best_metric + config.min_delta
            if improved:
                best_metric, best_epoch, bad = metric, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
            history.append(EpochRecord(epoch, total / max(count, 1), metric, t1 - t0, t2 - t1, improved))
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}", metric=f"{metric:.4f}")
            if bad >= config.patience:
                break
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    stopped = len(history) < config.max_epochs
    return TrainResult(history, best_epoch, best_metric, stopped)
