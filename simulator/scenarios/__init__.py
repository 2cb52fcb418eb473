"""Named worlds: a registry of scenarios, like Gymnasium's environment ids.

Each scenario is one TOML file in this folder, ``NAME.toml``: a ``doc`` string whose first line is
the one-line summary (``satbed scenarios`` prints it), then :class:`~simulator.config.SimConfig`
overrides by section, and, for the worlds that reproduce a paper's data regime, a ``[targets]``
table of the published marginals::

    doc = \"\"\"Interests drift within days (EASQ's premise for online learning).

    What the world changes and why, in a paragraph.
    \"\"\"

    [users]
    interest_drift = 0.3

    [targets]                     # optional; see Targets
    source = "SINE RecSys'23 Table 2, Kuaishou"
    users = 37497
    ...

Where a scenario is used, its overrides are the *base* of the world: precedence, lowest first, is
SimConfig's defaults < the scenario < a config file's keys < command-line flags. So::

    load_scenario("clickbait")                                  # a SimConfig
    load_scenario("clickbait", {"users.n_users": 500})          # with overrides on top
    satbed simulate --scenario clickbait --users.n_users 500    # simulate, ab and aa
    [world]                                                     # an experiment's or study's config
    scenario = "clickbait"
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pandas as pd

from simulator.calibration.measure import count, survey_answers
from simulator.calibration.targets import Target
from simulator.calibration.targets import compare as compare_targets
from simulator.config import ConfigError, SimConfig, deep_merge, from_dict, read_toml, set_dotted, with_overrides

META_KEYS = ("doc", "targets")
"""Top-level keys of a scenario file that are not config overrides."""
SECTIONS = tuple(f.name for f in dataclasses.fields(SimConfig) if f.name != "seed")
"""The config sections a scenario may override (the seed belongs to a run, not to a world)."""
INTERACTIONS = ("effective_views", "effective_views+skips")
POSITIVE_NEGATIVE = ("survey", "views")


class UnknownScenarioError(ConfigError):
    """No scenario of that name; the message lists the registered ones."""


@dataclass(frozen=True)
class Targets:
    """Published marginals a scenario reproduces (within ``tolerance``), and what each one counts.

    Attributes:
        source: the paper and table the numbers come from.
        users: users in the data set (compared with the users who appear in the logs).
        interactions: interactions in the data set, counted as ``interactions_are`` says:
            ``"effective_views"`` (clicks, SAQRec's y = 1: watched at least half) or
            ``"effective_views+skips"`` (SINE's instances: positives plus passive negatives).
        questionnaires: answered questionnaires with a positive or negative label (None where the
            paper has none): submitted satisfaction surveys answered "like" or "dislike"
            ("neutral" and inappropriate-content surveys are not counted).
        positive, negative: with ``positive_negative = "survey"``, the "like" and "dislike" answers;
            with ``"views"``, effective views and skips (SINE's positive and passive-negative feedback).
        tolerance: relative tolerance of the users, interactions, questionnaires and the
            positive:negative ratio.
    """
    source: str
    users: int
    interactions: int
    interactions_are: str
    positive: int
    negative: int
    positive_negative: str
    questionnaires: int | None = None
    tolerance: float = 0.1

    def __post_init__(self) -> None:
        if self.interactions_are not in INTERACTIONS:
            raise ConfigError(f"targets.interactions_are={self.interactions_are!r} must be one of "
                              f"{', '.join(INTERACTIONS)}")
        if self.positive_negative not in POSITIVE_NEGATIVE:
            raise ConfigError(f"targets.positive_negative={self.positive_negative!r} must be one of "
                              f"{', '.join(POSITIVE_NEGATIVE)}")
        for name in ("users", "interactions", "positive", "negative"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ConfigError(f"targets.{name}={value!r} must be an integer > 0")
        if self.questionnaires is not None and not (isinstance(self.questionnaires, int) and self.questionnaires > 0):
            raise ConfigError(f"targets.questionnaires={self.questionnaires!r} must be an integer > 0")

    def ratios(self) -> dict[str, float]:
        """The size-free targets: interactions per user, questionnaires per interaction, positive:negative."""
        out = {"interactions_per_user": self.interactions / self.users,
               "positive_per_negative": self.positive / self.negative}
        if self.questionnaires is not None:
            out["questionnaires_per_interaction"] = self.questionnaires / self.interactions
        return out

    def counts(self) -> dict[str, float]:
        """The published counts (users, interactions, questionnaires) and the positive:negative ratio."""
        out = {"users": self.users, "interactions": self.interactions,
               "positive_per_negative": self.positive / self.negative}
        if self.questionnaires is not None:
            out["questionnaires"] = self.questionnaires
        return out

    def rows(self, *, ratios_only: bool = False) -> tuple[Target, ...]:
        """The figures as target rows (:class:`simulator.calibration.targets.Target`), each within the
        relative ``tolerance``: the ratios only, or the counts too."""
        wanted = self.ratios() if ratios_only else {**self.counts(), **self.ratios()}
        return tuple(Target(name, float(value), self.tolerance, self.source) for name, value in wanted.items())


@dataclass(frozen=True)
class Scenario:
    """A registered world: its name, documentation, SimConfig overrides and optional targets."""
    name: str
    doc: str
    overrides: Mapping[str, Any]
    targets: Targets | None = None

    @property
    def summary(self) -> str:
        """The first line of the doc."""
        return self.doc.strip().splitlines()[0].strip()

    def config(self, overrides: Mapping[str, Any] | None = None) -> SimConfig:
        """The scenario's SimConfig, with ``overrides`` (dotted keys or tables) on top."""
        data = copy.deepcopy(dict(self.overrides))
        for key, value in (overrides or {}).items():
            patch: dict[str, Any] = {}
            set_dotted(patch, key, value)
            data = deep_merge(data, patch)
        return from_dict(SimConfig, data)


# ----------------------------------------------------------------------------- the registry
def _folder():
    return resources.files(__name__)


@functools.cache
def _registry() -> dict[str, Scenario]:
    files = sorted((f for f in _folder().iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    found = {f.name[:-len(".toml")]: _parse(f.name[:-len(".toml")], read_toml(str(f)), str(f)) for f in files}
    # the calibrated default first, then alphabetical
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != "default", kv[0])))


def _parse(name: str, data: dict[str, Any], path: str) -> Scenario:
    """Check one scenario file: a doc, known sections only, overrides that build a valid world."""
    unknown = sorted(set(data) - set(META_KEYS) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"scenario file {path}: unknown key(s) {', '.join(unknown)}; a scenario holds "
                          f"doc, targets and the sections {', '.join(SECTIONS)} (not the seed, which "
                          "belongs to a run)")
    doc = data.get("doc")
    if not isinstance(doc, str) or not doc.strip():
        raise ConfigError(f"scenario file {path}: doc must be a non-empty string whose first line is the summary")
    overrides = {k: v for k, v in data.items() if k in SECTIONS}
    try:
        from_dict(SimConfig, copy.deepcopy(overrides))
        targets = Targets(**data["targets"]) if "targets" in data else None
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"scenario file {path}: {err}") from None
    return Scenario(name=name, doc=doc.strip(), overrides=overrides, targets=targets)


def list_scenarios() -> list[str]:
    """Names of the registered scenarios, ``default`` first."""
    return list(_registry())


def get_scenario(name: str) -> Scenario:
    """The registered scenario ``name``; an unknown name is an error that lists the known ones."""
    registry = _registry()
    if name not in registry:
        raise UnknownScenarioError(f"unknown scenario {name!r}; known scenarios: {', '.join(registry)} "
                                   "(satbed scenarios)")
    return registry[name]


def scenario_doc(name: str) -> str:
    """The scenario's documentation; its first line is the one-line summary."""
    return get_scenario(name).doc


def scenario_overrides(name: str) -> dict[str, Any]:
    """The scenario's SimConfig overrides as nested tables (a fresh copy)."""
    return copy.deepcopy(dict(get_scenario(name).overrides))


def load_scenario(name: str, overrides: Mapping[str, Any] | None = None) -> SimConfig:
    """The world of scenario ``name``, with ``overrides`` (``{"users.n_users": 500}`` or tables) on top.

    Raises:
        UnknownScenarioError: no scenario of that name (a :class:`ConfigError`).
        ConfigError: an override is invalid (the message names it).
    """
    return get_scenario(name).config(overrides)


def sized_scenario(name: str, like: SimConfig, overrides: Mapping[str, Any] | None = None) -> SimConfig:
    """Scenario ``name`` at the size of ``like`` (its users, items and days), then ``overrides``."""
    return load_scenario(name, {"users.n_users": like.users.n_users, "catalog.n_items": like.catalog.n_items,
                                "platform.days": like.platform.days, **(overrides or {})})


# ----------------------------------------------------------------------------- scale models
EXTENSIVE = ("users.n_users", "catalog.n_items", "catalog.n_authors", "platform.popular_pool")
"""The sizes a scale model divides; every rate (per user, per item, per day) stays as it is."""
ARRIVALS_PER_DAY = ("users.new_users_per_day", "catalog.new_items_per_day")
"""Counts per day a scale model divides too (unrounded), so the shares of new users and items stay."""


def scale_model(config: SimConfig, factor: float) -> SimConfig:
    """The same world at ``1 / factor`` of its size, over the same days.

    Users, items, authors and the popular pool are divided by ``factor`` (rounded, at least 1; the
    catalog keeps at least ``platform.n_candidates`` items), and so are the arrivals of new users
    and items per day (:data:`ARRIVALS_PER_DAY`), so each item gets about as many
    impressions a day as at full size and the production ranker learns from as much data per item.
    Dividing the users alone would not do: with fewer impressions per item, its popularity and
    like-rate estimates are noisier, users are served worse, and every per-user figure moves (by
    up to 20% at 1/20 in the default catalog). What a scale model keeps is the per-user and
    per-interaction ratios, not the counts.
    """
    if not factor >= 1:
        raise ConfigError(f"factor={factor!r} must be >= 1")
    sizes = {}
    for dotted in EXTENSIVE:
        section, name = dotted.split(".")
        sizes[dotted] = max(1, round(getattr(getattr(config, section), name) / factor))
    for dotted in ARRIVALS_PER_DAY:
        section, name = dotted.split(".")
        sizes[dotted] = getattr(getattr(config, section), name) / factor
    sizes["catalog.n_items"] = max(sizes["catalog.n_items"], config.platform.n_candidates)
    return with_overrides(config, sizes)


# ----------------------------------------------------------------------------- marginals
MARGINAL_COLUMNS = ("user_id", "effective_view", "skip", "survey_answer")


def marginals(logs: pd.DataFrame, targets: Targets) -> dict[str, float]:
    """A log's figures, counted the way ``targets`` counts them.

    Args:
        logs: impressions with at least :data:`MARGINAL_COLUMNS`.
        targets: what to count (see :class:`Targets`).
    Returns:
        users, interactions, questionnaires, positive, negative, and the ratios of
        :meth:`Targets.ratios`.
    """
    n_ev, n_skip = count(logs, "effective_view"), count(logs, "skip")
    interactions = n_ev if targets.interactions_are == "effective_views" else n_ev + n_skip
    likes, dislikes = survey_answers(logs)
    pos, neg = (likes, dislikes) if targets.positive_negative == "survey" else (n_ev, n_skip)
    users = int(logs["user_id"].nunique())
    return {"users": users, "interactions": interactions, "questionnaires": likes + dislikes,
            "positive": pos, "negative": neg,
            "interactions_per_user": interactions / max(users, 1),
            "questionnaires_per_interaction": (likes + dislikes) / max(interactions, 1),
            "positive_per_negative": pos / max(neg, 1)}


def compare(measured: Mapping[str, float], targets: Targets, *, ratios_only: bool = False) -> pd.DataFrame:
    """One row per target figure: target, measured, relative error and whether it is within tolerance
    (:func:`simulator.calibration.targets.compare` of :meth:`Targets.rows`).

    Args:
        measured: :func:`marginals` of a run.
        targets: the scenario's targets.
        ratios_only: compare only the size-free ratios (for a run at a reduced number of users).
    """
    return compare_targets(measured, targets.rows(ratios_only=ratios_only))
