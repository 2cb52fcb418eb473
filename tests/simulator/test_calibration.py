"""Calibration: each figure against its closed form, the targets table and its errors, knobs, the fit's
identifiability (perturbed knobs are recovered from their own figures) and `satbed calibrate`."""
from __future__ import annotations

import json
import math
import re
import tomllib

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.simulate import serving_policy
from satbed.cli import main
from simulator.calibration.fit import achieved, calibrate, calibration_world, parse_knobs, simulate_figures
from simulator.calibration.measure import FIGURES, WATCH_RATIO_MAX, measure, over_seeds
from simulator.calibration.targets import (MISS_CAP, PUBLIC_TARGETS, Target, TargetTable, compare, load_targets,
                                           parse_targets)
from simulator.config import ConfigError, SimConfig, load_toml, with_overrides
from simulator.scenarios import get_scenario
from simulator.schema import LogData
from tests_support import first_world

FAST = with_overrides(SimConfig(), {"platform.tick_s": 900.0})
"""A world served in 15-minute rounds: five times faster to simulate than the default's minute, and as
good a world to test a fit on."""
FIRST_FAST = first_world(FAST)
"""FAST with the first default world's denser explicit feedback: a one-day run of 1,500 users has
hundreds of dislikes there (a few dozen in today's world, too few to identify their intercept)."""
TINY = ["--set", "platform.tick_s=900", "--users", "150", "--days", "1", "--quiet"]


# ----------------------------------------------------------------------------- figures: closed forms
def _impressions() -> pd.DataFrame:
    """Ten plays by two users: user 0 on days 0, 1 and 3 (gaps 1, 2), user 1 on day 0 (no gap)."""
    return pd.DataFrame({
        "user_id":          [0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        "day":              [0, 0, 0, 0, 1, 1, 3, 0, 0, 0],
        "watch_time":       [1.0, 5.0, 10.0, 20.0, 2.0, 8.0, 60.0, 4.0, 3.0, 9.0],
        "duration":         [10.0, 10.0, 10.0, 10.0, 20.0, 20.0, 10.0, 8.0, 6.0, 30.0],
        "effective_view":   [False, True, True, True, False, False, True, True, True, False],
        "skip":             [True, False, False, False, True, False, False, False, False, False],
        "like":             [False, True, True, False, False, False, True, False, False, False],
        "share":            [False, True, False, False, False, False, False, False, False, False],
        "comment":          [False, False, True, False, False, False, False, False, False, False],
        "follow":           [False, False, False, False, False, False, False, False, True, False],
        "dislike":          [True, False, False, False, False, False, False, False, False, False],
        "report":           [False, False, False, False, True, False, False, False, False, False],
        "survey_submitted": [False, True, True, True, False, False, True, False, True, False],
        "survey_answer":    [None, "like", "dislike", "like", None, None, "suitable", None, "neutral", None],
    })


def test_each_figure_against_its_closed_form():
    run = LogData(_impressions(), pd.DataFrame(), pd.DataFrame())
    m = measure(run)
    ratios = np.array([0.1, 0.5, 1.0, 2.0, 0.1, 0.4, 0.5, 0.5, 0.3])      # 60 / 10 = 6 > 5 is left out
    plays = np.array([4, 2, 1, 3])                                          # (0,0) (0,1) (0,3) (1,0)
    expected = {
        "like_rate": 3 / 10, "negative_rate": 2 / 10, "positive_per_negative": (3 + 1 + 1 + 1) / 2,
        "share_rate": 1 / 10, "comment_rate": 1 / 10, "follow_rate": 1 / 10,
        "watch_ratio_q1": np.quantile(ratios, 0.25), "watch_ratio_median": 0.5, "watch_ratio_mean": ratios.mean(),
        "watch_ratio_q3": np.quantile(ratios, 0.75), "duration_median_s": 10.0,
        "plays_per_user_day_mean": 2.5, "plays_per_user_day_median": 2.5,
        "answered_per_effective_view": 5 / 6, "survey_like_per_dislike": 2 / 1, "effective_views_per_skip": 6 / 2,
        "return_gap_one_day_share": 1 / 2,
    }
    assert set(m) == set(FIGURES) == set(expected)
    for name, value in expected.items():
        assert m[name] == pytest.approx(value), name
    assert WATCH_RATIO_MAX == 5.0


def test_an_empty_denominator_is_nan_not_zero():
    logs = _impressions()
    logs[["dislike", "report", "skip"]] = False
    logs["survey_answer"] = logs["survey_answer"].replace("dislike", "neutral")
    m = measure(LogData(logs[logs["user_id"] == 1], pd.DataFrame(), pd.DataFrame()))
    for name in ("positive_per_negative", "survey_like_per_dislike", "effective_views_per_skip",
                 "return_gap_one_day_share"):
        assert math.isnan(m[name]), name
    assert m["negative_rate"] == 0.0


def test_unknown_figure_is_an_error_listing_the_known_ones():
    with pytest.raises(KeyError, match="unknown figure.s. like_rat; known: like_rate"):
        measure(LogData(_impressions(), pd.DataFrame(), pd.DataFrame()), ["like_rat"])


def test_over_seeds_is_a_student_t_interval():
    table = over_seeds([{"a": 1.0, "b": 5.0}, {"a": 2.0, "b": float("nan")}, {"a": 3.0, "b": 7.0}])
    a = table.set_index("figure").loc["a"]
    half = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)
    assert (a["measured"], a["n_seeds"]) == (2.0, 3)
    assert a["ci_low"] == pytest.approx(2 - half) and a["ci_high"] == pytest.approx(2 + half)
    b = table.set_index("figure").loc["b"]
    assert (b["measured"], b["n_seeds"]) == (6.0, 2)          # the undefined seed is left out


