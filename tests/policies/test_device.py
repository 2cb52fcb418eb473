"""The ``device`` parameter of the torch policies: resolution, errors, CPU bit-identity, and (with
the ``gpu`` marker, skipped where torch sees no GPU) reproducibility on a GPU and its tolerance
against the CPU (docs/policies.md, "Devices")."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policies import make_policy
from policies.device import (check_device_spec, deterministic_on, fork_devices, resolve_device, to_device, to_host,
                             wants_gpu)
from policies.params import ParameterError

TORCH_POLICIES = ["sasrec", "sasrec_n", "sine", "saqrec", "usm", "easq"]

# small, quick settings of each policy (a few epochs on the tiny world)
SMALL = {
    "sasrec": dict(d_model=16, n_layers=1, max_len=20, max_epochs=2),
    "sine": dict(encoder=dict(d_model=16, n_layers=1, max_len=20), train=dict(max_epochs=2)),
    "saqrec": dict(encoder=dict(d_model=16, n_layers=1, max_len=20),
                   train=dict(pretrain_epochs=2, max_epochs=2)),
    "usm": dict(train=dict(max_epochs=2)),
    "easq": dict(encoder=dict(d_model=16, n_layers=1, max_len=20), train=dict(max_epochs=2)),
}

# GPU vs CPU, same seed: the first epoch's mean training loss (same initial weights, same batches,
# floating-point order only) agrees within this relative tolerance (docs/policies.md)
GPU_FIRST_LOSS_RTOL = 1e-3


def first_loss(policy) -> float:
    """The mean training loss of a fitted policy's first recorded epoch."""
    results = getattr(policy, "results_", None)
    if isinstance(results, dict) and results:
        return next(r.history[0].loss for r in results.values() if r.history)
    hist = policy.history_
    if isinstance(hist, dict):
        return next(h[0].loss for h in hist.values() if h)
    return hist[0].loss


def test_auto_is_the_gpu_when_torch_sees_one_and_the_cpu_otherwise(monkeypatch):
    import policies.device as device
    monkeypatch.delenv("SATBED_DEVICE", raising=False)
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("SATBED_DEVICE", "cpu")           # the test session's setting: auto stays on the CPU
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("SATBED_DEVICE", "tpu")
    with pytest.raises(ParameterError, match=r"usm \(SATBED_DEVICE\): device='tpu' is not a device"):
        resolve_device("auto", "usm")


@pytest.mark.parametrize("spec, fragment", [
    ("tpu", "device='tpu' is not a device"),
    ("gpu", "device='gpu' is not a device"),
    ("meta", "device='meta' is not supported"),
    (1, "device=1 must be a string"),
])
def test_a_bad_device_names_itself_and_the_choices(spec, fragment):
    with pytest.raises(ParameterError, match="sasrec: " + fragment) as err:
        resolve_device(spec, "sasrec")
    assert '"auto"' in str(err.value) or "must be a string" in str(err.value)
    with pytest.raises(ParameterError, match=fragment):
        check_device_spec(spec, "sasrec")


def test_a_gpu_the_machine_lacks_is_a_clear_error(monkeypatch):
    import policies.device as device
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    check_device_spec("cuda:1")                     # a valid name: it may run on another machine
    with pytest.raises(ParameterError, match="device='cuda' but torch sees no CUDA GPU"):
        resolve_device("cuda", "usm")
    assert wants_gpu("cuda") and wants_gpu("cuda:1") and not wants_gpu("auto") and not wants_gpu("cpu")


