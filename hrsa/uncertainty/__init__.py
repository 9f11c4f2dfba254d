"""Uncertainty of comparison scores: a text-level bootstrap, a text-level permutation null
and a paired bootstrap of the difference between two comparisons.

The unit of resampling is the TEXT: the token rows of one text are not independent of each
other, so a resample draws texts with replacement and keeps all the rows of every drawn text
(duplicates kept, in draw order). For pooled comparisons (one row per text, dim ``sample``)
the rows are the texts. Capture is done once. Metrics with ``score_resampled`` (linear CKA,
dimension correlation, procrustes_alignment: exactly, from weighted moments; k-NN overlap:
with the full sample's neighbour sets) score all B replicates from the full rows'
preparations (:mod:`hrsa.metrics.weights`); every other metric is recomputed (``prepare`` +
``score``) on each replicate's rows.

Permutation null: model b's texts are shuffled against model a's. Pooled: rows of b are
permuted. Token level: texts have different numbers of rows, so text ``i`` of a is paired
with text ``pi(i)`` of b and both keep their first ``min(n_i, n_pi(i))`` rows (in stored
order: position order), position aligned. When every text has the same number of rows
nothing is dropped and the test is exact; otherwise the null statistic is computed on fewer
rows than the observed one, which (for metrics biased upward at small n, such as linear CKA)
makes the p-value conservative, never anti-conservative. See docs/uncertainty.md.

Modules: :mod:`.draws` (which texts each replicate draws), :mod:`.intervals` (intervals
and p-values from replicates), :mod:`.comparison` (a whole comparison's uncertainty).
Public API: :func:`bootstrap_indices`, :func:`bootstrap_draws`, :func:`permutation_indices`,
:func:`percentile_interval`, :func:`bootstrap_metric`, :func:`permutation_test`,
:func:`difference`. :func:`hrsa.compare` uses them through ``bootstrap=``,
``permutations=``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .. import metrics as metrics_mod
from ..metrics.weights import TextResampling
from ..options import CI_METHODS
from ..options import validate_uncertainty as validate
from ..schema import diagnostic_attrs, similarity_names
from .comparison import add_intervals, add_probe_intervals, add_to_comparison
from .draws import (JACKKNIFE_GROUPS, bootstrap_draws, bootstrap_indices, jackknife_resampling,
                    permutation_indices, row_units, stratified_resampling, units_hash)
from .intervals import bca_interval, p_value, percentile_interval, standard_error

__all__ = ["bootstrap_indices", "bootstrap_draws", "permutation_indices", "percentile_interval",
           "bootstrap_metric", "permutation_test", "difference", "validate",
           "add_intervals", "stratified_resampling", "bca_interval", "jackknife_resampling",
           "add_to_comparison", "add_probe_intervals", "row_units", "units_hash", "p_value", "CI_METHODS",
           "JACKKNIFE_GROUPS"]


def _call(metric: Any, X: np.ndarray, Y: np.ndarray) -> float:
    if hasattr(metric, "prepare") and hasattr(metric, "score"):
        value = metric.score(metrics_mod.prepare(metric, X, "X"),
                             metrics_mod.prepare(metric, Y, "Y"))
    else:
        value = metric(X, Y)
    if isinstance(value, dict):
        value = value["similarity"]
    return float(value)


def bootstrap_metric(metric: Any, X: Any, Y: Any, *, units: np.ndarray | None = None,
                     n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Text-level bootstrap of one scalar metric on two arrays (replicates from the full
    data's preparations where the metric has ``score_resampled``, else recomputed).

    Args:
        metric: a :class:`hrsa.metrics.Metric`, a registered name, or ``f(X, Y) -> float``
            (a dict result contributes its ``"similarity"``).
        X: ``(n, d1)``; Y: ``(n, d2)``, the same rows.
        units: ``(n,)`` text of each row; default every row its own unit.
        n_boot, ci, seed: replicates, coverage, seed.

    Returns:
        dict with ``estimate``, ``ci_low``, ``ci_high``, ``se`` (floats) and
        ``replicates`` (``(n_boot,)``).
    """
    validate(n_boot, ci, 0)
    if n_boot == 0:
        raise ValueError("n_boot must be at least 2")
    metric = _metric(metric)
    X, Y = np.asarray(X), np.asarray(Y)
    units = np.arange(len(X)) if units is None else np.asarray(units)
    if not len(X) == len(Y) == len(units):
        raise ValueError(f"X, Y and units must have the same rows, got {len(X)}, {len(Y)}, "
                         f"{len(units)}")
    if metrics_mod.supports_resampling(metric):
        resampling = TextResampling.from_draws(
            units, bootstrap_draws(len(np.unique(units)), n_boot, seed))
        reps = metric.score_resampled(metrics_mod.prepare(metric, X, "X"),
                                      metrics_mod.prepare(metric, Y, "Y"),
                                      resampling)
        reps = np.array([r["similarity"] if isinstance(r, dict) else r for r in reps])
    else:
        reps = np.array([_call(metric, X[i], Y[i])
                         for i in bootstrap_indices(units, n_boot, seed)])
    low, high = percentile_interval(reps, ci)
    return {"estimate": _call(metric, X, Y), "ci_low": float(low), "ci_high": float(high),
            "se": float(standard_error(reps)), "replicates": reps}