# ----------------------------------------------------------------------------- targets
def test_the_public_targets_parse_and_every_row_is_sourced():
    table = load_targets(PUBLIC_TARGETS)
    assert set(table.names) == set(FIGURES), "a row for every figure"
    for t in table.rows:
        assert t.source.strip() and t.tolerance > 0
        assert isinstance(t.default_meets, bool), f"{t.name}: say whether the default world meets it"
    assert "Kuaishou" in table.doc and "WeChat" in table.doc and "relabelled" in table.doc


def test_the_public_targets_agree_with_the_paper_scenarios():
    """The rows from SAQRec and SINE are the same numbers as the scenarios' published counts."""
    rows = {t.name: t.value for t in load_targets(PUBLIC_TARGETS).rows}
    saqrec, sine = get_scenario("saqrec_commercial").targets, get_scenario("sine_kuaishou").targets
    assert rows["survey_like_per_dislike"] == pytest.approx(saqrec.positive / saqrec.negative, rel=1e-3)
    assert rows["answered_per_effective_view"] == pytest.approx(saqrec.questionnaires / saqrec.interactions, rel=1e-3)
    assert rows["effective_views_per_skip"] == pytest.approx(sine.positive / sine.negative, rel=1e-3)


ROW = {"name": "like_rate", "value": 0.02, "tolerance": 0.1, "source": "a notebook, cell 3"}
BAD_TARGET_FILES = [
    ({"doc": "x"}, "has no [[target]] rows"),
    ({"target": [ROW], "targetz": 1}, "unknown key(s) targetz"),
    ({"target": [ROW, {**ROW, "name": "share_rate", "source": ""}]}, "row 2 (share_rate): source=''"),
    ({"target": [{**ROW, "tolerance": -0.1}]}, "row 1 (like_rate): tolerance=-0.1 must be a number > 0"),
    ({"target": [{k: v for k, v in ROW.items() if k != "tolerance"}]}, "row 1 (like_rate): missing key(s) tolerance"),
    ({"target": [{**ROW, "name": "likes"}]}, "row 1 (likes): unknown figure 'likes'; known figures: like_rate"),
    ({"target": [ROW, ROW]}, "row 2 (like_rate): figure 'like_rate' has a row already"),
    ({"target": [{**ROW, "value": 0.0}]}, "row 1 (like_rate): value=0 needs tolerance_kind"),
    ({"target": [{**ROW, "tolerance_kind": "percent"}]}, "tolerance_kind='percent' must be one of relative, absolute"),
    ({"target": [{**ROW, "default_meets": "yes"}]}, "default_meets='yes' must be true or false"),
    ({"target": [{**ROW, "min_days": 0}]}, "min_days=0 must be an integer >= 1"),
    ({"target": [{**ROW, "tolerence": 0.1}]}, "row 1 (like_rate): unknown key(s) tolerence"),
]


