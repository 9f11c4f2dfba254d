"""compare() and trajectory(): capture + metrics -> a labeled ``xarray.Dataset``.

A comparison holds one data variable per metric output, dims ``(layer,)`` for layers
matched by relative depth or ``(layer_a, layer_b)`` for every pair. Each layer is
prepared once per metric, whatever the number of pairs it enters.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from . import metrics as metrics_mod
from .capture import capture_views, text_hash, validate_texts

DEFAULT_METRICS = (
    ("dimension_correlation", {}),
    ("procrustes_alignment", {}),
    ("cka", {}),
    ("knn_overlap", {"k": (5, 10, 50)}),
)
PAIRS = ("matched", "all")
SPLITS = ("train", "dev", "test")


def compare(
    a: Any,
    b: Any,
    texts: Sequence[str] | None = None,
    *,
    labels: Sequence | None = None,
    metrics: Sequence[str | metrics_mod.Metric] | None = None,
    pairs: str = "matched",
    pooling: str | None = None,
    max_tokens: int | None = 50_000,
    seed: int = 0,
    instruction: str | None = None,
    probe: dict | None = None,
    progress: bool = True,
    **capture_options: Any,
) -> xr.Dataset:
    """Compare two models (or two captured activations) layer by layer at the three levels.

    Args:
        a, b: anything :func:`hrsa.capture` takes, or activations it returned (a DataArray
            with dims ``(layer, sample|token, feature)``), which are reused as they are.
        texts: the N texts both models read; required unless both are activations.
        labels: N class labels: adds the function level (a linear probe fitted on ``a``'s
            mean-pooled text vectors, frozen, read out on ``b``'s): ``probe_self`` and
            ``probe_direct``, accuracy by ``split`` (train, dev, test).
        metrics: names or :class:`hrsa.metrics.Metric` objects; default
            dimension_correlation, procrustes_alignment, cka, knn_overlap (k = 5, 10, 50).
        pairs: "matched" (layers at the same relative depth, dim ``layer``) or "all"
            (dims ``layer_a`` x ``layer_b``, for heatmaps).
        pooling: None (token level, the method's unit: rows are token positions, the same
            in both models) or "mean" / "last" / "first" (rows are texts).
        max_tokens: token level: rows are subsampled to this many, with the same ``seed``
            (so the same rows) in both models; None keeps all.
        seed: seed of the row subsample and of the probe's splits.
        instruction: query instruction, applied through the capture template.
        probe: options of :class:`hrsa.metrics.function` ``linear_probe_transfer``
            (e.g. ``{"classifier": "ridge"}``).
        progress: tqdm bars on capture and scoring.
        **capture_options: passed to :func:`hrsa.capture` (``layers``, ``batch_size``,
            ``attention``, ``device``, ``dtype``, ``exclude_first_token``, ...).

    Returns:
        ``xarray.Dataset``; see docs/design.md and docs/metrics.md for the variables.
    """
    metric_objs = _check_options(metrics, pairs)
    if texts is not None:
        texts = validate_texts(texts)
    views = _views(pooling, labels)
    acts_a, acts_b = (
        _activations(model, texts, views, which, max_tokens=max_tokens, seed=seed,
                     instruction=instruction, progress=progress, **capture_options)
        for which, model in (("a", a), ("b", b))
    )
    return _compare_activations(
        acts_a, acts_b, texts, labels=labels, metric_objs=metric_objs, pairs=pairs,
        pooling=pooling, max_tokens=max_tokens, seed=seed, instruction=instruction,
        probe=probe, progress=progress, capture_options=capture_options)


def _check_options(metrics, pairs: str) -> list[metrics_mod.Metric]:
    if pairs not in PAIRS:
        raise ValueError(f"pairs must be one of {PAIRS}, got {pairs!r}")
    return resolve_metrics(metrics)


def _views(pooling: str | None, labels) -> tuple:
    """The capture views one comparison needs: its rows, plus mean-pooled text vectors
    for the probe when labels are given."""
    return (pooling, "mean") if labels is not None and pooling != "mean" else (pooling,)


def _compare_activations(acts_a: list, acts_b: list, texts, *, labels, metric_objs, pairs,
                         pooling, max_tokens, seed, instruction, probe, progress,
                         capture_options) -> xr.Dataset:
    """The scoring half of :func:`compare`, on activations captured for every view."""
    if labels is not None:
        labels = _validate_labels(labels, texts, acts_a[0])
    rows_a, rows_b = _align_rows(acts_a[0], acts_b[0], max_tokens, seed)
    ds = _score(metric_objs, rows_a, rows_b, pairs, progress)
    if labels is not None:
        probe_metric = metrics_mod.get("linear_probe_transfer", labels=list(labels),
                                       **{"seed": seed, **(probe or {})})
        ds = ds.merge(_probe(probe_metric, acts_a[-1], acts_b[-1], pairs, progress),
                      compat="override", join="exact")
    ds.attrs.update(_provenance(rows_a, rows_b, texts, pairs, pooling, max_tokens, seed,
                                instruction, metric_objs, capture_options))
    return ds


def resolve_metrics(metrics: Sequence | None) -> list[metrics_mod.Metric]:
    """Metric objects for ``metrics`` (names or objects); None gives the default set."""
    if metrics is None:
        return [metrics_mod.get(name, **params) for name, params in DEFAULT_METRICS]
    if isinstance(metrics, (str, metrics_mod.Metric)):
        metrics = [metrics]
    resolved = [metrics_mod.get(m) for m in metrics]
    function_level = [m.name for m in resolved if m.level == "function"]
    if function_level:
        raise ValueError(f"metrics: {function_level} are function-level; pass labels= to "
                         "compare() for the probe instead")
    return resolved


def _validate_labels(labels, texts, acts: xr.DataArray) -> list:
    labels = list(labels)
    n = len(texts) if texts is not None else acts.attrs.get("n_texts")
    if n is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but there are {n} texts")
    if len(set(labels)) < 2:
        raise ValueError(f"labels must hold at least two classes, got {sorted(set(labels))}")
    return labels


def _activations(model, texts, views, which, *, max_tokens, seed, **options):
    """Activations of one model for each view; a DataArray given is reused."""
    if isinstance(model, xr.DataArray):
        _check_activation_dims(model, which)
        if len(views) > 1 and model.attrs.get("pooling") != "mean":
            raise ValueError(f"labels need mean-pooled text vectors, which cannot be derived "
                             f"from the token-level activations given as {which}; pass the "
                             "model, or activations captured with pooling='mean'")
        return [model] * len(views)
    if texts is None:
        raise ValueError(f"texts is required to capture model {which} (only captured "
                         "activations can be compared without texts)")
    token_level = views[0] is None
    return capture_views(model, texts, views,
                         max_tokens=max_tokens if token_level else None,
                         seed=seed, **options)


def _check_activation_dims(da: xr.DataArray, which: str) -> None:
    if da.ndim != 3 or da.dims[0] != "layer" or da.dims[1] not in ("sample", "token") \
            or da.dims[2] != "feature":
        raise ValueError(f"activations {which} must have dims (layer, sample|token, feature), "
                         f"got {da.dims}")


def _align_rows(xa: xr.DataArray, xb: xr.DataArray, max_tokens, seed):
    """Check both have the same rows (the same token positions at token level);
    subsample both with the same seed where there are more than ``max_tokens``."""
    for da, which in ((xa, "a"), (xb, "b")):
        _check_activation_dims(da, which)
    if xa.dims[1] != xb.dims[1]:
        raise ValueError(f"activations a are per {xa.dims[1]} and b per {xb.dims[1]}: "
                         "compare token-level with token-level, pooled with pooled")
    row_dim = xa.dims[1]
    if xa.sizes[row_dim] != xb.sizes[row_dim]:
        hint = (" The two tokenizers split the texts differently; compare pooled text "
                "vectors instead with pooling='mean'." if row_dim == "token" else "")
        raise ValueError(f"a has {xa.sizes[row_dim]} {row_dim} rows and b has "
                         f"{xb.sizes[row_dim]}.{hint}")
    for coord in ("text", "position", "token_id"):
        if coord in xa.coords and coord in xb.coords and \
                not np.array_equal(xa[coord].values, xb[coord].values):
            raise ValueError(f"a and b disagree on the {coord!r} of their token rows: the two "
                             "tokenizers split the texts differently, so rows are not the same "
                             "positions. Compare pooled text vectors with pooling='mean'.")
    n = xa.sizes[row_dim]
    if row_dim == "token" and max_tokens is not None and n > max_tokens:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_tokens, replace=False))
        xa, xb = xa.isel({row_dim: keep}), xb.isel({row_dim: keep})
    return xa, xb


def layer_pairs(depth_a: np.ndarray, depth_b: np.ndarray, pairs: str) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` into the two layer lists.

    "matched": for each layer of the model with fewer layers, the layer of the other at the
    nearest relative depth (ties to the shallower); "all": every pair.
    """
    if pairs == "all":
        return [(i, j) for i in range(len(depth_a)) for j in range(len(depth_b))]
    if len(depth_a) <= len(depth_b):
        return [(i, int(np.argmin(np.abs(depth_b - d)))) for i, d in enumerate(depth_a)]
    return [(int(np.argmin(np.abs(depth_a - d))), j) for j, d in enumerate(depth_b)]


def _pair_coords(xa, xb, index_pairs, pairs):
    """Dims and coords of one score grid."""
    if pairs == "all":
        coords = {"layer_a": xa.layer.values, "layer_b": xb.layer.values}
        if "depth" in xa.coords and "depth" in xb.coords:
            coords["depth_a"] = ("layer_a", xa.depth.values)
            coords["depth_b"] = ("layer_b", xb.depth.values)
        return ("layer_a", "layer_b"), coords, (xa.sizes["layer"], xb.sizes["layer"])
    i, j = (list(t) for t in zip(*index_pairs))
    coords = {"layer": np.arange(len(i)), "layer_a": ("layer", xa.layer.values[i]),
              "layer_b": ("layer", xb.layer.values[j])}
    if "depth" in xa.coords:
        coords["depth"] = ("layer", _depth(xa)[i] if len(i) == len(set(i)) else _depth(xb)[j])
    return ("layer",), coords, (len(index_pairs),)


def _depth(da: xr.DataArray) -> np.ndarray:
    return da.depth.values if "depth" in da.coords else np.linspace(0, 1, da.sizes["layer"])


def _score(metric_objs, xa, xb, pairs, progress) -> xr.Dataset:
    """Every metric on every layer pair, each layer prepared once per metric."""
    index_pairs = layer_pairs(_depth(xa), _depth(xb), pairs)
    dims, coords, shape = _pair_coords(xa, xb, index_pairs, pairs)
    flat = index_pairs
    positions = list(np.ndindex(*shape))
    d_a, d_b = xa.sizes["feature"], xb.sizes["feature"]
    variables: dict[str, xr.DataArray] = {}
    bar = tqdm(total=len(metric_objs) * len(flat), desc="metrics", disable=not progress,
               unit="pair")
    for metric in metric_objs:
        if getattr(metric, "same_dim", False) and d_a != d_b:
            warnings.warn(f"{metric.name} needs the same feature dimension in both models "
                          f"(a has {d_a}, b has {d_b}); it is left out", stacklevel=3)
            bar.update(len(flat))
            continue
        results = _score_metric(metric, xa, xb, flat, bar)
        variables.update(_to_variables(metric, results, positions, dims, coords, shape))
    bar.close()
    return xr.Dataset(variables, coords=coords)


def _score_metric(metric, xa, xb, flat, bar) -> list:
    """Scores of one metric for the layer-index pairs ``flat``, preparing each layer once
    and dropping a's preparations as soon as their last pair is scored."""
    prepared_b: dict[int, Any] = {}
    results: list = [None] * len(flat)
    by_a: dict[int, list[int]] = {}
    for p, (i, _) in enumerate(flat):
        by_a.setdefault(i, []).append(p)
    for i, positions in by_a.items():
        prep_a = _prepare(metric, _layer(xa, i), f"a layer {int(xa.layer[i])}")
        for p in positions:
            j = flat[p][1]
            if j not in prepared_b:
                prepared_b[j] = _prepare(metric, _layer(xb, j), f"b layer {int(xb.layer[j])}")
            results[p] = metric.score(prep_a, prepared_b[j])
            bar.update(1)
    return results


def _prepare(metric, X: torch.Tensor, label: str) -> Any:
    """``metric.prepare(X, label)``; a user's metric whose prepare takes only X works too."""
    try:
        inspect.signature(metric.prepare).bind(X, label)
    except TypeError:
        return metric.prepare(X)
    return metric.prepare(X, label)


def _layer(da: xr.DataArray, i: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(da.isel(layer=i).values))


def _to_variables(metric, results, positions, dims, coords, shape) -> dict[str, xr.DataArray]:
    """One DataArray per output of ``metric``: the similarity under the metric's name (with
    its extra dim when it has one), diagnostics as ``{name}_{key}``."""
    attrs = metric_attrs(metric)
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
        var_attrs = attrs if key == "similarity" else {
            **attrs, "long_name": f"{attrs['long_name']} ({key})", "diagnostic": key}
        out[name] = xr.DataArray(grid, dims=dims, attrs=var_attrs)
    return out


def metric_attrs(metric) -> dict:
    """netCDF-safe attrs describing a metric: level, long_name, params, range, invariances."""
    return {
        "level": metric.level,
        "long_name": metric.long_name or metric.name,
        "metric": metric.name,
        "params": json.dumps(metric.params(), sort_keys=True, default=str),
        "range": [float(v) for v in metric.range],
        "invariances": ", ".join(sorted(metric.invariances)) or "none",
        "units": "1",
    }


def _probe(metric, pooled_a: xr.DataArray, pooled_b: xr.DataArray, pairs, progress):
    """probe_self / probe_direct (accuracy by split) from mean-pooled text vectors."""
    pooled_a, pooled_b = _align_rows(pooled_a, pooled_b, None, 0)
    index_pairs = layer_pairs(_depth(pooled_a), _depth(pooled_b), pairs)
    dims, coords, shape = _pair_coords(pooled_a, pooled_b, index_pairs, pairs)
    positions = list(np.ndindex(*shape))
    with tqdm(total=len(index_pairs), desc="probe", disable=not progress, unit="pair") as bar:
        results = _score_metric(metric, pooled_a, pooled_b, index_pairs, bar)
    base = metric_attrs(metric)
    out = {}
    for readout, what in (("self", "fitted and read out on a"),
                          ("direct", "fitted on a, frozen, read out on b")):
        grid = np.full(shape + (len(SPLITS),), np.nan)
        for pos, res in zip(positions, results):
            grid[pos] = [res[f"{readout}_{split}"] for split in SPLITS]
        out[f"probe_{readout}"] = xr.DataArray(
            grid, dims=dims + ("split",), coords={"split": list(SPLITS)},
            attrs={**base, "long_name": f"probe accuracy ({readout}: {what})", "range": [0.0, 1.0]})
    return xr.Dataset(out, coords=coords)


def _provenance(xa, xb, texts, pairs, pooling, max_tokens, seed, instruction, metric_objs,
                capture_options) -> dict:
    from . import __version__

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
        "pairs": pairs,
        "pooling": pooling or "none",
        "max_tokens": int(max_tokens or 0),
        "seed": int(seed),
        "instruction": instruction or "",
        "metrics": json.dumps([{"name": m.name, **m.params()} for m in metric_objs],
                              default=str),
        "capture_options": json.dumps(capture_options, sort_keys=True, default=str),
        "hrsa_version": __version__,
    }


