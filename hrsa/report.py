"""A short text summary of a comparison, by level, and the ``ds.hrsa`` accessor: the one
way to read a comparison's results (its similarities, by level, the summary, a tidy table,
the plots)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from . import plot
from .massive import summary_line
from .schema import LAYER_DIMS, LEVELS, is_similarity, similarity_names

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
    massive_line = summary_line(ds.attrs)
    return "\n".join(lines + ([massive_line] if massive_line else []))


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
    """``ds.hrsa``: a comparison's results, read the same way whatever produced them
    (compare, trajectory, streaming, a saved .nc file)."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    @property
    def similarities(self) -> xr.Dataset:
        """The similarity variables only (no diagnostics, intervals or p-values)."""
        return self._ds[similarity_names(self._ds)]

    def by_level(self) -> dict[str, list[str]]:
        """``{level: [similarity names]}``, levels in order (representation, geometry,
        function), each present level once."""
        out: dict[str, list[str]] = {}
        for level in LEVELS:
            names = [n for n in similarity_names(self._ds)
                     if self._ds[n].attrs.get("level") == level]
            if names:
                out[level] = names
        return out

    def summary(self) -> str:
        """See :func:`summarize`."""
        return summarize(self._ds)

    def to_dataframe(self) -> pd.DataFrame:
        """A tidy table of every similarity: one row per value, columns ``variable``,
        ``level``, each dim's coordinate (``layer``, ``k``, ``split``, ...; NaN where a
        variable lacks that dim) and ``value``."""
        frames = []
        for name in similarity_names(self._ds):
            var = self._ds[name]
            frame = (var.to_dataframe(name="value").reset_index() if var.dims else
                     pd.DataFrame({"value": [float(var.values)]}))
            frame = frame[[c for c in frame.columns if c in var.dims or c == "value"]]
            frame.insert(0, "level", var.attrs.get("level", ""))
            frame.insert(0, "variable", name)
            frames.append(frame)
        columns = ["variable", "level"]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=columns + ["value"])
        return table[columns + [c for c in table.columns if c not in columns + ["value"]]
                     + ["value"]]

    def profile(self, variables=None, **kwargs):
        """:func:`hrsa.plot.profile` of this comparison."""
        return plot.profile(self._ds, variables, **kwargs)

    def heatmap(self, variable: str = "cka", **kwargs):
        """:func:`hrsa.plot.heatmap` of this comparison."""
        return plot.heatmap(self._ds, variable, **kwargs)

    def report(self):
        """:func:`hrsa.plot.report`: every level of this comparison in one figure."""
        return plot.report(self._ds)
