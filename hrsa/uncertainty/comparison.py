"""The uncertainty of a whole comparison: bootstrap intervals and permutation p-values for
every similarity variable of a Dataset, its replicates scored by the engine
(:mod:`hrsa.engine.scoring`). :func:`hrsa.compare` calls :func:`add_to_comparison` for
``bootstrap=`` and ``permutations=``, and :func:`add_probe_intervals` for the probe.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .. import metrics as metrics_mod
from ..engine.scoring import score, score_probe, score_replicates
from ..metrics.weights import TextResampling
from ..schema import diagnostic_attrs, similarity_names
from .draws import (bootstrap_draws, jackknife_resampling, permutation_indices, row_units,
                    rows_by_unit, stratified_resampling, units_hash)
from .intervals import bca_interval, p_value, percentile_interval, standard_error

__all__ = ["add_to_comparison", "add_intervals", "add_probe_intervals"]


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
                                     ("se", standard_error(stack), "bootstrap SE")):
            ds[f"{n}_{suffix}"] = _companion(ds[n], values, suffix, what,
                                             bootstrap=bootstrap, ci=float(ci),
                                             ci_method=method)
        if keep_replicates:
            ds[f"{n}_boot"] = _companion(ds[n], stack, "bootstrap_replicate",
                                         "bootstrap replicate", dims_first=("bootstrap",),
                                         bootstrap=bootstrap, ci=float(ci))
    return ds


def add_probe_intervals(probe: xr.Dataset, metric, pooled_a: xr.DataArray,
                        pooled_b: xr.DataArray, pairs: str, *, bootstrap: int, ci: float,
                        ci_method: str, keep_replicates: bool, seed: int,
                        device: torch.device = torch.device("cpu")) -> xr.Dataset:
    """The probe's variables ``probe`` (:func:`hrsa.engine.scoring.score_probe` of
    ``metric`` on the mean-pooled ``pooled_a``, ``pooled_b``) with bootstrap intervals: each
    replicate redraws the texts within split and class (:func:`stratified_resampling` of
    ``metric.strata()``), scored from the full data's preparations; BCa's acceleration from
    a grouped jackknife over the texts."""
    resampling = stratified_resampling(metric.strata(), bootstrap, seed)
    jackknife = None
    if ci_method == "bca":
        jackknife = score_probe(metric, pooled_a, pooled_b, pairs, False,
                                jackknife_resampling(np.arange(len(metric.labels)), seed),
                                device)
    return add_intervals(probe, score_probe(metric, pooled_a, pooled_b, pairs, False,
                                            resampling, device),
                         ci=ci, keep_replicates=keep_replicates, jackknife=jackknife)


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
        groups = rows_by_unit(resampling.units)
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
