"""Scores of dask-backed activations (:mod:`hrsa.store`) without loading all their rows.

Metrics with ``score_moments`` (:class:`~hrsa.metrics.base.FromMoments`) come from float64
:class:`~hrsa.metrics.moments.CrossMoments` over every row, read one chunk of rows at a
time; every other metric scores the seeded ``max_tokens`` subsample, loaded one layer at a
time, through :func:`hrsa.engine.scoring.score`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from ..metrics import Metric, get
from ..metrics.base import FromMoments
from ..metrics.moments import STREAMING_METRICS, CrossMoments
from .assemble import chance_floor, fits_width, to_variables
from .pairs import depth, final_label, layer_pairs, pair_grid
from .scoring import score

__all__ = ["score_chunked", "pair_moments"]


def score_chunked(metric_objs: list, xa: xr.DataArray, xb: xr.DataArray,
                  rows_a: xr.DataArray, rows_b: xr.DataArray, pairs: str,
                  final_layer_only: Sequence[str], progress: bool,
                  device: torch.device = torch.device("cpu")) -> xr.Dataset:
    """The scores of :func:`hrsa.compare` for activations of which at least one is
    dask-backed (a :mod:`hrsa.store`), without loading all their rows at once.

    * ``cka``, ``dimension_correlation`` and ``procrustes_alignment`` (default parameters)
      come from float64 :class:`CrossMoments` over **every** row of ``xa``, ``xb``
      (``(layer, row, feature)``), read one chunk of rows at a time
      (:func:`pair_moments`): the values ``compare(..., max_tokens=None)`` gives in memory.
    * Every other metric (k-NN overlap, RSA, debiased or RBF CKA, ...) scores ``rows_a``,
      ``rows_b``: the rows compare keeps, i.e. at token level the seeded ``max_tokens``
      subsample (the same rows in both models), loaded one layer at a time: the values
      ``compare`` gives in memory with the same ``max_tokens`` and ``seed``.

    Each variable's attr ``rows`` says which rows it used; the Dataset gets attrs
    ``chunked = 1`` and ``n_rows_moments``. Memory: the moments of every layer pair scored
    (:func:`pair_moments`) plus one layer of the subsample.
    """
    row_dim = xa.dims[1]
    n, n_sub = xa.sizes[row_dim], rows_a.sizes[row_dim]
    moment_metrics = [m for m in metric_objs if _from_moments(m)]
    ds = score([m for m in metric_objs if m not in moment_metrics], rows_a, rows_b, pairs,
                final_layer_only, progress, device)
    subsample = (f"all {n} rows" if n_sub == n else
                 f"{n_sub} of {n} rows: the seeded max_tokens subsample")
    for var in ds.data_vars.values():
        var.attrs["rows"] = f"{subsample} (loaded one layer at a time)"
    modes = {m.name: "final" if m.name in final_layer_only else pairs for m in moment_metrics}
    grids = {mode: layer_pairs(depth(xa), depth(xb), mode) for mode in set(modes.values())}
    moments = pair_moments(xa, xb, sorted({p for g in grids.values() for p in g}), progress)
    d_a, d_b = xa.sizes["feature"], xb.sizes["feature"]
    variables = dict(ds.data_vars)
    for metric in moment_metrics:
        mode = modes[metric.name]
        if not fits_width(metric, d_a, d_b):
            continue
        dims, coords, shape = pair_grid(xa, xb, grids[mode], mode)
        results = [moments[p].score(metric.name) for p in grids[mode]]
        new = to_variables(metric, results, dims, coords, shape,
                           chance=chance_floor(metric, n=n, d=d_a))
        for var in new.values():
            var.attrs["rows"] = f"all {n} rows (float64 moments, one chunk at a time)"
            if mode == "final":
                var.attrs["layers"] = final_label(xa, xb)
        variables.update(new)
    order = [m.name for m in metric_objs]
    names = sorted(variables, key=lambda name: order.index(variables[name].attrs["metric"]))
    return xr.Dataset({name: variables[name] for name in names}, coords=ds.coords,
                      attrs={"chunked": 1, "n_rows_moments": int(n)})


def _from_moments(metric: Metric) -> bool:
    """Whether ``metric`` is one :meth:`CrossMoments.score` computes (a
    :class:`~hrsa.metrics.base.FromMoments` metric with default parameters)."""
    return isinstance(metric, FromMoments) and metric.name in STREAMING_METRICS and \
        metric.params() == get(metric.name).params()


def pair_moments(xa: xr.DataArray, xb: xr.DataArray, index_pairs: Sequence[tuple[int, int]],
                 progress: bool = False) -> dict[tuple[int, int], CrossMoments]:
    """:class:`CrossMoments` of the layer pairs ``index_pairs`` (indices into ``xa``'s and
    ``xb``'s layers) over every row of ``xa: (layer, n, d1)`` and ``xb: (layer, n, d2)``.

    Rows are read one block at a time (the row chunks of the dask-backed input): per block,
    b's layers in ``index_pairs`` one chunk at a time into one float32 buffer, then a's
    layers one at a time; products run in float64 on slices of at most ``2^20 / d`` rows.
    The per-layer sums (``sum X``, ``X^T X``) are computed once per layer and shared by its
    pairs. Memory: one row block of b's layers in float32 (default chunks: 16 MiB per
    layer, so 7 layers: 112 MB) plus a few chunks being read and converted, and ``d1 d2``
    float64 per pair plus ``d^2`` per layer (29 matched layers of width 1,024: 0.7 GB; all
    29 x 29 pairs: 7 GB).
    """
    row_dim = xa.dims[1]
    n, d1, d2 = xa.sizes[row_dim], xa.sizes["feature"], xb.sizes["feature"]
    layers_b = sorted({j for _, j in index_pairs})
    partners: dict[int, list[int]] = {}
    for i, j in index_pairs:
        partners.setdefault(i, []).append(j)

    def zeros(*shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64)

    def rows(da: xr.DataArray, layer: int, r0: int, r1: int) -> np.ndarray:
        return da.isel({"layer": layer, row_dim: slice(r0, r1)}).values

    sx, xx = {i: zeros(d1) for i in partners}, {i: zeros(d1, d1) for i in partners}
    sy, yy = {j: zeros(d2) for j in layers_b}, {j: zeros(d2, d2) for j in layers_b}
    xy = {(i, j): zeros(d1, d2) for i, j in index_pairs}
    chunked = xa if xa.chunks is not None else xb
    bounds = np.cumsum((0,) + tuple(chunked.chunksizes[row_dim])) if chunked.chunks \
        is not None else np.array([0, n])
    step = max(1, 2**20 // max(d1, d2))  # rows per float64 product (8 MB per operand)
    for r0, r1 in tqdm(list(zip(bounds[:-1], bounds[1:])), desc="moments",
                       disable=not progress, unit="chunk"):
        block_b = np.empty((len(layers_b), r1 - r0, d2), dtype=np.float32)
        for k, j in enumerate(layers_b):
            block_b[k] = rows(xb, j, r0, r1)
        slices = [slice(s, s + step) for s in range(0, r1 - r0, step)]
        for k, j in enumerate(layers_b):
            for sl in slices:
                Y = _float64(block_b[k, sl])
                sy[j] += Y.sum(0)
                yy[j] += Y.T @ Y
        for i, js in partners.items():
            block_a = rows(xa, i, r0, r1)
            for sl in slices:
                X = _float64(block_a[sl])
                sx[i] += X.sum(0)
                xx[i] += X.T @ X
                for j in js:
                    xy[i, j] += X.T @ _float64(block_b[layers_b.index(j), sl])
    return {(i, j): CrossMoments(n, sx[i], sy[j], xx[i], yy[j], xy[i, j])
            for i, j in index_pairs}


def _float64(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.astype(np.float64))