@pytest.mark.parametrize(("data", "fragment"), BAD_TARGET_FILES)
def test_bad_targets_files_are_errors_naming_the_row(data, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)) as info:
        parse_targets(data, where="mine.toml", figures=list(FIGURES))
    assert "targets file mine.toml" in str(info.value)


def test_missing_targets_file_and_unknown_rows(tmp_path):
    with pytest.raises(ConfigError, match="targets file .*nope.toml does not exist"):
        load_targets(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="unknown target row.s. likes; the table's rows: like_rate"):
        load_targets(PUBLIC_TARGETS).select(["likes"])


def test_compare_relative_and_absolute_rows():
    rows = [Target("a", 0.02, 0.1, "s"), Target("b", 0.7, 0.05, "s", tolerance_kind="absolute"),
            Target("c", 3.0, 0.1, "s")]
    table = compare({"a": 0.0219, "b": 0.64, "c": float("nan")}, rows).set_index("figure")
    assert table.loc["a", "miss"] == pytest.approx(0.95) and table.loc["a", "within"]
    assert table.loc["b", "miss"] == pytest.approx(-1.2) and not table.loc["b", "within"]
    assert table.loc["c", "miss"] == MISS_CAP and not table.loc["c", "within"]
    assert table.loc["a", "relative_error"] == pytest.approx(0.095)