def trajectory(
    checkpoints_a: Any,
    checkpoints_b: Sequence[Any],
    texts: Sequence[str] | None = None,
    *,
    steps: Sequence[int] | None = None,
    labels: Sequence | None = None,
    metrics: Sequence[str | metrics_mod.Metric] | None = None,
    pairs: str = "matched",
    pooling: str | None = None,
    max_tokens: int | None = 50_000,
    seed: int = 0,
    instruction: str | None = None,
    probe: dict | None = None,
    progress: bool = True,
    **capture_options: Any,
) -> xr.Dataset:
    """The same comparison for each pair of checkpoints along training.

    Args:
        checkpoints_a: one model (the fixed reference, e.g. the base backbone) or a list
            as long as ``checkpoints_b`` (paired by position, e.g. two runs saved at the
            same steps).
        checkpoints_b: the checkpoints along training: paths or hub ids, ``{"model": id,
            "revision": rev}`` dicts, loaded models, or captured activations.
        texts: the texts every checkpoint reads.
        steps: the training step of each checkpoint (coord ``step``); default 0, 1, ...
        other arguments: as :func:`compare`.

    Returns:
        The comparisons concatenated along a new dim ``checkpoint`` with coords ``step``,
        ``model_a`` and ``model_b``: dims ``(checkpoint, layer)`` (or ``(checkpoint,
        layer_a, layer_b)``). Each distinct checkpoint is captured once, however many
        pairs it enters (a fixed reference once in all).
    """
    metric_objs = _check_options(metrics, pairs)
    checkpoints_b = list(checkpoints_b)
    if not checkpoints_b:
        raise ValueError("checkpoints_b is empty: give at least one checkpoint")
    if isinstance(checkpoints_a, list):
        if len(checkpoints_a) != len(checkpoints_b):
            raise ValueError(f"checkpoints_a has {len(checkpoints_a)} entries and "
                             f"checkpoints_b {len(checkpoints_b)}: give one reference model "
                             "or lists of the same length")
    else:
        checkpoints_a = [checkpoints_a] * len(checkpoints_b)
    steps = list(range(len(checkpoints_b))) if steps is None else [int(s) for s in steps]
    if len(steps) != len(checkpoints_b):
        raise ValueError(f"steps has {len(steps)} entries for {len(checkpoints_b)} checkpoints")
    if texts is not None:
        texts = validate_texts(texts)
    views = _views(pooling, labels)
    cache: dict[str, list[xr.DataArray]] = {}

    def captured(spec: Any) -> list[xr.DataArray]:
        key = _checkpoint_key(spec)
        if key not in cache:
            model, revision = ((spec["model"], spec.get("revision"))
                               if isinstance(spec, dict) else (spec, None))
            options = {**capture_options, **({"revision": revision} if revision else {})}
            cache[key] = _activations(model, texts, views, key, max_tokens=max_tokens,
                                      seed=seed, instruction=instruction, progress=progress,
                                      **options)
        return cache[key]

    results = [
        _compare_activations(
            captured(spec_a), captured(spec_b), texts, labels=labels, metric_objs=metric_objs,
            pairs=pairs, pooling=pooling, max_tokens=max_tokens, seed=seed,
            instruction=instruction, probe=probe, progress=False,
            capture_options=capture_options)
        for spec_a, spec_b in tqdm(list(zip(checkpoints_a, checkpoints_b)),
                                   desc="checkpoints", disable=not progress, unit="ckpt")
    ]
    ds = xr.concat(results, dim="checkpoint", combine_attrs="drop_conflicts")
    ds = ds.assign_coords(
        step=("checkpoint", steps),
        model_a=("checkpoint", [r.attrs["model_a"] for r in results]),
        model_b=("checkpoint", [r.attrs["model_b"] for r in results]),
    )
    ds.step.attrs["long_name"] = "training step"
    return ds


def _checkpoint_key(spec: Any) -> str:
    """An identity for caching captures: the path/id (and revision), else the object."""
    if isinstance(spec, dict):
        return f"{spec['model']}@{spec.get('revision') or ''}"
    if isinstance(spec, str) or hasattr(spec, "__fspath__"):
        return str(spec)
    return f"{type(spec).__name__} at {id(spec):#x}"
