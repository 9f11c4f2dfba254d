"""Streaming comparison: float64 moments accumulated batch by batch, so that token-level
comparisons over any number of texts run in memory that does not grow with the texts.

For paired rows ``X: (n, d1)`` and ``Y: (n, d2)`` (the same token positions in both
models), the sums ``n``, ``sum X``, ``sum Y``, ``X^T X``, ``Y^T Y`` and ``X^T Y`` determine
the centred products ``Cxy = X^T Y - n mx my^T`` (and ``Cxx``, ``Cyy``), and from them

* linear CKA = ``||Cxy||_F^2 / (||Cxx||_F ||Cyy||_F)`` (the feature form of HSIC),
* dimension correlation = mean over features j of ``Cxy_jj / sqrt(Cxx_jj Cyy_jj)``,
* procrustes_alignment = H_inv of the Procrustes map from the SVD of ``Cxy``,

exactly the values :func:`hrsa.compare` gives on the same rows (tested). Neighbour-based
metrics (k-NN overlap) need all rows at once and are not streamed. Memory: per matched
layer pair ``(d1^2 + d2^2 + d1 d2)`` float64 (29 layers of width 1,024: 0.7 GB), plus one
chunk of token rows.

The same moments serve activations on disk: :func:`score_chunked` is what
:func:`hrsa.compare` runs on dask-backed activations (:mod:`hrsa.store`), reading them one
chunk of rows at a time.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from . import distributed
from . import metrics as metrics_mod
from .capture import capture_views, text_hash, validate_texts
from .compare import (_chance, _depth, _final_label, _pair_coords, _score, _to_variables,
                      layer_pairs, metric_attrs)
from .models import load

STREAMING_METRICS = ("cka", "dimension_correlation", "procrustes_alignment")


@dataclass
class CrossMoments:
    """Running float64 sums of paired rows ``X: (n, d1)``, ``Y: (n, d2)``."""

    n: int
    sx: torch.Tensor  # (d1,)
    sy: torch.Tensor  # (d2,)
    xx: torch.Tensor  # (d1, d1)
    yy: torch.Tensor  # (d2, d2)
    xy: torch.Tensor  # (d1, d2)

    @classmethod
    def zeros(cls, d1: int, d2: int, device: str | torch.device = "cpu") -> CrossMoments:
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=device)

        return cls(0, zeros(d1), zeros(d2), zeros(d1, d1), zeros(d2, d2), zeros(d1, d2))

    def update(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Add the rows of ``X: (m, d1)`` and ``Y: (m, d2)`` (paired row by row)."""
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows and Y {Y.shape[0]}: rows must pair")
        X, Y = X.to(self.xx.device, torch.float64), Y.to(self.xx.device, torch.float64)
        self.n += X.shape[0]
        self.sx += X.sum(0)
        self.sy += Y.sum(0)
        self.xx += X.T @ X
        self.yy += Y.T @ Y
        self.xy += X.T @ Y

    def centred(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Cxx, Cyy, Cxy)``, the sums of centred products (``Xc^T Xc`` etc.)."""
        if self.n < 2:
            raise ValueError(f"at least 2 rows are needed, got {self.n}")
        mx, my = self.sx / self.n, self.sy / self.n
        return (self.xx - self.n * torch.outer(mx, mx), self.yy - self.n * torch.outer(my, my),
                self.xy - self.n * torch.outer(mx, my))

    def score(self, name: str) -> float:
        """The streamed value of metric ``name`` (one of :data:`STREAMING_METRICS`)."""
        cxx, cyy, cxy = self.centred()
        if name == "cka":
            denominator = torch.linalg.matrix_norm(cxx) * torch.linalg.matrix_norm(cyy)
            if denominator <= 0:
                raise ValueError("a representation is constant: linear CKA is undefined")
            return float(cxy.square().sum() / denominator)
        if name == "dimension_correlation":
            var = torch.diagonal(cxx) * torch.diagonal(cyy)
            scale = torch.diagonal(self.xx) * torch.diagonal(self.yy)
            varying = var > 1e-24 * scale.clamp_min(1e-300)
            if not bool(varying.any()):
                raise ValueError("no feature varies in both X and Y; dimension_correlation "
                                 "is undefined")
            if not bool(varying.all()):
                warnings.warn(f"dimension_correlation: {int((~varying).sum())} constant "
                              "features left out of the mean", RuntimeWarning, stacklevel=2)
            rho = torch.diagonal(cxy)[varying] / var[varying].sqrt()
            return float(rho.mean())
        if name == "procrustes_alignment":
            return metrics_mod.get("procrustes_alignment").from_cross_covariance(cxy)
        raise ValueError(f"metric {name!r} cannot be streamed; streamable: {STREAMING_METRICS}")


def compare_streaming(
    a: Any,
    b: Any,
    texts: Sequence[str],
    *,
    metrics: Sequence[str] = STREAMING_METRICS,
    chunk_texts: int = 256,
    progress: bool = True,
    **capture_options: Any,
) -> xr.Dataset:
    """Token-level comparison of matched layers over any number of texts, in bounded memory.

    Texts are read ``chunk_texts`` at a time; both models capture the chunk's token rows
    (every real token, as :func:`hrsa.capture` with ``pooling=None``), the rows update the
    :class:`CrossMoments` of every matched layer pair, and the chunk is dropped. Every row
    is used (no ``max_tokens`` subsample). Under a process group (torchrun), each rank
    streams its share of the chunks and the moments are summed with ``all_reduce``
    (:func:`hrsa.distributed.text_chunks`); every rank returns the same Dataset.

    Args:
        a, b: models, as :func:`hrsa.capture` takes them (loaded once).
        texts: the texts; their tokenizations must agree in both models.
        metrics: a subset of :data:`STREAMING_METRICS`.
        chunk_texts: texts per chunk (memory: one chunk's token rows of every layer).
        **capture_options: as :func:`hrsa.capture` (``batch_size``, ``attention``,
            ``device``, ``dtype``, ``exclude_first_token``, ...).

    Returns:
        A Dataset like ``hrsa.compare(..., pairs="matched", max_tokens=None)`` restricted
        to ``metrics``, with attr ``streaming = 1``.
    """
    texts = validate_texts(texts)
    unknown = sorted(set(metrics) - set(STREAMING_METRICS))
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {STREAMING_METRICS}, "
                         f"got {list(metrics)}")
    if chunk_texts < 1:
        raise ValueError(f"chunk_texts must be >= 1, got {chunk_texts}")
    chunks = distributed.text_chunks(texts, chunk_texts)  # this rank's; all in one process
    load_keys = ("device", "dtype", "revision", "attention", "device_map", "max_memory",
                 "offload_folder")
    load_opts = {k: capture_options.pop(k) for k in load_keys if k in capture_options}
    encoders = [load(model, **load_opts) for model in (a, b)]
    attention = {"attention": load_opts["attention"]} if "attention" in load_opts else {}
    moments: list[CrossMoments] | None = None
    for chunk in tqdm(chunks, desc="streaming", disable=not progress, unit="chunk"):
        xa, xb = (capture_views(enc, chunk, (None,), progress=False, **attention,
                                **capture_options)[0] for enc in encoders)
        if xa.sizes["token"] != xb.sizes["token"] or \
                not np.array_equal(xa.token_id.values, xb.token_id.values):
            raise ValueError("a and b tokenize the texts differently, so token rows do not "
                             "pair; stream pooled vectors instead with hrsa.compare("
                             "pooling='mean')")
        if moments is None:
            pairs = layer_pairs(xa.depth.values, xb.depth.values, "matched")
            moments = [CrossMoments.zeros(xa.sizes["feature"], xb.sizes["feature"])
                       for _ in pairs]
            first_a, first_b = xa, xb
        for (i, j), m in zip(pairs, moments):
            m.update(torch.from_numpy(xa.values[i]), torch.from_numpy(xb.values[j]))
    distributed.all_reduce_moments(moments)
    return _dataset(moments, pairs, first_a, first_b, list(metrics), texts)


def _dataset(moments, pairs, xa, xb, metrics, texts) -> xr.Dataset:
    from . import __version__

    i, j = (list(t) for t in zip(*pairs))
    coords = {"layer": np.arange(len(pairs)), "layer_a": ("layer", xa.layer.values[i]),
              "layer_b": ("layer", xb.layer.values[j]),
              "depth": ("layer", xa.depth.values[i] if len(set(i)) == len(i)
                        else xb.depth.values[j])}
    same_width = xa.sizes["feature"] == xb.sizes["feature"]
    variables = {}
    for name in metrics:
        metric = metrics_mod.get(name)
        if metric.same_dim and not same_width:
            warnings.warn(f"{name} needs the same feature dimension in both models; it is "
                          "left out", stacklevel=3)
            continue
        variables[name] = xr.DataArray([m.score(name) for m in moments], dims=("layer",),
                                        attrs=metric_attrs(metric))
    return xr.Dataset(variables, coords=coords, attrs={
        "model_a": xa.attrs["model"], "model_b": xb.attrs["model"],
        "attention_a": xa.attrs["attention"], "attention_b": xb.attrs["attention"],
        "n_texts": len(texts), "n_rows": int(moments[0].n), "row_dim": "token",
        "text_hash": text_hash(texts), "pairs": "matched", "pooling": "none",
        "streaming": 1, "hrsa_version": __version__,
    })


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
    ds = _score([m for m in metric_objs if m not in moment_metrics], rows_a, rows_b, pairs,
                final_layer_only, progress, device)
    subsample = (f"all {n} rows" if n_sub == n else
                 f"{n_sub} of {n} rows: the seeded max_tokens subsample")
    for var in ds.data_vars.values():
        var.attrs["rows"] = f"{subsample} (loaded one layer at a time)"
    modes = {m.name: "final" if m.name in final_layer_only else pairs for m in moment_metrics}
    grids = {mode: layer_pairs(_depth(xa), _depth(xb), mode) for mode in set(modes.values())}
    moments = pair_moments(xa, xb, sorted({p for g in grids.values() for p in g}), progress)
    d_a, d_b = xa.sizes["feature"], xb.sizes["feature"]
    variables = dict(ds.data_vars)
    for metric in moment_metrics:
        mode = modes[metric.name]
        if metric.same_dim and d_a != d_b:
            warnings.warn(f"{metric.name} needs the same feature dimension in both models "
                          f"(a has {d_a}, b has {d_b}); it is left out", stacklevel=4)
            continue
        dims, coords, shape = _pair_coords(xa, xb, grids[mode], mode)
        results = [moments[p].score(metric.name) for p in grids[mode]]
        new = _to_variables(metric, results, list(np.ndindex(*shape)), dims, coords, shape,
                            chance=_chance(metric, n=n, d=d_a))
        for var in new.values():
            var.attrs["rows"] = f"all {n} rows (float64 moments, one chunk at a time)"
            if mode == "final":
                var.attrs["layers"] = _final_label(xa, xb)
        variables.update(new)
    order = [m.name for m in metric_objs]
    names = sorted(variables, key=lambda name: order.index(variables[name].attrs["metric"]))
    return xr.Dataset({name: variables[name] for name in names}, coords=ds.coords,
                      attrs={"chunked": 1, "n_rows_moments": int(n)})


def _from_moments(metric: metrics_mod.Metric) -> bool:
    """Whether ``metric`` is one :meth:`CrossMoments.score` computes (default parameters)."""
    return metric.name in STREAMING_METRICS and \
        metric.params() == metrics_mod.get(metric.name).params()


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
