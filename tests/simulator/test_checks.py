"""The one family of checks of named settings (config fields and policy parameters): each accepts
its domain and refuses the rest with a ConfigError that names the setting and the value."""
import pytest

from simulator.checks import (ConfigError, check_beta, check_choice, check_finite, check_flag, check_int_at_least,
                              check_interval, check_nonnegative, check_positive, check_probability, check_sizes,
                              check_temperature, is_finite_number)
from simulator.config import BehaviourConfig, CatalogConfig, PlatformConfig, QuestionnaireConfig, UserConfig
from simulator.config import ConfigError as ReExported

NAN, INF = float("nan"), float("inf")


def test_config_error_has_one_definition():
    assert ReExported is ConfigError and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("check, good, bad", [
    (check_finite, [0, -2.5, 1e300], [NAN, INF, -INF, True, "1", None]),
    (check_positive, [1e-9, 3], [0, -1.0, NAN, INF, True, "1"]),
    (check_nonnegative, [0, 0.0, 7], [-1e-9, NAN, INF, False, None]),
    (check_probability, [0, 0.5, 1], [-0.1, 1.1, NAN, INF, True, "0.5"]),
    (lambda n, v: check_probability(n, v, open_right=True), [0, 0.99], [1, 1.0, -0.1]),
    (lambda n, v: check_interval(n, v, 0, 1, open_left=True), [1e-9, 1], [0, 0.0, 1.5]),
    (lambda n, v: check_interval(n, v, -1, 1), [-1, 1], [-1.5, NAN]),
    (lambda n, v: check_int_at_least(n, v, 1), [1, 10**9], [0, -1, 2.0, 2.5, True, "3", None]),
    (lambda n, v: check_int_at_least(n, v, 0), [0], [-1, False]),
    (check_sizes, [(64, 32), [8], (1,)], [(), [], (64, 0), (64, 2.0), (True,), "64", 64, None]),
    (lambda n, v: check_sizes(n, v, allow_empty=True), [(), [4]], [(0,), "ab"]),
    (lambda n, v: check_choice(n, v, ("a", "b")), ["a", "b"], ["c", None, ""]),
    (check_flag, [True, False], [1, 0, "true", None]),
    (check_temperature, [None, 0.5, 2], [0, -1.0, NAN, True]),
    (check_beta, [(2.0, 3.0), (1, 1)], [(0.0, 1.0), (1.0,), [1.0, 2.0], (1.0, INF), (True, 1.0)]),
])
def test_each_check_accepts_its_domain_and_refuses_the_rest(check, good, bad):
    for value in good:
        check("x", value)
    for value in bad:
        with pytest.raises(ConfigError, match=r"^x=.* must be "):
            check("x", value)


@pytest.mark.parametrize("call, message", [
    (lambda: check_positive("lr", -1.0), "lr=-1.0 must be > 0"),
    (lambda: check_positive("lr", True), "lr=True must be a finite number"),
    (lambda: check_positive("lr", NAN), "lr=nan must be a finite number"),
    (lambda: check_nonnegative("w", -0.5), "w=-0.5 must be >= 0"),
    (lambda: check_probability("p", NAN), r"p=nan must be in \[0, 1\]"),
    (lambda: check_probability("p", "a"), "p='a' must be a finite number"),
    (lambda: check_probability("d", 1.0, open_right=True), r"d=1.0 must be in \[0, 1\)"),
    (lambda: check_interval("s", 0.5, 0, 0.5, open_right=True), r"s=0.5 must be in \[0, 0.5\)"),
    (lambda: check_interval("m", 0.0, 0, 1, open_left=True, open_right=True), r"m=0.0 must be in \(0, 1\)"),
    (lambda: check_int_at_least("n", 2.5, 1), "n=2.5 must be an integer >= 1"),
    (lambda: check_sizes("hidden", (64, 0)), r"hidden=\(64, 0\) must be a list of positive integers"),
    (lambda: check_choice("metric", "auc", ("gauc", "hr@10")), "metric='auc' must be one of 'gauc', 'hr@10'"),
    (lambda: check_flag("sid", "no"), "sid='no' must be true or false"),
])
def test_messages_name_the_setting_its_value_and_the_domain(call, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        call()


def test_is_finite_number_is_an_int_or_float_and_never_a_bool():
    assert is_finite_number(3) and is_finite_number(-0.5)
    assert not any(is_finite_number(v) for v in (True, NAN, INF, "1", None, 1j))


@pytest.mark.parametrize("cls, kwargs, message", [
    (QuestionnaireConfig, {"base_rate": True}, "base_rate=True must be a finite number"),
    (PlatformConfig, {"tick_s": NAN}, "tick_s=nan must be a finite number"),
    (UserConfig, {"activity_mean": True}, "activity_mean=True must be a finite number"),
    (BehaviourConfig, {"sat_bias": False}, "sat_bias=False must be a finite number"),
    (CatalogConfig, {"clickbait_corr": "high"}, "clickbait_corr='high' must be a finite number"),
    (QuestionnaireConfig, {"targeting": "all"}, "targeting='all' must be one of 'none', 'popular_items', "),
])
def test_config_sections_refuse_bools_and_nan_like_policy_parameters(cls, kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        cls(**kwargs)