@pytest.mark.parametrize("name", TORCH_POLICIES)
def test_every_torch_policy_takes_a_device_and_refuses_a_bad_one(name):
    assert make_policy(name).device == "auto"
    assert make_policy(name, device="cpu").device == "cpu"
    with pytest.raises(ParameterError, match=f"{name}: device='tpu' is not a device"):
        make_policy(name, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_satbed_ab_with_a_gpu_the_machine_lacks_exits_2_before_simulating(tmp_path, capsys):
    from satbed.cli import main
    config, out = tmp_path / "ab.toml", tmp_path / "run"
    config.write_text('[[buckets]]\nname = "control"\npolicy = "production"\nshare = 0.5\n\n'
                      '[[buckets]]\nname = "treatment"\npolicy = "sasrec"\nshare = 0.5\n'
                      'params = { device = "cuda" }\n')
    assert main(["ab", "--config", str(config), "--out", str(out), "--quiet"]) == 2
    assert "bucket 'treatment' (sasrec): device='cuda' but torch sees no CUDA GPU" in capsys.readouterr().err
    assert not out.exists()


def test_the_cpu_crossings_share_memory_and_fork_no_gpu_generator():
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    t = to_device(a, torch.device("cpu"))
    t[0, 0] = 7                                     # no copy on the CPU: what serving relied on before devices
    assert a[0, 0] == 7 and np.array_equal(to_host(t), a)
    assert fork_devices(torch.device("cpu")) == []


def test_deterministic_kernels_are_switched_on_for_a_gpu_and_restored_after():
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_on(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled() == before
    with deterministic_on(torch.device("cuda")):    # sets flags only; touches no GPU
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled() == before


@pytest.mark.parametrize("name", ["sasrec", "easq"])
def test_device_cpu_and_the_default_give_the_same_bits_on_a_cpu_machine(name, tiny_world, monkeypatch):
    import policies.device as device
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    batch = tiny_world.batch()
    a = make_policy(name, **SMALL[name]).fit(tiny_world.train, rng=np.random.default_rng(3))
    b = make_policy(name, device="cpu", **SMALL[name]).fit(tiny_world.train, rng=np.random.default_rng(3))
    assert np.array_equal(a.score(batch), b.score(batch))


# ----------------------------------------------------------------------------- on a GPU
GPU_CASES = list(SMALL)


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_CASES)
def test_a_gpu_fit_is_reproducible_run_to_run(name, tiny_world):
    batch = tiny_world.batch()
    runs = [make_policy(name, device="cuda", **SMALL[name]).fit(tiny_world.train, rng=np.random.default_rng(5))
            for _ in range(2)]
    assert runs[0].device_.type == "cuda"
    assert np.array_equal(runs[0].score(batch), runs[1].score(batch))


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_CASES)
def test_a_gpu_fit_matches_the_cpu_within_the_documented_tolerance(name, tiny_world):
    """Same seed: the same initial weights and batches, so the first epoch's loss differs by
    floating-point order only; the scores of the fitted models rank candidates alike."""
    from scipy.stats import spearmanr
    batch = tiny_world.batch()
    cpu = make_policy(name, device="cpu", **SMALL[name]).fit(tiny_world.train, rng=np.random.default_rng(5))
    gpu = make_policy(name, device="cuda", **SMALL[name]).fit(tiny_world.train, rng=np.random.default_rng(5))
    assert first_loss(gpu) == pytest.approx(first_loss(cpu), rel=GPU_FIRST_LOSS_RTOL)
    rho = spearmanr(cpu.score(batch).ravel(), gpu.score(batch).ravel()).statistic
    assert rho > 0.9, f"{name}: CPU and GPU fits rank candidates differently (Spearman {rho:.3f})"


def _split(train):
    """Day 0 (the fit) and the later days (one update), whole pages each."""
    from simulator.schema import LogData
    imp = train.impressions
    day = imp["day"].to_numpy()
    return (LogData(imp[day == day.min()].reset_index(drop=True), train.items, train.users),
            LogData(imp[day > day.min()].reset_index(drop=True), train.items, train.users))


def _gpu_outputs(name, tiny_world, seed):
    """Everything a policy computes on the GPU: fit, one update, scores, and the extra predictions."""
    old, new = _split(tiny_world.train)
    batch = tiny_world.batch()
    p = make_policy(name, device="cuda", **SMALL[name]).fit(old, rng=np.random.default_rng(seed))
    p.update(new, epochs=1)
    out = [p.score(batch)]
    if name == "saqrec":
        users, items = batch.user_ids, batch.candidates[:, 0]
        out += [p.predict_propensity(users, items), p.predict_satisfaction(users, items), p.satisfaction_logits(batch)]
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_CASES)
def test_a_gpu_update_and_every_prediction_are_reproducible(name, tiny_world):
    """The online-learning path (update: EASQ's persistent optimisers and reference, USM's and
    SAQRec's refits of their features) and the extra predictions run on the GPU, run to run alike."""
    a, b = _gpu_outputs(name, tiny_world, 7), _gpu_outputs(name, tiny_world, 7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
