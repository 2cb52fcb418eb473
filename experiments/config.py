"""The config of a simulated A/B (or A/A) test: its buckets, periods and learning schedule.

Kept apart from :mod:`experiments.runner` so that reading or validating a config (``satbed ab --help``,
the studies' configs) imports no statistics and no policies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from simulator.checks import check_choice, check_int_at_least, check_interval, check_nonnegative, check_probability
from simulator.config import ConfigError, SimConfig, doc_field


@dataclass(frozen=True, slots=True)
class BucketConfig:
    """A policy serving an arm: of an A/B test (``[[buckets]]``) or of a study (``[[policies]]``)."""
    name: str = doc_field("control", "bucket name (letters, digits, '_' and '-')")
    policy: str = doc_field("production", "registered policy serving the bucket (`satbed policies`)")
    share: float | None = doc_field(None, "share of users assigned to the bucket (unset: an equal part of what "
                                          "the buckets with a share leave)")
    params: dict = field(default_factory=dict, metadata={"doc": "keyword arguments of the policy"})

    def __post_init__(self) -> None:
        if not self.name or not all(ch.isalnum() or ch in "_-" for ch in self.name):
            raise ConfigError(f"bucket name={self.name!r} must be non-empty letters, digits, '_' or '-'")
        if self.share is not None:
            check_probability("share", self.share)
        if not isinstance(self.params, dict):
            raise ConfigError(f"params={self.params!r} must be a table")


def with_shares(buckets: tuple[BucketConfig, ...]) -> tuple[BucketConfig, ...]:
    """The buckets with every unset share filled: equal parts of what the set shares leave (the last
    unset one absorbs the rounding, so the shares sum to 1 exactly when none is set)."""
    unset = [i for i, b in enumerate(buckets) if b.share is None]
    if not unset:
        return buckets
    left = 1.0 - sum(b.share for b in buckets if b.share is not None)
    if left < 0:
        raise ConfigError(f"bucket shares must sum to 1, but the set ones already sum to {1.0 - left:.6g}")
    part = left / len(unset)
    shares = {i: part for i in unset[:-1]} | {unset[-1]: left - part * (len(unset) - 1)}
    return tuple(replace(b, share=shares[i]) if i in shares else b for i, b in enumerate(buckets))


DEFAULT_BUCKETS = (
    BucketConfig("control", "production", 1 / 5),
    BucketConfig("sasrec", "sasrec", 1 / 5),
    BucketConfig("easq_click", "easq", 1 / 5, {"fusion": (1.0, 1.0, 1.0, 0.0)}),
    BucketConfig("easq", "easq", 1 / 5),
    BucketConfig("oracle", "oracle", 1 / 5),
)
"""The main job's arms: production, the click-only SASRec, EASQ (the questionnaire-aware policy
with the strongest results in head_to_head) and its click-only twin, and the oracle."""
DEFAULT_QUESTIONNAIRE_PAIRS = (("easq", "easq_click"),)


LEARNING = ("frozen", "update", "refit")
"""The A/B learning schedules (``ABSettings.learning``), the same for every bucket."""


@dataclass(frozen=True, slots=True)
class ABSettings:
    """The periods, learning schedule and statistics of an A/B test: the ``[ab]`` table of an
    experiment and of every study that runs one (each study sets its own defaults)."""
    pre_days: int = doc_field(3, "days served by the production policy before the experiment (training logs)")
    days: int = doc_field(7, "experiment days")
    learning: str = doc_field("frozen", "how every bucket's policy learns during the experiment: frozen (the "
                              "pre-period fit only), update (update() with the bucket's new logs every "
                              "update_interval_s, update_epochs passes) or refit (refit daily on the pre-period "
                              "plus the bucket's logs)")
    update_interval_s: float = doc_field(3600.0, "learning = update: seconds between update() calls")
    update_epochs: int = doc_field(1, "learning = update: passes over the new logs per update() call")
    alpha: float = doc_field(0.05, "significance level of the lift analysis")
    correction: str = doc_field("holm", "multiple-comparison correction: holm or bh")

    def __post_init__(self) -> None:
        check_int_at_least("pre_days", self.pre_days, 1)
        check_int_at_least("days", self.days, 1)
        check_choice("learning", self.learning, LEARNING)
        check_nonnegative("update_interval_s", self.update_interval_s)
        if self.learning == "update" and not self.update_interval_s > 0:
            raise ConfigError(f"learning='update' needs update_interval_s > 0, got {self.update_interval_s!r}")
        check_int_at_least("update_epochs", self.update_epochs, 1)
        check_choice("correction", self.correction, ("holm", "bh"))
        check_interval("alpha", self.alpha, 0, 1, open_left=True, open_right=True)

    @property
    def experiment_days(self) -> range:
        """The experiment's day indices (the pre-period is days 0 .. pre_days - 1)."""
        return range(self.pre_days, self.pre_days + self.days)

    def describe_learning(self) -> str:
        """The learning schedule in words, for reports (one home for the phrase)."""
        if self.learning == "update":
            return (f"learning `update`: every policy with an update() learns from its own bucket's new logs every "
                    f"{self.update_interval_s / 3600:g} h ({self.update_epochs} pass(es))")
        if self.learning == "refit":
            return "learning `refit`: every policy is refit daily on the pre-period plus its own bucket's logs"
        return "learning `frozen`: every policy serves its pre-period fit"


