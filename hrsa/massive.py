"""Massive activations: the few token rows whose norm dwarfs the rest of their layer.

Decoder LLMs put hidden states with norms of 10^3..10^5 on the first token and on some
delimiters, at a handful of feature dims, from the early-middle layers on (Sun et al.
2024, "Massive activations in large language models"). A row with ``r`` times the median
norm dominates Gram matrices (CKA), cosine neighbours and Procrustes maps, so hrsa finds
them, reports them and can leave them out.

A row ``x_i`` of a layer ``X: (n, d)`` is *massive* at ratio ``r`` when
``||x_i|| > r * median_j ||x_j||``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

DEFAULT_RATIO = 100.0
ROW_COORDS = ("text", "position", "token_id")


def check_ratio(ratio: float) -> float:
    """``ratio`` as a float > 1, or a ValueError naming it."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise TypeError(f"massive-activation ratio must be a number, got {ratio!r}") from None
    if not np.isfinite(value) or value <= 1:
        raise ValueError(f"massive-activation ratio must be a finite number > 1, got {ratio!r}")
    return value


def row_norms(acts: xr.DataArray) -> np.ndarray:
    """``(layer, row)`` Euclidean norms of every row, accumulated in float64, one layer in
    memory at a time (dask-backed activations too).

    Raises:
        ValueError: non-finite values, or a layer whose median row norm is 0.
    """
    _check_dims(acts)
    norms = np.empty((acts.sizes["layer"], acts.shape[1]))
    for i in range(acts.sizes["layer"]):
        layer = np.asarray(acts.isel(layer=i).values, dtype=np.float64)
        norms[i] = np.sqrt(np.einsum("nd,nd->n", layer, layer))
        if not np.all(np.isfinite(norms[i])):
            raise ValueError(f"layer {int(acts.layer[i])} holds non-finite values")
        if np.median(norms[i]) == 0:
            raise ValueError(f"layer {int(acts.layer[i])}: the median row norm is 0, so no "
                             "ratio to it is defined")
    return norms


def massive_activations(acts: xr.DataArray, ratio: float = DEFAULT_RATIO) -> xr.Dataset:
    """The massive rows of every layer of ``acts``.

    Args:
        acts: activations ``(layer, token|sample, feature)`` from :func:`hrsa.capture`.
        ratio: a row is massive when its norm exceeds ``ratio`` x its layer's median row
            norm (> 1; default 100).

    Returns:
        ``xarray.Dataset`` with, along ``layer``: ``median_norm``, ``max_norm``,
        ``max_ratio`` (max / median) and ``n_massive``; along ``massive`` (one entry per
        massive row and layer, layers in order, rows in order): ``norm``, ``ratio``,
        ``feature`` (the feature dim with the largest ``|x_f|`` in that row) and
        ``feature_share`` (``x_f^2 / ||x||^2``), with coords ``massive_layer``, ``row``
        (index along the row dim) and, where ``acts`` has them, ``text``, ``position``
        and ``token_id``. Attrs: ``ratio``, ``row_dim``, ``model``.
    """
    ratio = check_ratio(ratio)
    norms = row_norms(acts)
    median = np.median(norms, axis=1)
    row_dim = acts.dims[1]
    layers, rows = np.nonzero(norms > ratio * median[:, None])
    features, shares = np.empty(len(rows), dtype=np.int64), np.empty(len(rows))
    for i in np.unique(layers):
        at = layers == i
        values = np.asarray(acts.isel(layer=int(i), **{row_dim: rows[at]}).values, np.float64)
        top = np.abs(values).argmax(axis=1)
        features[at] = top
        shares[at] = values[np.arange(len(top)), top] ** 2 / norms[i, rows[at]] ** 2
    entry_coords = {"massive_layer": ("massive", acts.layer.values[layers]),
                    "row": ("massive", rows)}
    for name in ROW_COORDS:
        if name in acts.coords and acts[name].dims == (row_dim,):
            entry_coords[name] = ("massive", acts[name].values[rows])
    return xr.Dataset(
        {
            "median_norm": ("layer", median),
            "max_norm": ("layer", norms.max(axis=1)),
            "max_ratio": ("layer", norms.max(axis=1) / median),
            "n_massive": ("layer", np.bincount(layers, minlength=len(median))),
            "norm": ("massive", norms[layers, rows]),
            "ratio": ("massive", norms[layers, rows] / median[layers]),
            "feature": ("massive", features),
            "feature_share": ("massive", shares),
        },
        coords={"layer": acts.layer.values, **entry_coords},
        attrs={"ratio": ratio, "row_dim": row_dim, "model": acts.attrs.get("model", "")},
    )


