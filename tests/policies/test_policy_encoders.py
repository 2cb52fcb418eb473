"""The shared sequence encoder: causality, padding, last-position serving, the attention hook."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.encoders import EncoderConfig, SequenceEncoder
from policies.train import build_module
from simulator.checks import ConfigError

VARIANTS = [dict(pre_ln=True, n_heads=1), dict(pre_ln=False, n_heads=2),
            dict(pre_ln=True, n_heads=2, side_sizes=(3, 5), item_bias=True)]


def _encoder(seed=0, **kw) -> SequenceEncoder:
    config = EncoderConfig(n_items=40, max_len=12, d_model=16, n_layers=2, dropout=0.1, **kw)
    side = torch.stack([torch.arange(40) % n for n in config.side_sizes]) if config.side_sizes else None
    return build_module(lambda: SequenceEncoder(config, side), np.random.default_rng(seed)).eval()


def _seqs(seed=0, B=5, T=12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 41, (B, T), generator=g)
    x[1, :4] = 0                 # left padding
    x[2, :-1] = 0                # a single item
    return x


@pytest.mark.parametrize("kw", VARIANTS)
def test_changing_a_future_item_leaves_earlier_outputs_unchanged(kw):
    model = _encoder(**kw)
    x = _seqs()
    with torch.no_grad():
        y = model(x)
        for t in (5, 8, 11):
            x2 = x.clone()
            x2[:, t] = x2[:, t] % 40 + 1
            y2 = model(x2)
            torch.testing.assert_close(y2[:, :t], y[:, :t], rtol=0, atol=1e-6)
            assert (y2[0, t] - y[0, t]).abs().max() > 1e-4     # the changed position does change


@pytest.mark.parametrize("kw", VARIANTS)
def test_last_only_equals_the_last_position_of_the_full_pass(kw):
    model = _encoder(**kw)
    x = _seqs()
    with torch.no_grad():
        full = model(x)                                       # (B, T, d)
        last = model(x, last_only=True)                       # (B, d)
        bias = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
        full_b, last_b = model(x, bias=bias), model(x, last_only=True, bias=bias)
    assert last.shape == (5, 16)
    torch.testing.assert_close(last, full[:, -1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last_b, full_b[:, -1], rtol=1e-5, atol=1e-6)
    assert (last_b - last).abs().max() > 1e-4                 # the bias is applied
    torch.testing.assert_close(model.encode_last(x), last)


def test_left_padding_does_not_change_the_real_positions():
    """Positions are aligned to the end, and padded keys are masked: a history encodes the same
    whether it is given as (B, 3) or padded to (B, 12)."""
    model = _encoder()
    short = torch.tensor([[3, 7, 9]])
    padded = torch.cat([torch.zeros(1, 9, dtype=torch.long), short], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded)[:, -3:], model(short), rtol=1e-5, atol=1e-6)
        assert model(padded)[:, :9].abs().max() == 0           # padded positions are zero
        assert torch.isfinite(model(torch.zeros(2, 12, dtype=torch.long))).all()   # all padding


def test_reweight_hook():
    model = _encoder()
    x = _seqs()
    calls = []

    def identity(w, layer):
        calls.append((layer, tuple(w.shape)))
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))   # probabilities
        return w

    def only_self(w, layer):
        return torch.eye(w.shape[-1])[-w.shape[-2]:].expand_as(w)

    with torch.no_grad():
        base = model(x)
        torch.testing.assert_close(model(x, reweight=identity), base, rtol=1e-5, atol=1e-6)
        assert [c[0] for c in calls] == [0, 1] and calls[0][1] == (5, 1, 12, 12)
        assert (model(x, reweight=only_self) - base).abs().max() > 1e-3
        calls.clear()
        torch.testing.assert_close(model(x, reweight=identity, last_only=True), base[:, -1],
                                   rtol=1e-5, atol=1e-6)
        assert calls[-1][1] == (5, 1, 1, 12)


def test_score_items_is_a_dot_product_plus_bias():
    model = _encoder(side_sizes=(3,), item_bias=True)
    with torch.no_grad():
        model.bias.weight.normal_()
        h = torch.randn(4, 16)
        ids = torch.randint(1, 41, (4, 6))
        expected = (model.item_embeddings(ids) * h[:, None]).sum(-1) + model.bias(ids).squeeze(-1)
        torch.testing.assert_close(model.score_items(h, ids), expected)
    # items sharing a side category share part of their embedding
    e = model.item_emb
    torch.testing.assert_close(e(torch.tensor([1])) - e.ids(torch.tensor([1])),
                               e(torch.tensor([4])) - e.ids(torch.tensor([4])))   # items 0 and 3: 0 % 3 == 3 % 3


def test_initialisation_is_seeded_and_leaves_torch_state_alone():
    state = torch.random.get_rng_state()
    a, b, c = _encoder(seed=1), _encoder(seed=1), _encoder(seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (n, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), n
    assert not torch.equal(a.item_emb.ids.weight, c.item_emb.ids.weight)


def test_too_long_sequences_are_refused():
    with pytest.raises(ValueError, match="sequence length 13 exceeds max_len=12"):
        _encoder()(torch.ones(1, 13, dtype=torch.long))


@pytest.mark.parametrize("kw, message", [
    (dict(n_items=0), "n_items=0 must be an integer >= 1"),
    (dict(n_items=5, max_len=2.0), r"max_len=2.0 must be an integer >= 1"),
    (dict(n_items=5, d_model=10, n_heads=3), "d_model=10 must be divisible by n_heads=3"),
    (dict(n_items=5, dropout=1.0), r"dropout=1.0 must be in \[0, 1\)"),
    (dict(n_items=5, dropout=float("nan")), r"dropout=nan must be in \[0, 1\)"),
    (dict(n_items=5, side_sizes=(4, 0)), r"side_sizes=\(4, 0\) must be a list of positive integers"),
])
def test_bad_encoder_configs(kw, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        EncoderConfig(**kw)
