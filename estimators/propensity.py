"""Fitted propensity models: P(shown) and P(submitted | shown) from observable features.

SAQRec (Eq. 5) fits its propensity model with the log-loss of "questionnaire observed" over
all interactions; USM's survey-submit model predicts whether a shown questionnaire is
submitted and weights each submission by the inverse (Eq. 13). Both are binary classifiers of
an observation indicator; here that classifier is an L2-regularised logistic regression fitted
by Newton's method: deterministic, a handful of iterations, and easy to check against
statsmodels. Report its calibration with :func:`estimators.calibration_report` on
held-out rows before trusting the weights.

A propensity fitted on observable features only corrects bias that flows through those
features. If the response depends on the unobserved outcome itself (MNAR), no such model
recovers it; the weighting estimators then need the true propensity (the simulator's
``true_p_show`` / ``true_p_submit`` columns).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Self

import numpy as np
from scipy import special

from ._validation import (
    as_binary,
    as_float_array,
    check_nonnegative,
    check_positive_int,
    check_same_length,
)


@dataclass(eq=False)  # fitted arrays make field-wise equality meaningless
class LogisticPropensity:
    """Logistic regression ``P(target = 1 | features)`` with an L2 penalty.

    Features are standardised internally (with the training mean and standard deviation), the
    penalty ``l2 / 2 * ||coef||^2`` applies to the standardised coefficients and not to the
    intercept (so the mean prediction on the training rows equals the training rate, i.e. the
    model is calibrated in the mean, USM Eq. 10 = 0). ``l2`` plays the role of scikit-learn's
    ``1 / C``; ``l2=0`` is the maximum-likelihood fit.

    Attributes set by :meth:`fit` (scikit-learn convention, trailing underscore):
        coef_: (d,) coefficients on the original feature scale.
        intercept_: intercept on the original feature scale.
        n_iter_: Newton iterations used.
        converged_: whether the gradient met ``tol``.
    """

    l2: float = 1.0
    max_iter: int = 100
    tol: float = 1e-10  # on the max |gradient| of the mean penalised log-loss
    coef_: np.ndarray = field(init=False, repr=False)
    intercept_: float = field(init=False, repr=False)
    n_iter_: int = field(init=False, repr=False)
    converged_: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be finite and >= 0, got {self.l2!r}")
        check_positive_int("max_iter", self.max_iter)
        if not (np.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"tol must be > 0, got {self.tol!r}")

    def fit(
        self, features: object, target: object, *, sample_weight: object | None = None
    ) -> Self:
        """Fit on ``features`` (n, d) and a 0/1 ``target`` (n,); returns ``self``.

        Args:
            features: (n, d) observable features (d may be 0: an intercept-only model).
            target: (n,) 0/1 observation indicator (shown, or submitted); both classes needed.
            sample_weight: optional (n,) non-negative weights.
        """
        x = as_float_array("features", features, ndim=2)
        y = as_binary("target", target).astype(np.float64)
        arrays = {"features": x, "target": y}
        if sample_weight is None:
            w = np.ones_like(y)
        else:
            w = check_nonnegative("sample_weight", as_float_array("sample_weight", sample_weight))
            arrays["sample_weight"] = w
        check_same_length(arrays)
        total = w.sum()
        pos = (w * y).sum()
        if not 0 < pos < total:
            raise ValueError(
                "target must contain both 0 and 1 (with positive weight), "
                f"got {int(y.sum())} ones in {len(y)} rows"
            )

        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        active = scale > 0  # a constant column is absorbed by the intercept; its coef is 0
        xs = (x[:, active] - mean[active]) / scale[active]  # (n, d_active)
        theta, n_iter, grad_norm = _newton_logistic(xs, y, w, self.l2, self.max_iter, self.tol)
        self.converged_ = grad_norm <= self.tol
        if not self.converged_:
            warnings.warn(
                f"LogisticPropensity did not converge in {n_iter} iterations "
                f"(max |gradient| {grad_norm:.2e} > tol {self.tol:.0e}); "
                "raise max_iter, or l2 if the classes are separable",
                RuntimeWarning,
                stacklevel=2,
            )
        beta = np.zeros(x.shape[1])
        beta[active] = theta[1:] / scale[active]
        self.coef_ = beta
        self.intercept_ = float(theta[0] - beta @ mean)
        self.n_iter_ = n_iter
        return self

    def decision_function(self, features: object) -> np.ndarray:
        """Logits (n,) for ``features`` (n, d)."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("LogisticPropensity is not fitted; call fit() first")
        x = as_float_array("features", features, ndim=2)
        if x.shape[1] != len(self.coef_):
            raise ValueError(
                f"features must have {len(self.coef_)} columns (as in fit), got {x.shape[1]}"
            )
        return self.intercept_ + np.einsum("ij,j->i", x, self.coef_)

    def predict_proba(self, features: object) -> np.ndarray:
        """P(target = 1) (n,) for ``features`` (n, d); usable as ``pscore``."""
        return special.expit(self.decision_function(features))


