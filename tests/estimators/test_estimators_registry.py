"""The OPE estimator protocol: OPEData's checks, the registry, and every built-in run through it."""

import inspect

import numpy as np
import pytest

import estimators as est
from estimators import registry

BUILT_IN = {
    "impression": {"ips", "snips", "dm", "dr", "sndr", "switch_dr", "dros"},
    "page": {"slate_standard_ips", "slate_independent_ips", "slate_rips", "slate_snrips"},
}


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry for one test, so registrations do not leak into others."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.fixture(scope="module")
def data():
    return {level: est.synthetic_ope_datasets(1, 300, seed=5, level=level)[0][0]
            for level in ("impression", "page")}


def test_every_built_in_is_registered_with_its_level():
    for level, names in BUILT_IN.items():
        assert set(est.list_estimators(level)) == names
    assert set(est.list_estimators()) == BUILT_IN["impression"] | BUILT_IN["page"]
    for name, description in est.list_estimators().items():
        entry = est.get_estimator(name)
        assert description == entry.description and description
        # what it needs are parameters of its function, and standard names at its level
        params = inspect.signature(entry.fn).parameters
        assert set(entry.needs) <= set(params) & set(est.standard_names(entry.level))


def test_registered_estimators_give_what_their_functions_give(data):
    imp, page = data["impression"], data["page"]
    assert est.get_estimator("ips")(imp) == est.ope_ips(imp.reward, imp.pscore, imp.action_dist)
    assert est.get_estimator("dm")(imp, alpha=0.1) == est.ope_dm(imp.imputed_target, alpha=0.1)
    args = (imp.reward, imp.pscore, imp.action_dist, imp.imputed, imp.imputed_target)
    assert est.get_estimator("switch_dr")(imp) == est.ope_switch_dr(*args, tau=10.0)
    assert est.get_estimator("dros")(imp) == est.ope_dros(*args, lambda_=100.0)
    assert est.get_estimator("slate_rips")(page) == est.slate_rips(
        page.reward, page.pscore_cascade, page.action_dist_cascade)
    assert est.get_estimator("slate_standard_ips")(page) == est.slate_standard_ips(
        page.reward.sum(axis=1), page.pscore_cascade, page.action_dist_cascade)
    assert est.get_estimator("slate_independent_ips")(page) == est.slate_independent_ips(
        page.reward, page.pscore, page.action_dist)
    for level, names in BUILT_IN.items():
        for name in names:
            assert isinstance(est.get_estimator(name)(data[level]), est.Estimate)


def test_standard_names_are_documented_and_page_level_has_no_row_ids():
    names = est.standard_names()
    assert list(names)[:3] == ["reward", "pscore", "action_dist"]
    assert "propensity_marginal" in names["pscore"]
    assert "propensity)" in names["pscore_cascade"]  # the log's (conditional) propensity column
    assert set(names) - set(est.standard_names("page")) == {"position", "page_id"}
    assert all(meaning for meaning in names.values())


