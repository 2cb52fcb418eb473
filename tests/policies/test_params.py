"""Policy hyperparameters: nested groups from tables, errors that name the path, make_policy's errors."""
from dataclasses import dataclass, field

import pytest

from policies import make_policy
from policies.easq import EASQConfig
from policies.encoders import EncoderConfig
from policies.params import ParameterError, nested
from policies.sine.model import SINEConfig
from policies.usm import NetConfig
from simulator.checks import ConfigError, check_int_at_least, check_positive

USM_NET = dict(n_users=3, n_items=4, n_authors=2, n_cats=(1, 2, 3), n_dense=2, heads=("like",), hidden=(16, 8))


@dataclass(frozen=True)
class Train:
    lr: float = 1e-3
    max_epochs: int = 5

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_int_at_least("max_epochs", self.max_epochs, 1)


@dataclass
class Toy:
    train: Train = field(default_factory=Train)

    def __post_init__(self):
        self.train = nested("toy", "train", Train, self.train)


def test_a_table_becomes_its_group_and_an_instance_passes_through():
    assert Toy(train={"lr": 0.5}).train == Train(lr=0.5, max_epochs=5)
    t = Train(lr=0.1)
    assert Toy(train=t).train is t


@pytest.mark.parametrize("value, message", [
    ({"lr": -1.0}, r"^toy: train\.lr=-1\.0 must be > 0$"),
    ({"max_epochs": 0}, r"^toy: train\.max_epochs=0 must be an integer >= 1$"),
    ({"max_epochs": 2.5}, r"^toy: train\.max_epochs=2\.5 must be an integer >= 1$"),
    ({"lr": True}, r"^toy: train\.lr=True must be a finite number$"),
    ({"lrr": 1.0}, r"^toy: train\.lrr is not a parameter; train takes: lr, max_epochs$"),
    (3, r"^toy: train must be a table of lr, max_epochs; got 3$"),
])
def test_errors_name_the_path(value, message):
    with pytest.raises(ParameterError, match=message):
        Toy(train=value)


def test_a_group_built_alone_raises_the_config_error_that_nested_turns_into_a_parameter_error():
    with pytest.raises(ConfigError, match=r"^lr=0 must be > 0$") as alone:
        Train(lr=0)
    assert not isinstance(alone.value, ParameterError)
    with pytest.raises(ParameterError, match=r"^toy: train\.lr=0 must be > 0$"):
        Toy(train={"lr": 0})
    assert issubclass(ParameterError, ConfigError)      # so the CLIs report it like a bad config (exit 2)


@pytest.mark.parametrize("build, message", [
    (lambda: SINEConfig(beta=float("nan")), r"beta=nan must be in \(0, 1\)"),
    (lambda: SINEConfig(n_interests=True), "n_interests=True must be an integer >= 1"),
    (lambda: EASQConfig(EncoderConfig(n_items=5), sat_hidden=0.5), "sat_hidden=0.5 must be an integer >= 1"),
    (lambda: NetConfig(**USM_NET, id_dropout=float("nan")), r"id_dropout=nan must be in \[0, 1\)"),
    (lambda: NetConfig(**{**USM_NET, "hidden": (16, 0)}), r"hidden=\(16, 0\) must be a list of positive integers"),
])
def test_the_networks_configs_use_the_same_checks(build, message):
    """The networks' own configs (checked again where a policy builds them) refuse what the groups refuse."""
    with pytest.raises(ConfigError, match=f"^{message}$"):
        build()


def test_make_policy_names_an_unknown_parameter_and_lists_the_valid_ones():
    with pytest.raises(ParameterError, match=r"^sasrec: d_modl is not a parameter; sasrec takes: .*d_model"):
        make_policy("sasrec", d_modl=3)
