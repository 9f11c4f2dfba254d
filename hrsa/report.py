"""A short text summary of a comparison, by level, and the ``ds.hrsa`` accessor."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .schema import LAYER_DIMS, LEVELS, is_similarity

LEVEL_ORDER = LEVELS  # the levels in the order they are reported (an older name)


def summarize(ds: xr.Dataset) -> str:
    """A table of every similarity variable, grouped by level: mean, min and max over
    all layers (or layer pairs, or checkpoints), one row per extra coordinate (k, split)
    where a variable has one. Diagnostics are left out.

    Example output::

        hrsa: all-MiniLM-L6-v2 vs perturbed copy (600 texts, 20000 token rows)
        level           variable                 mean    min    max
        representation  dimension_correlation   0.912  0.850  0.990
    """
    lines = [_title(ds), f"{'level':<15} {'variable':<28} {'mean':>7} {'min':>7} {'max':>7}"]
    for level in LEVELS:
        for name, var in ds.data_vars.items():
            if var.attrs.get("level") != level or not is_similarity(var):
                continue
            extra = [d for d in var.dims if d not in LAYER_DIMS]
            for label, values in _rows(name, var, extra):
                finite = values[np.isfinite(values)]
                stats = (f"{finite.mean():7.3f} {finite.min():7.3f} {finite.max():7.3f}"
                         if finite.size else f"{'nan':>7} {'nan':>7} {'nan':>7}")
                lines.append(f"{level:<15} {label:<28} {stats}")
    return "\n".join(lines)


def _rows(name: str, var: xr.DataArray, extra: list[str]):
    if not extra:
        yield name, var.values.ravel()
        return
    dim = extra[0]
    for value in var[dim].values:
        yield f"{name} {dim}={value}", var.sel({dim: value}).values.ravel()


def _title(ds: xr.Dataset) -> str:
    a, b = ds.attrs.get("model_a", "a"), ds.attrs.get("model_b", "b")
    rows = ds.attrs.get("n_rows", "?")
    unit = "token rows" if ds.attrs.get("row_dim") == "token" else "rows"
    return f"hrsa: {a} vs {b} ({ds.attrs.get('n_texts', '?')} texts, {rows} {unit})"


@xr.register_dataset_accessor("hrsa")
class HrsaAccessor:
    """``ds.hrsa.summary()`` on any comparison Dataset."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def summary(self) -> str:
        """See :func:`summarize`."""
        return summarize(self._ds)