def test_opedata_stores_read_only_copies():
    reward = np.array([1.0, 0.0, 1.0])
    data = est.OPEData(reward=reward, pscore=[0.5, 0.5, 0.2], action_dist=[0.1, 0.2, 0.3],
                       position=[0, 1, 2], page_id=np.array([2**60, 2**60, 2**60 + 1]))
    reward[0] = 7.0
    assert data.reward[0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        data.pscore[0] = 0.9
    assert data.position.dtype == np.int64
    assert data.page_id[2] == 2**60 + 1  # ids kept exact (not rounded through float64)
    assert data.names == ("reward", "pscore", "action_dist", "position", "page_id")
    assert data.n == 3
    with pytest.raises(ValueError, match="OPEData has no imputed"):
        data.arrays(("reward", "imputed"))


OK = {"reward": [1.0, 0.0, 1.0], "pscore": [0.5, 0.5, 0.2], "action_dist": [0.1, 0.2, 0.3]}


@pytest.mark.parametrize(("change", "match"), [
    ({"level": "slate"}, "level must be one of"),
    ({"reward": None}, "reward must be given"),
    ({"pscore": [0.5, np.nan, 0.2]}, "pscore must be finite, got nan at index 1"),
    ({"reward": [1.0, np.inf, 0.0]}, "reward must be finite, got inf at index 1"),
    ({"pscore": [0.5, 0.5]}, r"pscore must have reward's shape \(3,\), got \(2,\)"),
    ({"pscore": [[0.5, 0.5, 0.2]]}, r"pscore must be 1-D, got shape \(1, 3\)"),
    ({"pscore": [0.5, 0.0, 0.2]}, "pscore is 0 at index 1 where action_dist is 0.2: the target "
                                  "puts mass where the logging policy never shows the item"),
    ({"pscore": [0.5, 0.0, 0.2], "action_dist": [0.1, 0.0, 0.3]},
     r"pscore must be in \(0, 1\], got 0.0 at index 1"),
    ({"pscore": [0.5, 1.2, 0.2]}, r"pscore must be in \(0, 1\], got 1.2 at index 1"),
    ({"action_dist": [0.1, -0.2, 0.3]}, r"action_dist must be in \[0, 1\], got -0.2 at index 1"),
    ({"pscore_cascade": [0.0, 0.5, 0.5], "action_dist_cascade": [0.3, 0.5, 0.5]},
     "pscore_cascade is 0 at index 0 where action_dist_cascade is 0.3"),
    ({"position": [0, 1.5, 2]}, "position must be whole numbers, got 1.5 at index 1"),
    ({"position": [0, -1, 2]}, "position must be >= 0, got -1.0 at index 1"),
    ({"reward": [1.0], "pscore": None, "action_dist": None},
     "reward must have at least 2 elements, got 1"),
    ({"level": "page"}, r"reward must be 2-D, got shape \(3,\)"),
])
def test_opedata_rejects_bad_arrays(change, match):
    with pytest.raises(ValueError, match=match):
        est.OPEData(**{**OK, **change})


def test_page_level_opedata_refuses_row_ids():
    with pytest.raises(ValueError, match="position is for level 'impression' only"):
        est.OPEData(level="page", reward=np.ones((3, 2)), position=[0, 1, 2])


def test_register_get_and_replace(scratch_registry, data):
    def doubled_ips(reward, pscore, action_dist, *, alpha=0.05):
        """IPS of twice the reward."""
        return est.ope_ips(2 * reward, pscore, action_dist, alpha=alpha)

    entry = est.register_estimator("doubled_ips", doubled_ips)
    assert entry.needs == ("reward", "pscore", "action_dist")  # inferred from the signature
    assert est.get_estimator("doubled_ips") is entry
    assert est.list_estimators()["doubled_ips"] == "IPS of twice the reward."
    assert entry(data["impression"]).value == pytest.approx(
        2 * est.get_estimator("ips")(data["impression"]).value, rel=1e-12)
    with pytest.raises(ValueError, match="'doubled_ips' is already registered .*replace=True"):
        est.register_estimator("doubled_ips", doubled_ips)
    est.register_estimator("doubled_ips", est.ope_ips, needs=("reward", "pscore", "action_dist"),
                           replace=True)
    assert est.get_estimator("doubled_ips").fn is est.ope_ips


def test_register_with_params_and_kwargs(scratch_registry, data):
    entry = est.register_estimator("switch_2", est.ope_switch_dr, params={"tau": 2.0},
                                   needs=("reward", "pscore", "action_dist", "imputed",
                                          "imputed_target"))
    imp = data["impression"]
    assert entry(imp) == est.ope_switch_dr(imp.reward, imp.pscore, imp.action_dist, imp.imputed,
                                           imp.imputed_target, tau=2.0)

    def anything(**arrays):
        """Mean reward, whatever it is given."""
        return est.ope_dm(arrays["reward"], alpha=arrays["alpha"])

    assert est.register_estimator("anything", anything, needs=("reward",))(imp).value == \
        pytest.approx(imp.reward.mean())


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(est.UnknownEstimatorError, match="unknown estimator 'ipss'; registered: "
                                                        "dm, dr, dros, ips"):
        est.get_estimator("ipss")


def _fn(reward, pscore, *, alpha=0.05):
    return est.ope_dm(reward, alpha=alpha)


def _no_alpha(reward, pscore):
    return est.ope_dm(reward)


def _extra(reward, pscore, temperature, *, alpha=0.05):
    return est.ope_dm(reward, alpha=alpha)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"needs": ("reward", "propensity")}, "needs 'propensity', which is not a standard name"),
    ({"needs": ("reward", "position"), "level": "page"},
     "needs 'position', which is not a standard name at level 'page'"),
    ({"needs": ("reward", "imputed")}, "fn takes no keyword argument 'imputed'"),
    ({"needs": ("reward", "reward")}, "lists a name twice"),
    ({"needs": ()}, "must need at least one array"),
    ({"level": "slate"}, "level must be one of"),
    ({"params": {"tau": 1.0}}, "fn takes no keyword argument 'tau'"),
])
def test_make_estimator_checks_the_function_against_the_protocol(kwargs, match):
    with pytest.raises(ValueError, match=match):
        est.make_estimator(_fn, **kwargs)