# ----------------------------------------------------------------------------- knobs
@pytest.mark.parametrize(("spec", "fragment"), [
    ("behaviour.like_biass", "unknown knob 'behaviour.like_biass'" + ".*did you mean behaviour.like_bias"),
    ("platform.policy", "unknown knob 'platform.policy': a knob is a numeric SimConfig field"),
    ("questionnaire.one_per_page", "unknown knob 'questionnaire.one_per_page'"),
    ("seed", "unknown knob 'seed'"),
    ("users.n_users", "is a size of the simulated world"),
    ("behaviour.like_bias=-3:-1", "bounds must satisfy LOW < HIGH and contain the start -5.07"),
    ("behaviour.like_bias=-8", "bounds must be LOW:HIGH"),
])
def test_bad_knobs_are_errors_naming_them(spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_knobs([spec], SimConfig())


def test_knob_steps_bounds_and_integers():
    like, cap, skip = parse_knobs(["behaviour.like_bias=-8:-2", "questionnaire.per_user_daily_cap",
                                   "behaviour.skip_bias"], first_world(SimConfig()))   # like -4.5, skip 0
    assert (like.start, like.step, like.bounds()) == (-4.5, 0.6, (pytest.approx(-35 / 6), pytest.approx(25 / 6)))
    assert cap.integer and cap.step == 1.0 and cap.value(0.6) == 4
    assert skip.step == 0.1 and skip.value(-2) == pytest.approx(-0.2)
    with pytest.raises(ConfigError, match="named twice"):
        parse_knobs(["behaviour.like_bias", "behaviour.like_bias"], SimConfig())


# ----------------------------------------------------------------------------- simulated figures and the fit
def test_the_same_seed_gives_the_same_figures_and_another_seed_others():
    world = calibration_world(FAST, users=150, days=1)
    a, b, c = simulate_figures(world, serving_policy, [0, 0, 1], ["like_rate", "effective_views_per_skip"])
    assert a == b and a != c


def test_a_knob_that_moves_no_figure_is_an_error():
    targets = TargetTable("", (Target("like_rate", 0.02, 0.1, "s"),))
    with pytest.raises(ConfigError, match="knob questionnaire.fresh_impressions moved none of the fitted figures "
                                          r"\(like_rate\)"):
        calibrate(targets, parse_knobs(["questionnaire.fresh_impressions"], FAST), base=FAST,
                  make_policy=serving_policy, seeds=[0], budget=5, users=150, days=1, progress=False)


RECOVERY_TOLERANCE = 0.1
"""How far each fitted knob may be from the truth, in the knob's own units (both are logit intercepts)."""


@pytest.mark.slow
def test_perturbed_knobs_are_recovered_from_their_own_figures():
    """Identifiability: a world with the like and dislike intercepts moved by +0.5 is simulated on the
    seeds the fit uses, and its like and negative rates become the targets. The true knobs are then an
    exact zero of the objective (common random numbers), so a fit from the defaults must find them: a
    figure that does not respond to its knob, an objective that is not deterministic, or an optimiser
    that stops early or wanders lands outside the tolerance. (Measured: within 0.001 and 0.025, in 13 settings.)"""
    truth = {"behaviour.like_bias": FIRST_FAST.behaviour.like_bias + 0.5, "behaviour.dislike_bias": FIRST_FAST.behaviour.dislike_bias + 0.5}
    names = ["like_rate", "negative_rate"]
    world = with_overrides(calibration_world(FIRST_FAST, users=1500, days=1), truth)
    figures = simulate_figures(world, serving_policy, [0], names)[0]
    targets = TargetTable("the perturbed world", tuple(Target(n, figures[n], 0.1, "truth") for n in names))
    knobs = parse_knobs(list(truth), FIRST_FAST)
    assert all(abs(k.start - truth[k.name]) > RECOVERY_TOLERANCE for k in knobs), "the fit has to move"
    cal = calibrate(targets, knobs, base=FIRST_FAST, make_policy=serving_policy, seeds=[0], report_seeds=[0],
                    budget=30, users=1500, days=1, progress=False)
    errors = {name: abs(cal.fitted[name] - value) for name, value in truth.items()}
    assert max(errors.values()) <= RECOVERY_TOLERANCE, errors
    assert cal.objective < cal.evaluations["objective"].iloc[0] / 50
    assert len(cal.evaluations) <= 30 and cal.table["within"].all()
    assert cal.config.behaviour.like_bias == cal.fitted["behaviour.like_bias"]
    assert cal.config.users.n_users == FIRST_FAST.users.n_users, "the fitted config is the full-size world"


TARGET_WORLD = {"users": 500, "days": 14}
"""The scale model of the default world that the target test simulates: 500 users (catalog, authors and
popular pool divided with them) over the two weeks the return-gap row needs."""


@pytest.mark.slow
def test_the_default_world_meets_every_public_target_over_seeds_0_to_3():
    """Every row of the public targets table (KuaiRand-Pure, KuaiRec, SAQRec, SINE) holds within its
    tolerance for the mean over seeds 0-3 of the default world, served by its production ranker; and
    the table says so (default_meets)."""
    targets = load_targets(PUBLIC_TARGETS)
    table = achieved(targets, calibration_world(SimConfig(), **TARGET_WORLD), serving_policy, range(4))
    assert table["comparable"].all()
    missed = table.loc[~table["within"], ["figure", "target", "measured", "miss"]]
    assert missed.empty, f"rows the default world misses:\n{missed.to_string()}"
    assert all(t.default_meets for t in targets.rows)


# ----------------------------------------------------------------------------- the command line
@pytest.mark.parametrize(("args", "fragment"), [
    (["--knobs", "behaviour.like_biass"], "unknown knob 'behaviour.like_biass'"),
    (["--knobs", "behaviour.like_bias", "--rows", "likes"], "unknown target row(s) likes"),
    ([], "--knobs is required to fit"),
    (["--knobs", "behaviour.like_bias", "--budget", "1"], "budget=1 must be an integer >= 2"),
    (["--check", "--knobs", "behaviour.like_bias"], "--check simulates the world as it is"),
    (["--check", "--users", "0"], "users=0 must be an integer >= 1"),
])
def test_calibrate_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, fragment):
    out = tmp_path / "cal"
    assert main(["calibrate", str(PUBLIC_TARGETS), "--out", str(out), *TINY, *args]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("seeds", ["", "a,b", "3:1", "-1"])
def test_calibrate_bad_seeds_exit_2(capsys, seeds):
    with pytest.raises(SystemExit) as info:
        main(["calibrate", str(PUBLIC_TARGETS), "--check", "--seeds", seeds])
    assert info.value.code == 2 and "is not a list of seeds" in capsys.readouterr().err


def test_calibrate_missing_targets_file_exits_2(tmp_path, capsys):
    assert main(["calibrate", str(tmp_path / "none.toml"), "--check", *TINY]) == 2
    assert "targets file" in capsys.readouterr().err


def test_calibrate_check_writes_the_table(tmp_path, capsys):
    out = tmp_path / "check"
    code = main(["calibrate", str(PUBLIC_TARGETS), "--check", "--seeds", "0,1", "--out", str(out), *TINY])
    assert code == 1                                      # the default world misses rows (docs/calibration.md)
    assert "| like_rate | 0.01848 | ±15% |" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"config.toml", "calibration.csv", "calibration.png", "report.md",
                                               "status.json"}
    table = pd.read_csv(out / "calibration.csv")
    assert list(table["figure"]) == load_targets(PUBLIC_TARGETS).names
    assert table.set_index("figure").loc["like_rate", "n_seeds"] == 2 and table["ci_low"].notna().any()
    assert not table.set_index("figure").loc["return_gap_one_day_share", "comparable"]   # needs 14 days


