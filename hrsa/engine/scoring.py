"""Every metric on every layer pair it needs, each layer prepared once per metric.

For ``xa: (layer, n, d1)`` and ``xb: (layer, n, d2)`` on the same rows, a metric scores
the layer pairs of its mode ("matched", "all", or "final" for those in
``final_layer_only``): each layer's ``prepare`` runs once on the metric device and is
dropped after its last pair, so all-pairs work costs ``O(L)`` preparations, not ``O(L^2)``.
With a :class:`~hrsa.metrics.weights.TextResampling`, metrics that have ``score_resampled``
give every bootstrap replicate from those same preparations.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .. import metrics as metrics_mod
from ..metrics.weights import TextResampling
from .assemble import chance_floor, fits_width, probe_variables, to_variables
from .pairs import align_rows, depth, final_label, layer_pairs, pair_grid

__all__ = ["layer_tensor", "score", "score_replicates", "score_pairs",
           "score_probe"]


def layer_tensor(da: xr.DataArray, i: int,
                 device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Layer ``i`` of ``da`` as a ``(rows, feature)`` tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(da.isel(layer=i).values)).to(device)


def score(metric_objs: Sequence, xa: xr.DataArray, xb: xr.DataArray, pairs: str,
          final_layer_only: Sequence[str], progress: bool,
          device: torch.device = torch.device("cpu")) -> xr.Dataset:
    """Every metric on every layer pair it needs (``pairs``, or the final pair for those in
    ``final_layer_only``), each layer prepared once per metric, on ``device``: one Dataset
    of their variables (:func:`hrsa.engine.assemble.to_variables`)."""
    return _score_grids(metric_objs, xa, xb, pairs, final_layer_only, progress, None,
                        device)[0]


def score_replicates(metric_objs: Sequence, xa: xr.DataArray, xb: xr.DataArray, pairs: str,
                     final_layer_only: Sequence[str], progress: bool,
                     resampling: TextResampling,
                     device: torch.device = torch.device("cpu")) -> list[xr.Dataset]:
    """As :func:`score`, for each of the ``B`` bootstrap replicates of ``resampling``
    (metrics with ``score_resampled`` only): ``B`` Datasets, each layer prepared once on
    the full rows."""
    return _score_grids(metric_objs, xa, xb, pairs, final_layer_only, progress, resampling,
                        device)


def _score_grids(metric_objs, xa, xb, pairs, final_layer_only, progress,
                 resampling: TextResampling | None,
                 device: torch.device) -> list[xr.Dataset]:
    """One Dataset of scores, or with ``resampling`` one per replicate."""
    grids = {}
    for mode in {pairs, "final"}:
        index_pairs = layer_pairs(depth(xa), depth(xb), mode)
        grids[mode] = (index_pairs, *pair_grid(xa, xb, index_pairs, mode))
    d_a, d_b = xa.sizes["feature"], xb.sizes["feature"]
    n_out = 1 if resampling is None else resampling.n_replicates
    variables: list[dict[str, xr.DataArray]] = [{} for _ in range(n_out)]
    modes = ["final" if m.name in final_layer_only else pairs for m in metric_objs]
    bar = tqdm(total=sum(len(grids[mode][0]) for mode in modes),
               desc="metrics" if resampling is None else "bootstrap",
               disable=not progress, unit="pair")
    for metric, mode in zip(metric_objs, modes):
        index_pairs, dims, coords, shape = grids[mode]
        if not fits_width(metric, d_a, d_b):
            bar.update(len(index_pairs))
            continue
        if resampling is not None:
            per_pair = score_pairs(metric, xa, xb, index_pairs, bar, lambda px, py, m=metric:
                                   m.score_resampled(px, py, resampling), device)
            results = [[res[r] for res in per_pair] for r in range(n_out)]
        elif mode == "all" and _has_batched_scores(metric):
            grid = metric.score_all(
                [metrics_mod.prepare(metric, layer_tensor(xa, i, device),
                                     f"a layer {int(xa.layer[i])}")
                 for i in range(xa.sizes["layer"])],
                [metrics_mod.prepare(metric, layer_tensor(xb, j, device),
                                     f"b layer {int(xb.layer[j])}")
                 for j in range(xb.sizes["layer"])])
            results = [[float(grid[i, j]) for i, j in index_pairs]]
            bar.update(len(index_pairs))
        else:
            results = [score_pairs(metric, xa, xb, index_pairs, bar, metric.score, device)]
        chance = chance_floor(metric, n=xa.sizes[xa.dims[1]], d=d_a)
        for out, res in zip(variables, results):
            new = to_variables(metric, res, dims, coords, shape, chance=chance)
            if mode == "final":
                for var in new.values():
                    var.attrs["layers"] = final_label(xa, xb)
            out.update(new)
    bar.close()
    return [xr.Dataset(v, coords=grids[pairs][2]) for v in variables]


def _has_batched_scores(metric) -> bool:
    """Whether ``metric`` overrides ``score_all`` with a batched all-pairs path (one
    stacked product instead of a loop over pairs); only for scalar scores."""
    return not metric.dims and type(metric).score_all is not metrics_mod.Metric.score_all


def score_pairs(metric, xa: xr.DataArray, xb: xr.DataArray,
                index_pairs: Sequence[tuple[int, int]], bar: tqdm, score: Callable,
                device: torch.device = torch.device("cpu")) -> list:
    """``score(prep_a, prep_b)`` of one metric for the layer-index pairs ``index_pairs``,
    preparing each layer once on ``device`` and dropping each preparation as soon as its
    last pair is scored; ``bar`` advances by one per pair."""
    prepared_b: dict[int, Any] = {}
    uses_b = collections.Counter(j for _, j in index_pairs)
    results: list = [None] * len(index_pairs)
    by_a: dict[int, list[int]] = {}
    for p, (i, _) in enumerate(index_pairs):
        by_a.setdefault(i, []).append(p)
    for i, positions in by_a.items():
        prep_a = metrics_mod.prepare(metric, layer_tensor(xa, i, device),
                                     f"a layer {int(xa.layer[i])}")
        for p in positions:
            j = index_pairs[p][1]
            if j not in prepared_b:
                prepared_b[j] = metrics_mod.prepare(metric, layer_tensor(xb, j, device),
                                                    f"b layer {int(xb.layer[j])}")
            results[p] = score(prep_a, prepared_b[j])
            uses_b[j] -= 1
            if not uses_b[j]:
                del prepared_b[j]
            bar.update(1)
    return results


def score_probe(metric, pooled_a: xr.DataArray, pooled_b: xr.DataArray, pairs: str,
                progress: bool, resampling: TextResampling | None = None,
                device: torch.device = torch.device("cpu")) -> list[xr.Dataset]:
    """probe_self / probe_direct (accuracy by split) from mean-pooled text vectors, fitted
    on ``device`` (the torch solver; scikit-learn's on the CPU): one Dataset, or with
    ``resampling`` (rows: the texts) one per bootstrap replicate."""
    pooled_a, pooled_b = align_rows(pooled_a, pooled_b, None, 0)
    index_pairs = layer_pairs(depth(pooled_a), depth(pooled_b), pairs)
    dims, coords, shape = pair_grid(pooled_a, pooled_b, index_pairs, pairs)
    fn = metric.score if resampling is None else (
        lambda px, py: metric.score_resampled(px, py, resampling))
    with tqdm(total=len(index_pairs), desc="probe", disable=not progress, unit="pair") as bar:
        per_pair = score_pairs(metric, pooled_a, pooled_b, index_pairs, bar, fn, device)
    if resampling is None:
        per_pair = [[res] for res in per_pair]
    datasets = []
    for r in range(len(per_pair[0])):
        out = probe_variables(metric, [res[r] for res in per_pair], dims, shape)
        if pairs == "final":
            for var in out.values():
                var.attrs["layers"] = final_label(pooled_a, pooled_b)
        datasets.append(xr.Dataset(out, coords=coords))
    return datasets
