"""Open Bandit Pipeline's bandit_feedback dict: round trips, its layout, and its checks."""

import numpy as np
import pytest

import estimators as est

N, A, L = 30, 4, 3  # rounds, actions, positions


def _arrays(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    target = rng.dirichlet(np.ones(A), size=(N, L)).transpose(0, 2, 1)  # (N, A, L)
    logging = rng.dirichlet(np.ones(A), size=(N, L)).transpose(0, 2, 1)
    action = rng.integers(0, A, N)
    position = rng.integers(0, L, N)
    return {
        "n_actions": A,
        "action": action,
        "position": position,
        "reward": rng.integers(0, 2, N),
        "pscore": logging[np.arange(N), action, position],
        "context": rng.normal(size=(N, 5)),
        "action_context": rng.normal(size=(A, 2)),
        "action_dist": target,
        "pi_b": logging,
        "expected_reward": rng.random((N, A)),
    }


def _assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def test_round_trip_from_arrays_to_dict_and_back():
    arrays = _arrays()
    feedback = est.to_bandit_feedback(**arrays)
    assert list(feedback) == ["n_rounds", "n_actions", "action", "position", "reward", "pscore",
                              "context", "action_context", "action_dist", "pi_b",
                              "expected_reward"]
    assert feedback["n_rounds"] == N
    assert feedback["action_dist"].shape == (N, A, L)
    back = est.from_bandit_feedback(feedback)
    for key, value in arrays.items():
        np.testing.assert_array_equal(getattr(back, key), value, err_msg=key)
    _assert_same(back.to_dict(), feedback)
    assert back.n_rounds == N and back.len_list == L


def test_minimal_feedback_like_open_bandit_dataset():
    arrays = {k: _arrays()[k] for k in ("n_actions", "action", "reward", "pscore")}
    feedback = est.to_bandit_feedback(**arrays)
    # OpenBanditDataset's keys and the target's action_dist, absent ones None; no synthetic extras
    assert list(feedback) == list(est.obp_adapter.CORE_KEYS)
    assert feedback["context"] is None and feedback["action_dist"] is None
    np.testing.assert_array_equal(feedback["position"], np.zeros(N))  # obp reads None as 0
    _assert_same(est.to_bandit_feedback(**arrays), feedback)
    _assert_same(est.from_bandit_feedback(feedback).to_dict(), feedback)


def test_dict_arrays_are_writable_copies_and_the_dataclass_is_read_only():
    arrays = _arrays()
    back = est.from_bandit_feedback(est.to_bandit_feedback(**arrays))
    arrays["reward"][0] = 99
    assert back.reward[0] != 99
    with pytest.raises(ValueError, match="read-only"):
        back.action[0] = 1
    out = back.to_dict()
    out["reward"][0] = 99  # obp code may write into its dict
    assert back.reward[0] != 99


def test_to_ope_data_picks_the_logged_action_and_matches_obp_dr():
    arrays = _arrays(1)
    feedback = est.from_bandit_feedback(est.to_bandit_feedback(**arrays))
    rng = np.random.default_rng(2)
    q_hat = rng.random((N, A, L))  # estimated_rewards_by_reg_model
    data = feedback.to_ope_data(q_hat)
    i, a, k = np.arange(N), arrays["action"], arrays["position"]
    np.testing.assert_array_equal(data.action_dist, arrays["action_dist"][i, a, k])
    np.testing.assert_array_equal(data.position, k)
    # obp's DoublyRobust, written out over the full arrays
    pi_e = arrays["action_dist"][i, :, k]  # (N, A)
    w = arrays["action_dist"][i, a, k] / arrays["pscore"]
    obp_dr = np.mean((pi_e * q_hat[i, :, k]).sum(1) + w * (arrays["reward"] - q_hat[i, a, k]))
    assert est.get_estimator("dr")(data).value == pytest.approx(obp_dr, abs=1e-12)
    obp_ips = np.mean(w * arrays["reward"])
    assert est.get_estimator("ips")(feedback.to_ope_data()).value == pytest.approx(obp_ips,
                                                                                   abs=1e-12)


def _with(**change) -> dict:
    return {**_arrays(), **change}


@pytest.mark.parametrize(("kwargs", "match"), [
    (_with(n_actions=1), "n_actions must be an integer >= 2, got 1"),
    (_with(n_actions=4.0), "n_actions must be an integer >= 2, got 4.0"),
    (_with(action=np.r_[7, np.zeros(N - 1, int)]),
     r"action must be in \[0, n_actions=4\), got 7.0 at index 0"),
    (_with(action=np.full(N, 1.5)), "action must be whole numbers, got 1.5 at index 0"),
    (_with(reward=np.ones(N - 1)), r"reward must have shape \(30,\), got \(29,\)"),
    (_with(pscore=np.zeros(N)), r"pscore must be in \(0, 1\], got 0.0 at index 0"),
    (_with(position=np.full(N, L)), r"position must be in \[0, len_list=3\), got 3.0 at index 0"),
    (_with(position=np.zeros(N - 2, int)), "action and position must have the same length"),
    (_with(context=np.ones(N)), r"context must be 2-D, got shape \(30,\)"),
    (_with(action_context=np.ones((A + 1, 2))), r"action_context must have shape \(4, \*\)"),
    (_with(action_dist=np.full((N, A, L), 0.3)),
     r"action_dist must sum to 1 over actions \(axis 1\), got 1.2.* at round 0, position 0"),
    (_with(action_dist=np.ones((N, A + 1, L)) / (A + 1)),
     r"action_dist must have shape \(30, 4, \*\), got \(30, 5, 3\)"),
    (_with(pi_b=np.ones((N, A, L + 1)) / A), r"pi_b must have shape \(30, 4, 3\)"),
    (_with(expected_reward=np.ones((N, A, 1))), "expected_reward must be 2-D"),
])
def test_to_bandit_feedback_rejects_bad_arrays(kwargs, match):
    with pytest.raises(ValueError, match=match):
        est.to_bandit_feedback(**kwargs)


@pytest.mark.parametrize(("change", "exc", "match"), [
    ({"n_rounds": N + 1}, ValueError, "n_rounds must equal the length of action, 30, got 31"),
    ({"n_rounds": None}, ValueError, "n_rounds must equal the length of action"),
    ({"pscores": 1.0}, ValueError, "feedback has unknown key.* pscores; known: n_rounds"),
    ({"pscore": None}, ValueError, r"pscore must be given \(an array\), got None"),
    ({"reward": ["a"] * N}, ValueError, "reward must be numeric"),
])
def test_from_bandit_feedback_rejects_bad_dicts(change, exc, match):
    feedback = {**est.to_bandit_feedback(**_arrays()), **change}
    with pytest.raises(exc, match=match):
        est.from_bandit_feedback(feedback)


def test_from_bandit_feedback_needs_a_mapping_with_the_required_keys():
    feedback = est.to_bandit_feedback(**_arrays())
    del feedback["pscore"], feedback["reward"]
    with pytest.raises(ValueError, match="feedback lacks key.* reward, pscore"):
        est.from_bandit_feedback(feedback)
    with pytest.raises(TypeError, match="feedback must be a dict .* got list"):
        est.from_bandit_feedback([1, 2])


def test_to_ope_data_needs_a_target_and_a_well_shaped_model():
    feedback = est.BanditFeedback(**{k: _arrays()[k] for k in ("n_actions", "action", "reward",
                                                               "pscore")})
    with pytest.raises(ValueError, match="to_ope_data needs the target's action_dist"):
        feedback.to_ope_data()
    with_target = est.BanditFeedback(**_arrays())
    with pytest.raises(ValueError, match=r"estimated_rewards must have shape \(30, 4, 3\)"):
        with_target.to_ope_data(np.ones((N, A, L - 1)))
