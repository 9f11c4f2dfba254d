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

from . import metrics as metrics_mod
from .capture import capture_views, text_hash, validate_texts
from .compare import layer_pairs, metric_attrs
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
    is used (no ``max_tokens`` subsample).

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
    load_keys = ("device", "dtype", "revision", "attention", "device_map", "max_memory",
                 "offload_folder")
    load_opts = {k: capture_options.pop(k) for k in load_keys if k in capture_options}
    encoders = [load(model, **load_opts) for model in (a, b)]
    attention = {"attention": load_opts["attention"]} if "attention" in load_opts else {}
    moments: list[CrossMoments] | None = None
    chunks = [texts[i:i + chunk_texts] for i in range(0, len(texts), chunk_texts)]
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
