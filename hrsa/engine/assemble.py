"""Scores -> the labeled variables of a comparison, and the comparison's provenance.

A metric's results on the layer pairs of one grid (:func:`hrsa.engine.pairs.pair_grid`)
become one DataArray per output (:func:`to_variables`): the similarity under the metric's
name, its diagnostics as ``{name}_{key}`` (attr ``diagnostic``), attrs from
:func:`hrsa.schema.metric_attrs`. :func:`provenance` is the one builder of a comparison's
Dataset attrs, for :func:`hrsa.compare`, :mod:`hrsa.streaming` and the chunked path alike.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from .. import massive
from ..metrics import Metric
from ..metrics.function import SPLITS
from ..schema import diagnostic_attrs, metric_attrs, text_hash
from ..version import __version__

if TYPE_CHECKING:
    from ..options import Options

__all__ = ["to_variables", "probe_variables", "chance_floor", "fits_width", "provenance"]


def chance_floor(metric: Metric, n: int, d: int) -> float | list[float] | None:
    """The metric's chance floor for these sizes (one per k for an extra dim), or None."""
    try:
        if "k" in metric.dims:
            return [float(metric.chance(d=d, n=n, k=k)) for k in metric.dims["k"]]
        value = metric.chance(d=d, n=n)
    except (ValueError, TypeError):
        return None
    return None if value is None else float(value)


def fits_width(metric: Metric, d_a: int, d_b: int) -> bool:
    """False, with a warning that it is left out, for a ``same_dim`` metric on models of
    different widths ``d_a != d_b``."""
    if getattr(metric, "same_dim", False) and d_a != d_b:
        warnings.warn(f"{metric.name} needs the same feature dimension in both models "
                      f"(a has {d_a}, b has {d_b}); it is left out", stacklevel=4)
        return False
    return True


def to_variables(metric: Metric, results: Sequence, dims: tuple[str, ...], coords: dict,
                 shape: tuple[int, ...], chance=None) -> dict[str, xr.DataArray]:
    """One DataArray per output of ``metric`` from ``results`` (one per position of the grid
    ``(dims, coords, shape)``, row-major): the similarity under the metric's name (with its
    extra dim when it has one), diagnostics as ``{name}_{key}``. ``chance``, the floor,
    goes into the similarity's attrs."""
    attrs = metric_attrs(metric)
    if chance is not None:
        attrs["chance"] = chance
    positions = list(np.ndindex(*shape))
    extra = dict(metric.dims)
    out: dict[str, xr.DataArray] = {}
    if isinstance(results[0], dict):
        keys = [k for k in results[0] if k != "similarity" or not extra]
    else:
        keys = ["similarity"]
    if extra:
        (dim, values), = extra.items()
        grid = np.full(shape + (len(values),), np.nan)
        for pos, res in zip(positions, results):
            grid[pos] = [res[f"{dim}={v}"] for v in values]
        out[metric.name] = xr.DataArray(grid, dims=dims + (dim,), attrs=attrs,
                                        coords={dim: list(values)})
        keys = [k for k in keys if not k.startswith(f"{dim}=")]
    for key in keys:
        grid = np.full(shape, np.nan)
        for pos, res in zip(positions, results):
            grid[pos] = res if not isinstance(res, dict) else res[key]
        name = metric.name if key == "similarity" else f"{metric.name}_{key}"
        var_attrs = attrs if key == "similarity" else diagnostic_attrs(attrs, key, key)
        out[name] = xr.DataArray(grid, dims=dims, attrs=var_attrs)
    return out


def probe_variables(metric: Metric, results: Sequence[dict], dims: tuple[str, ...],
                    shape: tuple[int, ...]) -> dict[str, xr.DataArray]:
    """``probe_self`` and ``probe_direct``: the linear probe's accuracy by ``split`` (train,
    dev, test) from its results (keys ``{readout}_{split}``) on the grid's positions."""
    base = metric_attrs(metric)
    out = {}
    for readout, what in (("self", "fitted and read out on a"),
                          ("direct", "fitted on a, frozen, read out on b")):
        grid = np.full(shape + (len(SPLITS),), np.nan)
        for pos, res in zip(np.ndindex(*shape), results):
            grid[pos] = [res[f"{readout}_{split}"] for split in SPLITS]
        out[f"probe_{readout}"] = xr.DataArray(
            grid, dims=dims + ("split",), coords={"split": list(SPLITS)},
            attrs={**base, "long_name": f"probe accuracy ({readout}: {what})",
                   "range": [0.0, 1.0]})
    return out


def provenance(xa: xr.DataArray, xb: xr.DataArray, texts: Sequence[str] | None,
               opts: Options, rows_scored: bool = True) -> dict[str, Any]:
    """The Dataset attrs of a comparison of ``xa`` and ``xb`` under ``opts``: both models,
    their revisions and attention, the texts (count and hash), the rows, every resolved
    option and the hrsa version; flat and netCDF-safe. ``rows_scored``: ``xa``/``xb`` are
    the rows scored, so each model's massive rows among them are described too
    (:func:`hrsa.massive.describe`); False where they are one chunk of a stream."""
    def attr(da, key, default=""):
        return da.attrs.get(key, default)

    row_dim = xa.dims[1]
    return {
        "model_a": attr(xa, "model", "a"), "model_b": attr(xb, "model", "b"),
        "revision_a": attr(xa, "revision"), "revision_b": attr(xb, "revision"),
        "attention_a": attr(xa, "attention"), "attention_b": attr(xb, "attention"),
        "n_texts": len(texts) if texts is not None else int(attr(xa, "n_texts", 0)),
        "n_rows": int(xa.sizes[row_dim]),
        "row_dim": row_dim,
        "text_hash": text_hash(texts) if texts is not None else attr(xa, "text_hash"),
        "preset": opts.preset,
        "pairs": opts.pairs,
        "pooling": opts.pooling or "none",
        "max_tokens": int(opts.max_tokens or 0),
        "seed": int(opts.seed),
        "instruction": opts.instruction or "",
        "final_layer_only": json.dumps(list(opts.final_layer_only)),
        "metrics": json.dumps([{"name": m.name, **m.params()} for m in opts.metrics],
                              default=str),
        "probe": json.dumps(opts.probe, sort_keys=True, default=str),
        "capture_options": json.dumps(opts.capture_options, sort_keys=True, default=str),
        "exclude_massive": float(opts.exclude_massive or 0),
        **{f"{key}_{which}": value for which, da in (("a", xa), ("b", xb)) if rows_scored
           for key, value in massive.describe(da).items()},
        "metric_device": str(opts.metric_device),
        "hrsa_version": __version__,
    }