def _newton_logistic(
    xs: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, max_iter: int, tol: float
) -> tuple[np.ndarray, int, float]:
    """Minimise the mean weighted log-loss + ``l2 / (2 sum(w)) * ||beta||^2`` by Newton's method.

    Returns ``(theta, iterations, max |gradient|)`` with ``theta = [intercept, beta...]`` on the
    standardised scale. Newton rather than scipy's L-BFGS: it needs 5-10 iterations here, and
    scipy's L-BFGS-B (like ``@`` on tall arrays, hence the ``einsum``) goes through a
    multithreaded BLAS that runs ten times slower when the other core is busy (DESIGN.md,
    "Where the time goes"). Cost per iteration is O(n d^2): fine for the few to few hundred
    observable features a propensity model uses.
    """
    total = w.sum()
    d = xs.shape[1]
    penalty = np.full(d + 1, l2 / total)
    penalty[0] = 0.0  # the intercept is not penalised

    def loss(theta: np.ndarray) -> float:
        z = theta[0] + np.einsum("ij,j->i", xs, theta[1:])
        data = (w * (np.logaddexp(0.0, z) - y * z)).sum() / total  # log(1 + e^z) - y z
        return float(data + 0.5 * (penalty * theta * theta).sum())

    theta = np.zeros(d + 1)
    theta[0] = special.logit((w * y).sum() / total)
    current = loss(theta)
    grad_norm = np.inf
    for it in range(max_iter + 1):
        prob = special.expit(theta[0] + np.einsum("ij,j->i", xs, theta[1:]))  # (n,)
        resid = w * (prob - y) / total  # (n,)
        grad = np.concatenate(([resid.sum()], np.einsum("ij,i->j", xs, resid))) + penalty * theta
        grad_norm = float(np.abs(grad).max())
        if grad_norm <= tol or it == max_iter:
            return theta, it, grad_norm
        h = w * prob * (1 - prob) / total  # (n,) curvature of each row's loss
        hx = np.einsum("i,ij->j", h, xs)  # (d,)
        hess = np.empty((d + 1, d + 1))
        hess[0, 0], hess[0, 1:], hess[1:, 0] = h.sum(), hx, hx
        hess[1:, 1:] = np.einsum("ij,i,ik->jk", xs, h, xs)
        hess[np.diag_indices(d + 1)] += penalty
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:  # collinear features without a penalty
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        # backtracking line search (Armijo): the full Newton step can overshoot far from the
        # optimum; the slack lets round-off-sized changes through near it
        t = 1.0
        slack = 1e-13 * max(1.0, abs(current))
        while (new := loss(theta - t * step)) > current - 1e-4 * t * (grad @ step) + slack:
            t *= 0.5
            if t < 1e-10:  # no descent left at float precision: this is the optimum
                return theta, it, grad_norm
        theta, current = theta - t * step, new
    raise AssertionError("unreachable: the loop returns at it == max_iter")


def fit_exposure_propensity(
    features: object, shown: object, *, l2: float = 1.0
) -> LogisticPropensity:
    """Fit P(shown | features) over all eligible impressions (SAQRec Eq. 5).

    Args:
        features: (n, d) observable user / item / context features of every impression.
        shown: (n,) 0/1 whether a questionnaire was shown.
        l2: L2 penalty (see :class:`LogisticPropensity`).
    """
    return LogisticPropensity(l2=l2).fit(features, shown)


def fit_submit_propensity(
    features: object, shown: object, submitted: object, *, l2: float = 1.0
) -> LogisticPropensity:
    """Fit USM's survey-submit model P(submitted | shown, features) on the shown rows only.

    Args:
        features: (n, d) observable features (USM: user history submission count matters most).
        shown: (n,) 0/1 whether a questionnaire was shown.
        submitted: (n,) 0/1 whether it was submitted; must be 0 where ``shown`` is 0.
        l2: L2 penalty (see :class:`LogisticPropensity`).

    Returns:
        The fitted model; ``model.predict_proba(features[shown])`` is ``submit_pscore`` for
        :func:`estimators.usm_debiased_rate`.
    """
    x = as_float_array("features", features, ndim=2)
    shown_arr = as_binary("shown", shown)
    sub = as_binary("submitted", submitted)
    check_same_length({"features": x, "shown": shown_arr, "submitted": sub})
    orphan = sub & ~shown_arr
    if orphan.any():
        i = int(np.flatnonzero(orphan)[0])
        raise ValueError(f"submitted must be 0 where shown is 0, got 1 at index {i}")
    return LogisticPropensity(l2=l2).fit(x[shown_arr], sub[shown_arr])
