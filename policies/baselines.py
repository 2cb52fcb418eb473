"""Baseline policies: uniform random, the stochastic production policy, and most-popular."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import numpy as np

from policies.base import check_fitted, register_policy, resolve_update_epochs
from policies.data import check_observable, n_items_of
from simulator.checks import check_choice
from simulator.schema import LogData, RankBatch


@register_policy("random", "uniform random ranking of the recalled candidates (logs propensities)")
@dataclass
class RandomPolicy:
    """Every candidate scores 0; the stochastic ranking then picks a uniformly random page."""
    temperature: float | None = 1.0
    fitted_: bool = field(default=False, init=False)

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        check_observable(train, required=(), allow_empty=True)   # learns nothing, but sees no oracle
        self.fitted_ = True
        return self

    def score(self, batch: RankBatch) -> np.ndarray:
        check_fitted(self)
        return np.zeros(batch.candidates.shape)


@register_policy("production",
                 "stochastic production ranker: softmax over popularity + observable category interest")
@dataclass
class ProductionPolicy:
    """The platform's stochastic production policy, which serves the pre-period.

    score = w_pop * log1p(recent effective views of the item) / log1p(max)
          + w_leaf * share of the user's recent clicks in the item's leaf category
          + w_l2 * share in the item's level-2 category
          + w_like * log of the item's smoothed like rate over the platform's mean like rate,
    ranked by a Plackett-Luce draw from softmax(score / temperature), so every impression has a
    logged propensity. It reads only the feature store's observable counters.
    """
    temperature: float | None = 1.0
    w_pop: float = 1.0
    w_leaf: float = 1.0
    w_l2: float = 0.5
    w_like: float = 1.0
    like_prior: float = 50.0     # pseudo-impressions at the mean like rate (smoothing)
    fitted_: bool = field(default=False, init=False)
    _leaf_to_l2: np.ndarray | None = field(default=None, init=False, repr=False)
    _item_cache: tuple | None = field(default=None, init=False, repr=False)

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        check_observable(train, required=(), allow_empty=True)   # reads only the feature store
        self.fitted_ = True
        return self

    def score(self, batch: RankBatch) -> np.ndarray:
        check_fitted(self)
        fs = batch.features
        cands = batch.candidates
        item_terms = self._item_terms(fs)
        item_score = item_terms[cands]                                       # (B, C)
        leaf_clicks = fs.leaf_clicks[batch.user_ids]                       # (B, n_leaves)
        total = np.maximum(leaf_clicks.sum(axis=1, keepdims=True), 1.0)
        leaf = fs.items.leaf[cands]
        rows = np.arange(len(cands))[:, None]
        leaf_share = leaf_clicks[rows, leaf] / total
        if self._leaf_to_l2 is None or self._leaf_to_l2.shape[0] != leaf_clicks.shape[1]:
            self._leaf_to_l2 = _leaf_to_l2(fs.items.leaf, fs.items.l2, leaf_clicks.shape[1])
        l2_clicks = leaf_clicks @ self._leaf_to_l2                           # (B, n_l2)
        l2_share = l2_clicks[rows, fs.items.l2[cands]] / total
        return item_score + self.w_leaf * leaf_share + self.w_l2 * l2_share

    def _item_terms(self, fs) -> np.ndarray:
        """w_pop * popularity + w_like * quality for every item, computed once per serving round."""
        key = (id(fs), fs.tick)
        if self._item_cache is not None and self._item_cache[0] == key:
            return self._item_cache[1]
        pop = np.log1p(fs.item_recent_clicks) / max(np.log1p(fs.item_recent_clicks.max()), 1e-9)
        mean_rate = (fs.item_likes.sum() + 1.0) / (fs.item_impressions.sum() + 1.0)
        rate = (fs.item_likes + self.like_prior * mean_rate) / (fs.item_impressions + self.like_prior)
        terms = self.w_pop * pop + self.w_like * np.log(rate / mean_rate)
        self._item_cache = (key, terms)
        return terms


@register_policy("most_popular", "most effective views in the training logs (deterministic; "
                                 "counts grow with update())")
@dataclass
class MostPopular:
    """Scores every candidate by ``log1p(effective views)``: the same ranking for every user.

    Args:
        temperature: None ranks deterministically by the counts.
        source: ``"train"`` (default) counts the effective views in the logs given to ``fit``
            and adds those of every ``update()``, so the counts follow the bucket's own traffic
            through the protocol; ``"live"`` reads the feature store's cumulative
            ``item_clicks`` at serving time instead (everything the platform has observed,
            every bucket's traffic included, training period included), plus 1e-6 times the
            training-log score as a tie-break.
    """
    temperature: float | None = None
    source: str = "train"
    fitted_: bool = field(default=False, init=False)
    counts_: np.ndarray | None = field(default=None, init=False, repr=False)

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        check_choice("source", self.source, ("train", "live"))
        check_observable(train, required=("item_id", "effective_view"))
        self.counts_ = self._counts(train, n_items_of(train))
        self.fitted_ = True
        return self

    def update(self, new: LogData, *, epochs: int | None = None) -> None:
        """Add the effective views of ``new`` to the counts (one pass whatever ``epochs``; 0
        adds nothing, as for every policy)."""
        check_fitted(self)
        if resolve_update_epochs(epochs, 1) == 0 or len(new.impressions) == 0:
            return
        check_observable(new, required=("item_id", "effective_view"), where="new")
        extra = self._counts(new, max(n_items_of(new), len(self.counts_)))
        extra[:len(self.counts_)] += self.counts_
        self.counts_ = extra

    def score(self, batch: RankBatch) -> np.ndarray:
        check_fitted(self)
        cands = np.asarray(batch.candidates)
        known = cands < len(self.counts_)
        train = np.log1p(np.where(known, self.counts_[np.where(known, cands, 0)], 0.0))  # unseen: 0
        if self.source == "train":
            return train
        return np.log1p(batch.features.item_clicks[cands].astype(np.float64)) + 1e-6 * train

    @staticmethod
    def _counts(data: LogData, n_items: int) -> np.ndarray:
        frame = data.impressions
        clicked = frame["item_id"].to_numpy()[frame["effective_view"].to_numpy(bool)]
        return np.bincount(clicked, minlength=n_items).astype(np.float64)


def _leaf_to_l2(leaf: np.ndarray, l2: np.ndarray, n_leaves: int) -> np.ndarray:
    """(n_leaves, n_l2) 0/1 matrix mapping each leaf category to its level-2 parent."""
    out = np.zeros((n_leaves, int(l2.max()) + 1), dtype=np.float32)
    out[leaf, l2] = 1.0
    return out
