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

Public API: :func:`bootstrap_indices`, :func:`bootstrap_draws`, :func:`permutation_indices`,
:func:`percentile_interval`, :func:`bootstrap_metric`, :func:`permutation_test`,
:func:`difference`. :func:`hrsa.compare` uses them through ``bootstrap=``,
``permutations=``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from . import metrics as metrics_mod
from .engine.scoring import score, score_replicates
from .metrics.weights import TextResampling
from .options import validate_uncertainty as validate
from .schema import diagnostic_attrs, similarity_names

__all__ = ["bootstrap_indices", "bootstrap_draws", "permutation_indices", "percentile_interval",
           "bootstrap_metric", "permutation_test", "difference", "validate",
           "add_intervals", "stratified_resampling", "bca_interval", "jackknife_resampling"]

# seed streams, apart from the row subsample's
_BOOT_STREAM, _PERM_STREAM, _STRATA_STREAM, _JACK_STREAM = 0xB007, 0x9E53, 0x5717, 0x7ACC


JACKKNIFE_GROUPS = 100  # at most this many leave-group-out replicates for BCa


# ---------------------------------------------------------------- index generation

def _rows_by_unit(units: np.ndarray) -> list[np.ndarray]:
    """Row indices of each unit (text), units in sorted order, rows in stored order."""
    units = np.asarray(units)
    _, inverse = np.unique(units, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    return np.split(order, np.cumsum(counts)[:-1])


def bootstrap_indices(units: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_boot`` text-level bootstrap resamples.

    ``units: (n_rows,)`` is the text of each row (coord ``text`` at token level, or
    ``arange(n)`` for pooled rows). Each resample draws as many texts as there are, with
    replacement, and concatenates the rows of the drawn texts (duplicates kept). The draws
    depend only on ``seed`` and the number of texts, so two comparisons on the same rows
    get the same resamples (what :func:`difference` relies on).
    """
    groups = _rows_by_unit(units)
    return [np.concatenate([groups[u] for u in draw])
            for draw in bootstrap_draws(len(groups), n_boot, seed)]


def bootstrap_draws(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_units)``: the units (texts, in sorted order) drawn by each resample."""
    rng = np.random.default_rng([int(seed), _BOOT_STREAM])
    return rng.integers(0, n_units, size=(n_boot, n_units))


def permutation_indices(units: np.ndarray, n_perm: int,
                        seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(rows_a, rows_b)`` of ``n_perm`` text-level permutations: text ``i``'s rows in a
    against text ``pi(i)``'s rows in b, both cut to the shorter of the two (position
    aligned). With one row per text this is a plain permutation of b's rows."""
    groups = _rows_by_unit(units)
    rng = np.random.default_rng([int(seed), _PERM_STREAM])
    out = []
    for _ in range(n_perm):
        perm = rng.permutation(len(groups))
        keep = [min(len(groups[i]), len(groups[j])) for i, j in enumerate(perm)]
        rows_a = np.concatenate([groups[i][:m] for i, m in enumerate(keep)])
        rows_b = np.concatenate([groups[j][:m] for j, m in zip(perm, keep)])
        out.append((rows_a, rows_b))
    return out


def units_hash(units: np.ndarray) -> str:
    """A short hash of the row -> text layout, to check two comparisons share their rows."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(units, dtype=np.int64)).tobytes()
                          ).hexdigest()[:16]


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


def jackknife_resampling(units: np.ndarray, seed: int,
                         groups: int = JACKKNIFE_GROUPS) -> TextResampling:
    """Leave-one-group-out replicates for BCa's acceleration: the texts of ``units: (n,)``
    are dealt into ``min(groups, m)`` groups in a seeded random order, and replicate ``g``
    keeps every text but group ``g`` (weight 1, group ``g`` weight 0)."""
    _, codes = np.unique(np.asarray(units), return_inverse=True)
    m = int(codes.max()) + 1
    g = min(int(groups), m)
    group = np.empty(m, dtype=np.int64)
    group[np.random.default_rng([int(seed), _JACK_STREAM]).permutation(m)] = np.arange(m) % g
    return TextResampling(codes, (group[None, :] != np.arange(g)[:, None]).astype(float))


def _se(replicates: np.ndarray, axis: int = 0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(replicates, axis=axis, ddof=1)


def p_value(null: np.ndarray, observed: np.ndarray, axis: int = 0) -> np.ndarray:
    """``(1 + #(null >= observed)) / (1 + P)``; a NaN null replicate counts as not >=."""
    null = np.asarray(null)
    observed = np.asarray(observed, dtype=float)
    count = np.sum(null >= np.expand_dims(observed, axis), axis=axis)
    return np.where(np.isnan(observed), np.nan, (1.0 + count) / (1.0 + null.shape[axis]))


# ---------------------------------------------------------------- metric level

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
            "se": float(_se(reps)), "replicates": reps}


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


# ---------------------------------------------------------------- compare() hook

def row_units(da: xr.DataArray) -> np.ndarray:
    """The text of each row: coord ``text`` at token level, the row itself when pooled."""
    row_dim = da.dims[1]
    if row_dim == "sample":
        return np.arange(da.sizes["sample"])
    if "text" not in da.coords:
        raise ValueError("token-level activations need a 'text' coord (the source text of "
                         "each row, as hrsa.capture writes it) to resample or permute texts")
    return np.asarray(da["text"].values)


class _WarningTally:
    """Collects warnings raised inside replicates; re-issues each message once, counted."""

    def __init__(self, what: str) -> None:
        self.what, self.counts = what, {}

    def run(self, fn: Callable, *args):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn(*args)
        for w in caught:
            key = (w.category, str(w.message))
            self.counts[key] = self.counts.get(key, 0) + 1
        return out

    def flush(self, total: int) -> None:
        for (category, message), count in self.counts.items():
            warnings.warn(f"{message} (raised {count} time(s) over {total} {self.what})",
                          category, stacklevel=4)


def add_to_comparison(ds: xr.Dataset, rows_a: xr.DataArray, rows_b: xr.DataArray,
                      metric_objs: Sequence, *, pairs: str, final_layer_only: Sequence[str],
                      bootstrap: int, ci: float, permutations: int, keep_replicates: bool,
                      seed: int, progress: bool, ci_method: str = "percentile",
                      device: torch.device = torch.device("cpu")) -> xr.Dataset:
    """``ds`` (scores of ``rows_a`` vs ``rows_b``) with bootstrap intervals and permutation
    p-values for every similarity variable.

    The engine scores the replicates (:mod:`hrsa.engine.scoring`, on ``device``, the layer
    pairs of ``pairs`` and ``final_layer_only``): metrics with ``score_resampled``
    (:func:`hrsa.metrics.supports_resampling`) give the B bootstrap replicates from the
    full rows' preparations; the others are recomputed on each replicate's rows, and every
    metric on each permutation's rows.
    """
    def rescore(metrics: list, xa: xr.DataArray, xb: xr.DataArray) -> xr.Dataset:
        return score(metrics, xa, xb, pairs, final_layer_only, False, device)

    def replicates(metrics: list, resampling: TextResampling) -> list[xr.Dataset]:
        return score_replicates(metrics, rows_a, rows_b, pairs, final_layer_only, progress,
                                resampling, device)

    row_dim = rows_a.dims[1]
    units = row_units(rows_a)
    n_units = len(np.unique(units))
    names = similarity_names(ds)
    ds = ds.copy()
    ds.attrs.update({"bootstrap": int(bootstrap), "permutations": int(permutations),
                     "uncertainty_seed": int(seed), "resampling_unit": "text",
                     "n_units": int(n_units), "units_hash": units_hash(units)})
    if bootstrap:
        if n_units < 2:
            raise ValueError(f"a text-level bootstrap needs at least 2 texts with rows, got "
                             f"{n_units}")
        draws = bootstrap_draws(n_units, bootstrap, seed)
        reps = _replicates(rows_a, rows_b, metric_objs, rescore, replicates,
                           TextResampling.from_draws(units, draws), "bootstrap", progress)
        jackknife = None
        if ci_method == "bca":
            jackknife = _replicates(rows_a, rows_b, metric_objs, rescore, replicates,
                                    jackknife_resampling(units, seed), "jackknife",
                                    progress)
        ds = add_intervals(ds, reps, ci=ci, keep_replicates=keep_replicates,
                           jackknife=jackknife)
    if permutations:
        tally = _WarningTally("permutations")
        nulls = {n: [] for n in names}
        for ra, rb in tqdm(permutation_indices(units, permutations, seed), desc="permutations",
                           disable=not progress, unit="perm"):
            # b's rows relabelled to a's so that the coords line up
            xb = rows_b.isel({row_dim: rb}).drop_vars(
                [c for c in ("text", "position", "token_id", row_dim) if c in rows_b.coords])
            rep = tally.run(rescore, metric_objs, rows_a.isel({row_dim: ra}), xb)
            for n in names:
                nulls[n].append(rep[n].values)
        tally.flush(permutations)
        for n in names:
            null = np.stack(nulls[n])
            ds[f"{n}_p_value"] = _companion(ds[n], p_value(null, ds[n].values), "p_value",
                                            "permutation p-value", permutations=int(permutations),
                                            range=[0.0, 1.0])
            ds[f"{n}_null_mean"] = _companion(ds[n], np.nanmean(null, axis=0), "null_mean",
                                              "permutation null mean",
                                              permutations=int(permutations))
    return ds


def add_intervals(ds: xr.Dataset, replicates: list[xr.Dataset], *, ci: float,
                  keep_replicates: bool, jackknife: list[xr.Dataset] | None = None
                  ) -> xr.Dataset:
    """``ds`` with ``{name}_ci_low``, ``_ci_high``, ``_se`` (and ``_boot``) for every
    similarity variable, from its bootstrap ``replicates`` (Datasets like ``ds``):
    percentile intervals, or BCa ones (:func:`bca_interval`) given the ``jackknife``
    replicates."""
    ds = ds.copy()
    bootstrap = len(replicates)
    method = "percentile" if jackknife is None else "bca"
    ds.attrs.update({"bootstrap": bootstrap, "ci": float(ci), "ci_method": method})
    label = f"{100 * ci:g}%" + (" BCa" if jackknife is not None else "")
    for n in similarity_names(ds):
        stack = np.stack([rep[n].values for rep in replicates])
        if jackknife is None:
            low, high = percentile_interval(stack, ci)
        else:
            low, high = bca_interval(stack, ds[n].values,
                                     np.stack([jk[n].values for jk in jackknife]), ci)
        for suffix, values, what in (("ci_low", low, f"{label} CI low"),
                                     ("ci_high", high, f"{label} CI high"),
                                     ("se", _se(stack), "bootstrap SE")):
            ds[f"{n}_{suffix}"] = _companion(ds[n], values, suffix, what,
                                             bootstrap=bootstrap, ci=float(ci),
                                             ci_method=method)
        if keep_replicates:
            ds[f"{n}_boot"] = _companion(ds[n], stack, "bootstrap_replicate",
                                         "bootstrap replicate", dims_first=("bootstrap",),
                                         bootstrap=bootstrap, ci=float(ci))
    return ds


def stratified_resampling(strata: np.ndarray, n_boot: int, seed: int) -> TextResampling:
    """``n_boot`` resamples of ``n`` texts, each stratum's texts drawn with replacement
    within the stratum (so every stratum keeps its size), as a
    :class:`~hrsa.metrics.weights.TextResampling` with one row per text.

    ``strata: (n,)`` labels (the probe: split and class). ValueError naming the stratum if
    one has fewer than 2 texts (a resample of one text has no variability).
    """
    strata = np.asarray(strata)
    names, codes = np.unique(strata, return_inverse=True)
    sizes = np.bincount(codes)
    if (sizes < 2).any():
        small = {str(names[i]): int(sizes[i]) for i in np.flatnonzero(sizes < 2)}
        raise ValueError(f"a stratified resample needs at least 2 texts per stratum; these "
                         f"have fewer: {small}. Use more texts (or fewer classes)")
    rng = np.random.default_rng([int(seed), _STRATA_STREAM])
    counts = np.zeros((n_boot, strata.size))
    for code in range(len(names)):
        rows = np.flatnonzero(codes == code)
        drawn = rows[rng.integers(0, rows.size, size=(n_boot, rows.size))]
        np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1.0)
    return TextResampling(np.arange(strata.size), counts)


def _replicates(rows_a, rows_b, metric_objs, rescore: Callable, replicates: Callable,
                resampling: TextResampling, what: str, progress) -> list[xr.Dataset]:
    """One Dataset per replicate of ``resampling`` (on the texts of ``rows_a``, codes in
    sorted order): scored from the full rows by metrics that support it, recomputed on the
    replicate's rows (each text repeated ``count`` times) by the others."""
    row_dim = rows_a.dims[1]
    counts = resampling.counts
    direct = [m for m in metric_objs if metrics_mod.supports_resampling(m)]
    recomputed = [m for m in metric_objs if not metrics_mod.supports_resampling(m)]
    reps = [xr.Dataset() for _ in range(len(counts))]
    tally = _WarningTally(f"{what} replicates")
    if direct:
        reps = tally.run(replicates, direct, resampling)
    if recomputed:
        groups = _rows_by_unit(resampling.units)
        for r, u in enumerate(tqdm(counts, desc=f"{what} (recomputed metrics)",
                                   disable=not progress, unit="rep")):
            idx = np.concatenate([groups[t] for t in np.repeat(np.arange(len(groups)),
                                                               u.astype(int))])
            rep = tally.run(rescore, recomputed, rows_a.isel({row_dim: idx}),
                            rows_b.isel({row_dim: idx}))
            reps[r] = reps[r].merge(rep, compat="override", join="exact")
    tally.flush(len(counts))
    return reps


def _companion(var: xr.DataArray, values: np.ndarray, diagnostic: str, what: str, *,
               dims_first: tuple = (), **extra) -> xr.DataArray:
    """A bootstrap or permutation companion of the similarity ``var`` (no chance floor)."""
    base = {k: v for k, v in var.attrs.items() if k != "chance"}
    attrs = diagnostic_attrs({**base, "long_name": var.attrs.get("long_name", var.name)},
                             diagnostic, what, **extra)
    return xr.DataArray(values, dims=dims_first + var.dims, coords=var.coords, attrs=attrs)


# ---------------------------------------------------------------- paired difference

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
                                     ("se", _se(reps), "bootstrap SE")):
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