def ab_settings(**defaults: Any) -> Any:
    """A dataclass field holding an :class:`ABSettings` with a study's own defaults."""
    return field(default_factory=lambda: ABSettings(**defaults),
                 metadata={"doc": "the A/B periods, learning schedule and statistics (ABSettings)"})


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    """An A/B test on a world; ``world.platform.days`` is not used (see ``ab.pre_days`` and ``ab.days``)."""
    world: SimConfig = field(default_factory=SimConfig)
    ab: ABSettings = ab_settings()
    buckets: tuple[BucketConfig, ...] = field(default=DEFAULT_BUCKETS, metadata={"doc": "the arms"})
    control: str = doc_field("control", "name of the control bucket")
    salt: str = doc_field("satbed", "salt of the user-to-bucket hash")
    policy_seed: int = doc_field(0, "seed of the policies' training randomness (initialisation, negatives, dropout): "
                             "0 derives it from the world seed; another value redraws it on the same world")
    questionnaire_pairs: tuple[tuple[str, str], ...] = doc_field(
        DEFAULT_QUESTIONNAIRE_PAIRS, "(bucket using questionnaires, its click-only twin) pairs: the report says in "
                                     "plain words whether using questionnaires raised satisfaction (default: easq "
                                     "vs easq_click where both buckets exist, else none)")
    shadow: tuple[str, ...] = doc_field((), "off-policy evaluation: buckets whose policies also score every request of the "
                                     "control bucket, their scores logged with its candidates (needs "
                                     "world.platform.log_candidates; see experiments.ope_data): the model that serves "
                                     "a bucket online is the one evaluated off-policy on the control's logs")
    torch_threads: int = doc_field(1, "torch threads (1 is fastest on a busy 2-core machine)")

    def __post_init__(self) -> None:
        check_int_at_least("torch_threads", self.torch_threads, 1)
        check_int_at_least("policy_seed", self.policy_seed, 0)
        names = [b.name for b in self.buckets]
        if len(names) < 2:
            raise ConfigError(f"buckets must name at least two arms, got {names}")
        if len(set(names)) != len(names):
            raise ConfigError(f"bucket names must be unique, got {names}")
        if self.control not in names:
            raise ConfigError(f"control={self.control!r} is not a bucket; buckets: {', '.join(names)}")
        object.__setattr__(self, "buckets", with_shares(self.buckets))
        total = sum(b.share for b in self.buckets)
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"bucket shares must sum to 1, got {total:.6g}")
        if self.questionnaire_pairs == DEFAULT_QUESTIONNAIRE_PAIRS and not set(DEFAULT_QUESTIONNAIRE_PAIRS[0]) <= set(names):
            object.__setattr__(self, "questionnaire_pairs", ())   # the default applies only where its buckets exist
        if self.shadow and not self.world.platform.log_candidates:
            raise ConfigError("shadow targets need world.platform.log_candidates = true (their scores are logged "
                              "with the candidates)")
        for name in self.shadow:
            if name not in names or name == self.control:
                raise ConfigError(f"shadow: {name!r} must be a bucket other than the control ({self.control!r}); "
                                  f"buckets: {', '.join(names)}")
        if len(set(self.shadow)) != len(self.shadow):
            raise ConfigError(f"shadow buckets must be unique, got {list(self.shadow)}")
        for pair in self.questionnaire_pairs:
            if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(names):
                raise ConfigError(f"questionnaire_pairs: {list(pair)} must be two different buckets of {names} "
                                  "(set questionnaire_pairs = [] when the buckets have no such pair)")

    @property
    def control_bucket(self) -> BucketConfig:
        return next(b for b in self.buckets if b.name == self.control)

    def as_aa(self) -> ExperimentConfig:
        """The same experiment with every bucket served by the control's policy (an A/A test)."""
        c = self.control_bucket
        return replace(self, buckets=tuple(replace(b, policy=c.policy, params=dict(c.params))
                                           for b in self.buckets))



def default_out(prefix: str, seed: int) -> Path:
    return Path("runs") / f"{prefix}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