def massive_rows(acts: xr.DataArray, ratio: float = DEFAULT_RATIO) -> np.ndarray:
    """``(rows,)`` bool: rows that are massive at ``ratio`` in at least one layer."""
    norms = row_norms(acts)
    return (norms > check_ratio(ratio) * np.median(norms, axis=1, keepdims=True)).any(axis=0)


def exclude(acts: xr.DataArray, ratio: float = DEFAULT_RATIO,
            drop: np.ndarray | None = None) -> xr.DataArray:
    """``acts`` without the rows massive at ``ratio`` in any layer (or, given, the rows
    where ``drop: (rows,)`` is True); attrs ``exclude_massive`` (the ratio) and
    ``n_massive_excluded`` record it.

    Raises:
        ValueError: every row would be dropped.
    """
    ratio = check_ratio(ratio)
    if drop is None:
        drop = massive_rows(acts, ratio)
    if drop.all():
        raise ValueError(f"exclude_massive={ratio:g} would drop all {drop.size} rows")
    kept = acts.isel({acts.dims[1]: np.flatnonzero(~drop)})
    kept.attrs.update(exclude_massive=ratio, n_massive_excluded=int(drop.sum()))
    return kept


def describe(acts: xr.DataArray, ratio: float = DEFAULT_RATIO) -> dict:
    """netCDF-safe counts for a comparison's attrs: ``massive_rows`` (rows massive at
    ``massive_ratio`` in any layer), ``massive_max_ratio`` (the largest max/median norm ratio) and
    ``massive_layer`` (the layer where it is); empty for dask-backed activations (an
    extra pass over the store) and for data :func:`row_norms` rejects (the metrics
    report those)."""
    if acts.chunks is not None:
        return {}
    try:
        norms = row_norms(acts)
    except ValueError:
        return {}
    median = np.median(norms, axis=1)
    ratios = norms.max(axis=1) / median
    worst = int(np.argmax(ratios))
    return {"massive_rows": int((norms > ratio * median[:, None]).any(axis=0).sum()),
            "massive_max_ratio": float(ratios[worst]),
            "massive_layer": int(acts.layer.values[worst]), "massive_ratio": ratio}


def summary_line(attrs: dict) -> str:
    """One line on the massive rows a comparison's attrs record (see :func:`describe`),
    "" when neither model has any."""
    parts = []
    for which in ("a", "b"):
        rows = attrs.get(f"massive_rows_{which}", 0)
        if rows:
            parts.append(f"{which}: {rows} rows > {attrs[f'massive_ratio_{which}']:g}x the "
                         f"median norm (max {attrs[f'massive_max_ratio_{which}']:.0f}x at "
                         f"layer {attrs[f'massive_layer_{which}']})")
    if not parts:
        return ""
    return ("massive activations: " + "; ".join(parts) + ". hrsa.massive_activations "
            "lists them; exclude_massive= leaves them out.")


def _check_dims(acts: xr.DataArray) -> None:
    if not isinstance(acts, xr.DataArray) or acts.ndim != 3 or acts.dims[0] != "layer" \
            or acts.dims[2] != "feature":
        dims = getattr(acts, "dims", type(acts).__name__)
        raise ValueError(f"activations must be a DataArray with dims (layer, token|sample, "
                         f"feature), got {dims}")