def permutation_test(metric: Any, X: Any, Y: Any, *, units: np.ndarray | None = None,
                     n_perm: int = 999, seed: int = 0) -> dict[str, Any]:
    """Text-level permutation null of one scalar metric (see the module docstring).

    Returns:
        dict with ``estimate``, ``p_value`` (``(1 + #null >= estimate) / (1 + n_perm)``),
        ``null_mean`` and ``null`` (``(n_perm,)``).
    """
    validate(0, 0.5, n_perm)
    if n_perm == 0:
        raise ValueError("n_perm must be at least 1")
    metric = _metric(metric)
    X, Y = np.asarray(X), np.asarray(Y)
    units = np.arange(len(X)) if units is None else np.asarray(units)
    observed = _call(metric, X, Y)
    null = np.array([_call(metric, X[ra], Y[rb])
                     for ra, rb in permutation_indices(units, n_perm, seed)])
    return {"estimate": observed, "p_value": float(p_value(null, np.asarray(observed))),
            "null_mean": float(np.nanmean(null)), "null": null}


def _metric(metric):
    return metrics_mod.get(metric) if isinstance(metric, str) else metric


_MUST_MATCH = ("text_hash", "n_texts", "n_rows", "row_dim", "bootstrap", "uncertainty_seed",
               "units_hash")


def difference(ds1: xr.Dataset, ds2: xr.Dataset, *, ci: float | None = None,
               variables: list[str] | None = None) -> xr.Dataset:
    """Paired bootstrap of ``ds1 - ds2`` for two comparisons on the same texts and rows.

    Both must come from ``compare(..., bootstrap=B, keep_replicates=True)`` with the same
    texts (text hash), the same rows (same ``seed``, ``max_tokens``, tokenizer) and the same
    ``B``: their replicates then used the same text resamples, so replicate ``r`` of the
    difference is ``ds1[name]_boot[r] - ds2[name]_boot[r]`` (e.g. base vs RLVR minus base vs
    SFT). Differencing on common resamples cancels the text-sampling noise the two share.

    Args:
        ds1, ds2: the two comparisons (same dims and layer coords).
        ci: coverage; default ``ds1``'s.
        variables: default every similarity with replicates in both.

    Returns:
        Dataset with, for each variable, ``{name}_diff`` (``ds1 - ds2`` at full data),
        ``{name}_diff_ci_low``, ``{name}_diff_ci_high`` (percentile interval of the
        replicate differences) and ``{name}_diff_se``.
    """
    for name, ds in (("ds1", ds1), ("ds2", ds2)):
        if not ds.attrs.get("bootstrap") or not any(n.endswith("_boot") for n in ds):
            raise ValueError(f"{name} holds no bootstrap replicates: compute it with "
                             "compare(..., bootstrap=B, keep_replicates=True)")
    for key in _MUST_MATCH:
        v1, v2 = ds1.attrs.get(key), ds2.attrs.get(key)
        if v1 != v2:
            raise ValueError(f"ds1 and ds2 differ in {key!r} ({v1!r} vs {v2!r}): a paired "
                             "difference needs comparisons of the same texts and rows with "
                             "the same bootstrap resamples (same texts, seed, max_tokens, "
                             "bootstrap)")
    ci = float(ds1.attrs.get("ci", 0.95)) if ci is None else ci
    validate(2, ci, 0)
    both = [n for n in similarity_names(ds1) if f"{n}_boot" in ds1 and f"{n}_boot" in ds2]
    names = both if variables is None else list(variables)
    missing = [n for n in names if n not in both]
    if missing:
        raise ValueError(f"variables {missing} have no replicates in both ds1 and ds2 "
                         f"(available: {both})")
    out = {}
    for n in names:
        a, b = ds1[n], ds2[n]
        if a.dims != b.dims or a.shape != b.shape:
            raise ValueError(f"ds2[{n!r}] has dims {dict(b.sizes)}, ds1 has {dict(a.sizes)}")
        reps = ds1[f"{n}_boot"].values - ds2[f"{n}_boot"].values
        low, high = percentile_interval(reps, ci)
        base = {k: v for k, v in a.attrs.items() if k not in ("chance", "range")}
        label = a.attrs.get("long_name", n)
        out[f"{n}_diff"] = xr.DataArray(a.values - b.values, dims=a.dims, coords=a.coords,
                                        attrs={**base, "long_name": f"{label} (ds1 - ds2)"})
        pct = f"{100 * ci:g}%"
        for suffix, values, what in (("ci_low", low, f"{pct} CI low"),
                                     ("ci_high", high, f"{pct} CI high"),
                                     ("se", standard_error(reps), "bootstrap SE")):
            out[f"{n}_diff_{suffix}"] = xr.DataArray(
                values, dims=a.dims, coords=a.coords,
                attrs=diagnostic_attrs({**base, "long_name": label}, suffix,
                                       f"ds1 - ds2, {what}"))
    attrs = {k: ds1.attrs[k] for k in _MUST_MATCH if k in ds1.attrs}
    attrs.update({"ci": ci, "model_a": ds1.attrs.get("model_a", ""),
                  "comparison_1": f"{ds1.attrs.get('model_a', 'a')} vs "
                                  f"{ds1.attrs.get('model_b', 'b')}",
                  "comparison_2": f"{ds2.attrs.get('model_a', 'a')} vs "
                                  f"{ds2.attrs.get('model_b', 'b')}"})
    return xr.Dataset(out, attrs=attrs)
