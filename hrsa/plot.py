"""Plots of comparison Datasets: layer profiles, layer-pair heatmaps, probe bars and
realignment curves over checkpoints.

Every function reads a Dataset only (a saved ``.nc`` file works as well as a fresh
comparison), labels axes from the variables' attrs, takes ``ax=`` / ``axes=`` or makes
its own figure, returns what it drew on, and never calls ``plt.show()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .schema import LEVELS, is_similarity

_PROFILE_LEVELS = ("representation", "geometry")


def profile(ds: xr.Dataset, variables: Sequence[str] | None = None, *,
            axes: Sequence[Axes] | None = None) -> Figure:
    """Layer profiles, one panel per level: each similarity against relative depth, with
    its bootstrap interval as a shaded band where ``{name}_ci_low`` / ``_ci_high`` exist
    (``compare(..., bootstrap=B)``).

    Args:
        ds: a comparison with dim ``layer`` (``pairs="matched"``).
        variables: which to draw; default every similarity variable except the probe.
        axes: one Axes per level drawn; default a new figure.
    """
    if "layer" not in ds.dims:
        raise ValueError("profile needs a matched-layer comparison (dim 'layer'); use "
                         "heatmap() for pairs='all'")
    by_level = _by_level(ds, variables, exclude_dims={"split"})
    levels = [lv for lv in _PROFILE_LEVELS if by_level.get(lv)]
    if not levels:
        raise ValueError(f"no representation- or geometry-level variables in {list(ds)}")
    fig, axes = _axes(axes, len(levels), "axes")
    x = ds["depth"] if "depth" in ds.coords else ds["layer"]
    for ax, level in zip(axes, levels):
        for name in by_level[level]:
            band = _interval(ds, name, lambda v: v)
            for label, line, chance in _lines(ds[name], name):
                if "layer" in line.dims:
                    drawn = ax.plot(x.values, line.values, marker="o", ms=3, label=label)
                    _band(ax, x.values, band, line, drawn[0].get_color())
                else:  # computed on the final layer only
                    drawn = ax.plot([x.values.max()], [float(line)], marker="*", ms=10,
                                    linestyle="none", label=f"{label} (final layer)")
                _chance_line(ax, chance, drawn[0].get_color())
        ax.set(title=f"{level} level", xlabel="relative depth" if "depth" in ds.coords
               else "layer", ylabel="similarity")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def heatmap(ds: xr.Dataset, variable: str = "cka", *, ax: Axes | None = None,
            mask_ci_crossing: float | None = None, **select) -> Axes:
    """Layer-pair heatmap of one variable (dims ``layer_a`` x ``layer_b``), as in the
    method's figures: rows are model a's layers, columns model b's.

    ``select`` picks one value of any extra dim, e.g. ``heatmap(ds, "knn_overlap", k=10)``.
    ``mask_ci_crossing=t`` blanks the cells whose bootstrap interval
    (``{variable}_ci_low``, ``_ci_high``) contains ``t``.
    """
    if variable not in ds:
        raise ValueError(f"variable {variable!r} not in the Dataset; it has {list(ds)}")
    da = ds[variable].sel(select) if select else ds[variable]
    if set(da.dims) != {"layer_a", "layer_b"}:
        raise ValueError(f"heatmap needs dims (layer_a, layer_b) (pairs='all'); {variable} "
                         f"has {da.dims}; select extra dims with keywords, e.g. k=10")
    if mask_ci_crossing is not None:
        bounds = [f"{variable}_ci_low", f"{variable}_ci_high"]
        if not all(b in ds for b in bounds):
            raise ValueError(f"mask_ci_crossing needs {bounds}: run compare(..., bootstrap=B)")
        low, high = (ds[b].sel(select) if select else ds[b] for b in bounds)
        da = da.where(~((low <= mask_ci_crossing) & (high >= mask_ci_crossing)))
    ax = ax or plt.figure(figsize=(5, 4.2)).add_subplot()
    lo, hi = da.attrs.get("range", [None, None])
    da.transpose("layer_a", "layer_b").plot.imshow(
        ax=ax, origin="lower", cmap="viridis", vmin=max(lo, float(da.min())) if lo is not None
        else None, vmax=min(hi, float(da.max())) if hi is not None else None,
        cbar_kwargs={"label": da.attrs.get("long_name", variable)})
    ax.set(xlabel=f"layer of {ds.attrs.get('model_b', 'b')}",
           ylabel=f"layer of {ds.attrs.get('model_a', 'a')}",
           title=da.attrs.get("long_name", variable))
    return ax


def probe_bars(ds: xr.Dataset, *, layer: int = -1, ax: Axes | None = None) -> Axes:
    """Probe accuracy by split: fitted and read out on a (self) vs read out on b (direct),
    at one matched layer (default the last). Bootstrap intervals
    (``compare(..., bootstrap=B)``) are drawn as error bars."""
    if "probe_self" not in ds:
        raise ValueError("no probe variables: run compare() with labels=")
    ax = ax or plt.figure(figsize=(4.5, 3.5)).add_subplot()
    at = {"layer": layer} if "layer" in ds["probe_self"].dims else {}
    x = np.arange(ds.sizes["split"])
    for name, shift, label in (("probe_self", -0.2, "self (a -> a)"),
                               ("probe_direct", 0.2, "direct (a -> b)")):
        acc = ds[name].isel(at).values
        err = None
        if f"{name}_ci_low" in ds:
            low, high = (ds[f"{name}_ci_{b}"].isel(at).values for b in ("low", "high"))
            err = np.clip([acc - low, high - acc], 0, None)  # BCa may exclude the point
        ax.bar(x + shift, acc, 0.4, yerr=err, capsize=3, label=label)
    ax.set_xticks(x, [str(s) for s in ds["split"].values])
    depth = float(ds["depth"].isel(layer=layer)) if at and "depth" in ds.coords else None
    title = "linear probe transfer" + (f" (depth {depth:.2f})" if depth is not None else "")
    ax.set(ylim=(0, 1.05), ylabel="accuracy", title=title)
    ax.legend(fontsize="small", loc="lower right")
    return ax


def realignment(ds: xr.Dataset, variables: Sequence[str] | None = None, *,
                layer: int | None = None, axes: Sequence[Axes] | None = None) -> Figure:
    """Realignment curves: each similarity against training step, one panel per level,
    averaged over matched layers (or at one ``layer`` position).

    Args:
        ds: a :func:`hrsa.trajectory` result (dims ``checkpoint``, ``layer``).
        variables: which to draw; default all similarity variables (probe: direct test
            accuracy).
        layer: a position along ``layer`` instead of the mean over layers.

    Bootstrap intervals (``trajectory(..., bootstrap=B)``) are drawn as shaded bands: at one
    ``layer`` from ``{name}_ci_low`` / ``_ci_high``; for the mean over layers only when the
    replicates were kept (``keep_replicates=True``: the interval of the replicates' layer
    means; averaging the bounds would not be an interval of the mean).
    """
    if "checkpoint" not in ds.dims or "layer" not in ds.dims:
        raise ValueError("realignment needs a trajectory (dims checkpoint, layer)")
    by_level = _by_level(ds, variables, exclude_dims=set())
    levels = [lv for lv in LEVELS if by_level.get(lv)]
    fig, axes = _axes(axes, len(levels), "axes")
    step = ds["step"] if "step" in ds.coords else ds["checkpoint"]
    where = "mean over layers" if layer is None else f"layer position {layer}"
    for ax, level in zip(axes, levels):
        for name in by_level[level]:
            def reduce(v: xr.DataArray) -> xr.DataArray:
                v = v.sel(split="test") if "split" in v.dims else v
                if "layer" in v.dims:
                    v = v.mean("layer") if layer is None else v.isel(layer=layer)
                return v
            da = reduce(ds[name])
            band = _interval(ds, name, reduce, averaged=layer is None
                             and "layer" in ds[name].dims)
            for label, line, chance in _lines(da, name):
                drawn = ax.plot(step.values, line.values, marker="o", ms=3, label=label)
                _band(ax, step.values, band, line, drawn[0].get_color())
                _chance_line(ax, chance, drawn[0].get_color())
        ax.set(title=f"{level} level ({where})", xlabel=step.attrs.get("long_name", "step"),
               ylabel="similarity")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def report(ds: xr.Dataset) -> Figure:
    """The comparison on one figure: layer profiles by level (matched layers) or heatmaps
    of CKA and dimension correlation (all pairs), plus probe bars when the Dataset has
    them."""
    if "layer" in ds.dims:
        n = len([lv for lv in _PROFILE_LEVELS if _by_level(ds, None, {"split"}).get(lv)])
    else:
        maps = [v for v in ("cka", "dimension_correlation") if v in ds
                and {"layer_a", "layer_b"} <= set(ds[v].dims)]
        n = len(maps)
    n_panels = n + ("probe_self" in ds)
    fig, axes = plt.subplots(1, n_panels, figsize=(5 * n_panels, 4), squeeze=False)
    if "layer" in ds.dims:
        profile(ds, axes=axes[0][:n])
    else:
        for ax, name in zip(axes[0], maps):
            heatmap(ds, name, ax=ax)
    if "probe_self" in ds:
        probe_bars(ds, ax=axes[0][n])
    fig.suptitle(f"{ds.attrs.get('model_a', 'a')}  vs  {ds.attrs.get('model_b', 'b')}",
                 fontsize="medium")
    fig.tight_layout()
    return fig


def _by_level(ds: xr.Dataset, variables, exclude_dims: set) -> dict[str, list[str]]:
    names = list(variables) if variables is not None else [
        n for n, v in ds.data_vars.items()
        if is_similarity(v) and not exclude_dims & set(v.dims)
        and not (n == "probe_self")]
    missing = [n for n in names if n not in ds]
    if missing:
        raise ValueError(f"variables {missing} not in the Dataset; it has {list(ds)}")
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(ds[name].attrs.get("level", "other"), []).append(name)
    return out


def _lines(da: xr.DataArray, name: str):
    """(label, DataArray, chance floor or None) per value of the extra dim (k) if any."""
    extra = [d for d in da.dims if d not in ("layer", "checkpoint")]
    chance = da.attrs.get("chance")
    if not extra:
        yield name, da, None if chance is None else float(np.ravel(chance)[0])
        return
    for i, value in enumerate(da[extra[0]].values):
        floor = None if chance is None else float(np.ravel(chance)[i])
        yield f"{name} {extra[0]}={value}", da.sel({extra[0]: value}), floor


def _interval(ds: xr.Dataset, name: str, reduce, averaged: bool = False):
    """``(low, high)`` of ``reduce(ds[name])`` from the bootstrap companions, or None.
    ``averaged``: ``reduce`` averages over layers, so the interval comes from the kept
    replicates (None without them)."""
    if averaged:
        if f"{name}_boot" not in ds:
            return None
        reps = reduce(ds[f"{name}_boot"])
        ci = float(ds.attrs.get("ci", 0.95))
        q = reps.quantile([(1 - ci) / 2, (1 + ci) / 2], dim="bootstrap")
        return q.isel(quantile=0, drop=True), q.isel(quantile=1, drop=True)
    if f"{name}_ci_low" not in ds or f"{name}_ci_high" not in ds:
        return None
    return reduce(ds[f"{name}_ci_low"]), reduce(ds[f"{name}_ci_high"])


def _band(ax: Axes, x, band, line: xr.DataArray, color: str) -> None:
    """Shade ``band`` (low, high) at the same extra-dim value (k) as ``line``."""
    if band is None:
        return
    low, high = band
    pick = {d: line[d].item() for d in low.dims if d not in line.dims and d in line.coords}
    low, high = (v.sel(pick) if pick else v for v in (low, high))
    if low.shape != np.shape(x):
        return
    ax.fill_between(x, low.values, high.values, color=color, alpha=0.2, linewidth=0)


def _chance_line(ax: Axes, chance: float | None, color: str) -> None:
    """The metric's chance floor as a dashed line in its colour."""
    if chance is not None:
        ax.axhline(chance, color=color, linestyle="--", linewidth=0.8, alpha=0.7)


def _axes(axes, n: int, name: str):
    if axes is None:
        fig, grid = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
        return fig, list(grid[0])
    axes = list(np.ravel(axes))
    if len(axes) < n:
        raise ValueError(f"{name}: {n} panels to draw, {len(axes)} Axes given")
    return axes[0].figure, axes