def test_make_estimator_needs_alpha_and_every_required_argument():
    with pytest.raises(ValueError, match="fn takes no keyword argument 'alpha'"):
        est.make_estimator(_no_alpha)
    with pytest.raises(ValueError, match="required argument.* temperature are neither in needs"):
        est.make_estimator(_extra, needs=("reward", "pscore"))
    with pytest.raises(TypeError, match="fn must be callable"):
        est.make_estimator("ips")


def test_calling_a_registered_estimator_checks_data_and_result(data):
    with pytest.raises(ValueError, match="'slate_rips' is for level 'page' data, got 'impression'"):
        est.get_estimator("slate_rips")(data["impression"])
    bare = est.OPEData(reward=[1.0, 0.0, 1.0], pscore=[0.5, 0.5, 0.2], action_dist=[1, 1, 1])
    with pytest.raises(ValueError, match="'dr' needs imputed, imputed_target, which the data "
                                         "lacks"):
        est.get_estimator("dr")(bare)
    with pytest.raises(TypeError, match="'ips' needs an OPEData, got dict"):
        est.get_estimator("ips")(dict(OK))
    nan = est.make_estimator(lambda reward, alpha: est.Estimate(np.nan, 0.0, 0.0, 0.0, 3),
                             name="nan")
    with pytest.raises(ValueError, match="estimator 'nan' returned an Estimate with value=nan"):
        nan(bare)
    outside = est.make_estimator(lambda reward, alpha: est.Estimate(2.0, 0.1, 0.0, 1.0, 3),
                                 name="outside")
    with pytest.raises(ValueError, match="'outside' returned an inconsistent Estimate"):
        outside(bare)
    number = est.make_estimator(lambda reward, alpha: float(reward.mean()), name="number")
    with pytest.raises(TypeError, match="'number' returned float, not an Estimate"):
        number(bare)


def _flatten(page: est.OPEData, keep: np.ndarray) -> est.OPEData:
    """Impression rows of ``page``'s cells where ``keep`` (n_pages, page_len), shuffled."""
    rows, cols = np.nonzero(keep)
    order = np.random.default_rng(0).permutation(len(rows))
    rows, cols = rows[order], cols[order]
    arrays = {name: getattr(page, name)[rows, cols] for name in page.names}
    return est.OPEData(**arrays, position=cols, page_id=100 + 3 * rows)


def test_to_pages_undoes_flattening(data):
    page = data["page"]
    back = _flatten(page, np.ones(page.reward.shape, dtype=bool)).to_pages()
    assert back.level == "page" and back.names == page.names
    for name in page.names:
        np.testing.assert_array_equal(getattr(back, name), getattr(page, name))


def test_to_pages_pads_short_pages_exactly_for_rips(data):
    page = data["page"]
    keep = np.ones(page.reward.shape, dtype=bool)
    keep[::2, 2] = False  # every other page shows only 2 of 3 positions
    impressions = _flatten(page, keep)
    with pytest.raises(ValueError, match="has 2 positions, others 3; pass pad=True"):
        impressions.to_pages()
    padded = impressions.to_pages(pad=True)
    np.testing.assert_array_equal(padded.reward[::2, 2], 0.0)
    np.testing.assert_array_equal(padded.pscore_cascade[::2, 2], 1.0)
    # RIPS of the padded pages is RIPS summed over the positions each page really has
    w = np.cumprod(page.action_dist_cascade / page.pscore_cascade, axis=1)
    expected = np.mean((w * page.reward * keep).sum(axis=1))
    assert est.get_estimator("slate_rips")(padded).value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("position", "page_id", "match"), [
    ([0, 1, 1, 0], [7, 7, 7, 8], "page_id 7 has position 1 twice"),
    ([0, 2, 0, 1], [7, 7, 8, 8], "page_id 7 lacks position 1 .a page must be a prefix"),
])
def test_to_pages_rejects_pages_that_are_not_prefixes(position, page_id, match):
    data = est.OPEData(reward=np.ones(4), position=position, page_id=page_id)
    with pytest.raises(ValueError, match=match):
        data.to_pages(pad=True)


def test_to_pages_needs_row_ids(data):
    with pytest.raises(ValueError, match="OPEData has no position, page_id"):
        data["impression"].to_pages()
    with pytest.raises(ValueError, match="to_pages needs level 'impression' data"):
        data["page"].to_pages()
