"""Intervals and p-values from replicates: percentile and BCa intervals, the bootstrap
standard error, the permutation p-value. ``replicates: (B, ...)`` along ``axis`` 0."""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["percentile_interval", "bca_interval", "standard_error", "p_value"]


def percentile_interval(replicates: np.ndarray, ci: float,
                        axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` quantiles of the
    replicates along ``axis`` (NaN replicates ignored)."""
    alpha = (1.0 - ci) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
        low, high = np.nanquantile(replicates, [alpha, 1.0 - alpha], axis=axis)
    return low, high


def bca_interval(replicates: np.ndarray, estimate: np.ndarray, jackknife: np.ndarray,
                 ci: float) -> tuple[np.ndarray, np.ndarray]:
    r"""``(low, high)``: the bias-corrected and accelerated (BCa) interval (Efron 1987).

    ``replicates: (B, ...)``, ``estimate: (...)``, ``jackknife: (G, ...)`` (leave-one-out,
    or leave-one-group-out, values). With ``z0 = Phi^-1(#(theta*_b < theta) / B + #(theta*_b
    == theta) / (2B))``, the acceleration ``a = sum_g d_g^3 / (6 (sum_g d_g^2)^{3/2})``,
    ``d_g = mean(jackknife) - jackknife_g``, the interval is the ``alpha_1, alpha_2``
    quantiles of the replicates, ``alpha_i = Phi(z0 + (z0 + z_i) / (1 - a (z0 + z_i)))`` with
    ``z_i = Phi^-1((1 -+ ci) / 2)``. NaN replicates are ignored; a NaN estimate, a
    degenerate distribution (all replicates on one side) or an undefined acceleration gives
    NaN rather than a misleading bound; replicates without spread give the point itself.
    """
    from scipy.special import ndtr, ndtri
    reps = np.asarray(replicates, dtype=float)
    theta = np.asarray(estimate, dtype=float)
    valid = (~np.isnan(reps)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        below = (np.nansum(reps < theta, axis=0) + 0.5 * np.nansum(reps == theta, axis=0)) / valid
        z0 = ndtri(below)  # +-inf when every replicate lies on one side
        jack = np.asarray(jackknife, dtype=float)
        d = np.nanmean(jack, axis=0) - jack
        spread = np.nansum(d ** 2, axis=0)
        a = np.where(spread > 0, np.nansum(d ** 3, axis=0) / (6.0 * spread ** 1.5), 0.0)
        bounds = []
        for z in ndtri([(1.0 - ci) / 2.0, (1.0 + ci) / 2.0]):
            level = np.broadcast_to(ndtr(z0 + (z0 + z) / (1.0 - a * (z0 + z))), reps.shape[1:])
            bound = np.full(reps.shape[1:], np.nan)
            for idx in np.ndindex(*reps.shape[1:]):  # one quantile level per output
                column = reps[(slice(None),) + idx]
                column = column[~np.isnan(column)]
                if column.size and column.min() == column.max():
                    bound[idx] = column[0]  # no spread: the interval is the point
                elif column.size and np.isfinite(level[idx]) and not np.isnan(theta[idx]):
                    bound[idx] = np.quantile(column, level[idx])
            bounds.append(bound)
    return bounds[0], bounds[1]


def standard_error(replicates: np.ndarray, axis: int = 0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(replicates, axis=axis, ddof=1)


def p_value(null: np.ndarray, observed: np.ndarray, axis: int = 0) -> np.ndarray:
    """``(1 + #(null >= observed)) / (1 + P)``; a NaN null replicate counts as not >=."""
    null = np.asarray(null)
    observed = np.asarray(observed, dtype=float)
    count = np.sum(null >= np.expand_dims(observed, axis), axis=axis)
    return np.where(np.isnan(observed), np.nan, (1.0 + count) / (1.0 + null.shape[axis]))