def test_calibrate_fit_writes_complete_outputs(tmp_path, capsys):
    out = tmp_path / "fit"
    code = main(["calibrate", str(PUBLIC_TARGETS), "--knobs", "behaviour.like_bias=-6:-3", "--rows",
                 "like_rate,comment_rate", "--budget", "4", "--seeds", "0", "--report-seeds", "1,2",
                 "--out", str(out), *TINY])
    assert code == 0
    assert "behaviour.like_bias" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"fitted.toml", "knobs.csv", "evaluations.csv", "calibration.csv",
                                               "calibration.png", "report.md", "status.json"}
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    knobs = pd.read_csv(out / "knobs.csv").set_index("knob")
    fitted = load_toml(SimConfig, out / "fitted.toml")
    assert fitted.behaviour.like_bias == knobs.loc["behaviour.like_bias", "fitted"]
    assert fitted.users.n_users == SimConfig().users.n_users and fitted.platform.tick_s == 900
    evaluations = pd.read_csv(out / "evaluations.csv")
    assert 2 <= len(evaluations) <= 4 and {"objective", "like_rate", "comment_rate"} <= set(evaluations.columns)
    table = pd.read_csv(out / "calibration.csv")
    assert list(table["figure"]) == ["like_rate", "comment_rate"] and table["fitted"].all()
    assert (table["n_seeds"] == 2).all()


# ----------------------------------------------------------------------------- the documentation
DOCS = PUBLIC_TARGETS.parents[2]


def test_the_readme_example_is_a_valid_targets_table():
    readme = (DOCS / "README.md").read_text()
    block = re.search(r"```toml\n# my_platform.toml\n(.*?)```", readme, re.S).group(1)
    table = parse_targets(tomllib.loads(block), where="README.md", figures=list(FIGURES))
    assert table.names == ["like_rate", "negative_rate", "effective_views_per_skip"]


def test_the_reference_documents_every_figure():
    page = (DOCS / "docs" / "calibration.md").read_text()
    figures = page[page.index("## The figures"):page.index("## The public targets")]
    assert [name for name in FIGURES if f"`{name}`" not in figures] == []
