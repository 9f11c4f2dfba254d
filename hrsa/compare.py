"""compare() and trajectory(): capture + metrics -> a labeled ``xarray.Dataset``.

A comparison holds one data variable per metric output, dims ``(layer,)`` for layers
matched by relative depth or ``(layer_a, layer_b)`` for every pair. Each layer is
prepared once per metric, whatever the number of pairs it enters.
"""

from __future__ import annotations

import collections
import json
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from . import metrics as metrics_mod
from . import distributed, massive, presets, uncertainty
from .capture import text_hash, validate_texts
from .models import default_device
from .presets import UNSET
from .resampling import TextResampling
from .threads import limit_threads

PAIRS = ("matched", "all")
SPLITS = ("train", "dev", "test")


def compare(
    a: Any,
    b: Any,
    texts: Sequence[str] | None = None,
    *,
    labels: Sequence | None = None,
    metrics: Sequence[str | metrics_mod.Metric] | None = UNSET,
    pairs: str = UNSET,
    pooling: str | None = UNSET,
    max_tokens: int | None = UNSET,
    seed: int = UNSET,
    instruction: str | None = None,
    probe: dict | None = UNSET,
    final_layer_only: Sequence[str] = UNSET,
    preset: str = "default",
    progress: bool = True,
    bootstrap: int = 0,
    ci: float = 0.95,
    ci_method: str = "percentile",
    permutations: int = 0,
    keep_replicates: bool = False,
    n_threads: int | None = None,
    **capture_options: Any,
) -> xr.Dataset:
    """Compare two models (or two captured activations) layer by layer at the three levels.

    Args:
        a, b: anything :func:`hrsa.capture` takes, or activations it returned (a DataArray
            with dims ``(layer, sample|token, feature)``), which are reused as they are.
            Dask-backed activations (``capture(..., store=)``) are never loaded whole: CKA,
            dimension correlation and H_inv come from moments over every row, chunk by
            chunk, the other metrics from the ``max_tokens`` subsample
            (:func:`hrsa.streaming.score_chunked`).
        texts: the N texts both models read; required unless both are activations.
        labels: N class labels: adds the function level (a linear probe fitted on ``a``'s
            mean-pooled text vectors, frozen, read out on ``b``'s): ``probe_self`` and
            ``probe_direct``, accuracy by ``split`` (train, dev, test).
        metrics: names or :class:`hrsa.metrics.Metric` objects; None: the preset's set
            (default: dimension_correlation, procrustes_alignment, cka, knn_overlap with
            k = 5, 10, 50).
        pairs: "matched" (default; layers at the same relative depth, dim ``layer``) or
            "all" (dims ``layer_a`` x ``layer_b``, for heatmaps).
        pooling: None (token level, the method's unit: rows are token positions, the same
            in both models) or "mean" / "last" / "first" (rows are texts).
        max_tokens: token level: rows are subsampled to this many (default 50,000), with
            the same ``seed`` (so the same rows) in both models; None keeps all.
        seed: seed of the row subsample and of the probe's splits (default 0).
        instruction: query instruction, applied through the capture template.
        probe: options of the ``linear_probe_transfer`` metric (e.g.
            ``{"classifier": "ridge"}``), merged into the preset's.
        final_layer_only: names of metrics (and "probe") computed on the final layer
            pair only; their variables then have no layer dim. Default none.
        preset: "default" or "paper" (the HRSA paper's exact protocol, see
            docs/presets.md): fills every option not passed explicitly; an explicit
            argument always wins. The resolved options are recorded in the Dataset.
        progress: tqdm bars on capture and scoring.
        n_threads: cap torch's and every BLAS/OpenMP pool's threads for the duration of
            the call (:func:`hrsa.threads.limit_threads`); None leaves them as they are.
        bootstrap: B >= 2 text-level bootstrap replicates (0: none). Adds, per similarity
            variable and the probe's, ``{name}_ci_low``, ``{name}_ci_high`` and
            ``{name}_se``. Capture and each layer's preparation run once; metrics with
            ``score_resampled`` (cka, dimension_correlation, procrustes_alignment,
            knn_overlap, the probe) score all replicates from them, others are recomputed
            per replicate. The probe's texts are resampled within split and class. See
            docs/uncertainty.md.
        ci: coverage of the bootstrap interval, in (0, 1).
        ci_method: "percentile" (default) or "bca" (bias-corrected and accelerated; the
            acceleration from a grouped jackknife over the texts, see docs/uncertainty.md).
        permutations: P >= 1 text-level permutations of b against a (0: none). Adds
            ``{name}_p_value`` (``(1 + #null >= observed) / (1 + P)``) and
            ``{name}_null_mean``.
        keep_replicates: also keep ``{name}_boot`` (dim ``bootstrap`` first), which
            :func:`hrsa.difference` needs.
        **capture_options: passed to :func:`hrsa.capture` (``layers``, ``batch_size``,
            ``attention``, ``device``, ``dtype``, ``exclude_first_token``, ...). The
            metrics run on the same device: a CUDA ``device`` (the default when torch sees
            a GPU) scores every layer on the GPU in float32/float64, anything else on the
            CPU; the probe (scikit-learn) always runs on the CPU.

    Returns:
        ``xarray.Dataset``; see docs/design.md and docs/metrics.md for the variables.
    """
    uncertainty.validate(bootstrap, ci, permutations, keep_replicates, ci_method)
    opts = _resolve(preset, metrics=metrics, pairs=pairs, pooling=pooling,
                    max_tokens=max_tokens, seed=seed, probe=probe,
                    final_layer_only=final_layer_only, capture_options=capture_options)
    opts["uncertainty"] = dict(bootstrap=bootstrap, ci=ci, ci_method=ci_method,
                               permutations=permutations, keep_replicates=keep_replicates)
    if texts is not None:
        texts = validate_texts(texts)
    if labels is not None:  # fail before the (long) capture
        labels = _validate_labels(labels, texts, None)
    views = _views(opts["pooling"], labels)
    with limit_threads(n_threads):
        acts_a, acts_b = (
            _activations(model, texts, views, which, max_tokens=opts["max_tokens"],
                         seed=opts["seed"], instruction=instruction, progress=progress,
                         **opts["capture_options"])
            for which, model in (("a", a), ("b", b))
        )
        return _compare_activations(acts_a, acts_b, texts, labels=labels, opts=opts,
                                    instruction=instruction, progress=progress)


def _resolve(preset: str, *, metrics, capture_options: dict, **given) -> dict:
    """The preset's options overridden by what was given; metrics resolved to objects."""
    attention = capture_options.get("attention", UNSET)
    opts = presets.resolve(preset, metrics=UNSET if metrics is None else metrics,
                           attention=attention, **given)
    if opts["pairs"] not in PAIRS:
        raise ValueError(f"pairs must be one of {PAIRS}, got {opts['pairs']!r}")
    opts["metric_objs"] = resolve_metrics(opts["metrics"])
    opts["metric_device"] = metric_device(capture_options.get("device"))
    unknown = set(opts["final_layer_only"]) - {m.name for m in opts["metric_objs"]} - {"probe"}
    if unknown:
        raise ValueError(f"final_layer_only names {sorted(unknown)}, which are neither among "
                         "the metrics nor 'probe'")
    capture_options = dict(capture_options)
    opts["exclude_massive"] = capture_options.pop("exclude_massive", None)
    if opts["exclude_massive"] is not None:
        massive.check_ratio(opts["exclude_massive"])
        if opts["pooling"] is not None:
            raise ValueError("exclude_massive applies at token level only (pooling=None), "
                             f"not with pooling={opts['pooling']!r}")
    opts["capture_options"] = {**capture_options, "attention": opts["attention"]}
    opts["preset"] = preset
    return opts


def metric_device(device: str | torch.device | None) -> torch.device:
    """Where the metrics run for a capture on ``device``: that GPU for a CUDA device (None:
    the default GPU when torch sees one), else the CPU (float64 metrics need a device that
    has float64)."""
    device = default_device() if device is None else torch.device(device)
    return device if device.type == "cuda" else torch.device("cpu")


def _views(pooling: str | None, labels) -> tuple:
    """The capture views one comparison needs: its rows, plus mean-pooled text vectors
    for the probe when labels are given."""
    return (pooling, "mean") if labels is not None and pooling != "mean" else (pooling,)


def _compare_activations(acts_a: list, acts_b: list, texts, *, labels, opts: dict,
                         instruction, progress) -> xr.Dataset:
    """The scoring half of :func:`compare`, on activations captured for every view."""
    if labels is not None:
        labels = _validate_labels(labels, texts, acts_a[0])
    rows_a, rows_b = _align_rows(acts_a[0], acts_b[0], opts["max_tokens"], opts["seed"],
                                 opts.get("exclude_massive"))
    if acts_a[0].chunks is None and acts_b[0].chunks is None:
        ds = _score(opts["metric_objs"], rows_a, rows_b, opts["pairs"],
                    opts["final_layer_only"], progress, opts["metric_device"])
    else:  # dask-backed (hrsa.store): never all rows in memory at once
        ds = _score_chunked(acts_a[0], acts_b[0], rows_a, rows_b, opts, progress)
    unc = opts.get("uncertainty") or {}
    if unc.get("bootstrap") or unc.get("permutations"):
        grid = (opts["pairs"], opts["final_layer_only"])
        device = opts["metric_device"]

        def rescore(metric_objs: list, xa: xr.DataArray, xb: xr.DataArray) -> xr.Dataset:
            return _score(metric_objs, xa, xb, *grid, False, device)

        def replicates(metric_objs: list, resampling: TextResampling) -> list[xr.Dataset]:
            return score_replicates(metric_objs, rows_a, rows_b, *grid, progress, resampling,
                                    device)

        ds = uncertainty.add_to_comparison(
            ds, rows_a, rows_b, opts["metric_objs"], rescore, replicates,
            seed=opts["seed"], progress=progress, **unc)
    if labels is not None:
        probe_metric = metrics_mod.get("linear_probe_transfer", labels=list(labels),
                                       **{"seed": opts["seed"], **opts["probe"]})
        pairs = "final" if "probe" in opts["final_layer_only"] else opts["pairs"]
        device = opts["metric_device"]
        probe = _probe(probe_metric, acts_a[-1], acts_b[-1], pairs, progress, device=device)[0]
        if unc.get("bootstrap"):
            resampling = uncertainty.stratified_resampling(
                probe_metric.strata(), unc["bootstrap"], opts["seed"])
            jackknife = None
            if unc["ci_method"] == "bca":
                jackknife = _probe(probe_metric, acts_a[-1], acts_b[-1], pairs, False,
                                   uncertainty.jackknife_resampling(np.arange(len(labels)),
                                                                    opts["seed"]), device)
            probe = uncertainty.add_intervals(
                probe, _probe(probe_metric, acts_a[-1], acts_b[-1], pairs, False, resampling,
                              device),
                ci=unc["ci"], keep_replicates=unc["keep_replicates"], jackknife=jackknife)
        ds = ds.merge(probe, compat="override", join="exact")
    ds.attrs.update(_provenance(rows_a, rows_b, texts, instruction, opts))
    return ds


def _score_chunked(xa: xr.DataArray, xb: xr.DataArray, rows_a: xr.DataArray,
                   rows_b: xr.DataArray, opts: dict, progress: bool) -> xr.Dataset:
    """Scores of activations of which one at least is dask-backed: moment metrics over
    every row, chunk by chunk, the others on ``rows_a``/``rows_b`` (the ``max_tokens``
    subsample); see :func:`hrsa.streaming.score_chunked`."""
    from .streaming import score_chunked  # streaming builds on this module

    unc = opts.get("uncertainty") or {}
    if unc.get("bootstrap") or unc.get("permutations"):
        raise ValueError("bootstrap= and permutations= rescore all rows in memory; they are "
                         "not available for dask-backed activations (hrsa.store): compare "
                         "loaded arrays (acts.load()) or a subsample (acts.isel(token=...))")
    return score_chunked(opts["metric_objs"], xa, xb, rows_a, rows_b, opts["pairs"],
                         opts["final_layer_only"], progress, opts["metric_device"])


def resolve_metrics(metrics: Sequence) -> list[metrics_mod.Metric]:
    """Metric objects for ``metrics``: names, ``(name, params)`` pairs or objects."""
    if isinstance(metrics, (str, metrics_mod.Metric)):
        metrics = [metrics]
    resolved = [metrics_mod.get(m[0], **m[1]) if isinstance(m, (tuple, list)) else
                metrics_mod.get(m) for m in metrics]
    function_level = [m.name for m in resolved if m.level == "function"]
    if function_level:
        raise ValueError(f"metrics: {function_level} are function-level; pass labels= to "
                         "compare() for the probe instead")
    return resolved


def _validate_labels(labels, texts, acts: xr.DataArray | None) -> list:
    """``labels`` as a list, one per text, with at least two classes."""
    labels = list(labels)
    n = len(texts) if texts is not None else (
        acts.attrs.get("n_texts") if acts is not None else None)
    if n is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but there are {n} texts")
    if len(set(labels)) < 2:
        raise ValueError(f"labels must hold at least two classes, got {sorted(set(labels))}")
    return labels


def _activations(model, texts, views, which, *, max_tokens, seed, **options):
    """Activations of one model for each view; a DataArray given is reused. Under a
    process group the capture is split over the ranks (:mod:`hrsa.distributed`)."""
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
    return distributed.capture_views(model, texts, views,
                                     max_tokens=max_tokens if token_level else None,
                                     seed=seed, **options)


def _check_activation_dims(da: xr.DataArray, which: str) -> None:
    if da.ndim != 3 or da.dims[0] != "layer" or da.dims[1] not in ("sample", "token") \
            or da.dims[2] != "feature":
        raise ValueError(f"activations {which} must have dims (layer, sample|token, feature), "
                         f"got {da.dims}")


def _align_rows(xa: xr.DataArray, xb: xr.DataArray, max_tokens, seed,
                exclude_massive: float | None = None):
    """Check both have the same rows (the same token positions at token level); with
    ``exclude_massive``, drop the rows massive in either (:mod:`hrsa.massive`); subsample
    both with the same seed where there are more than ``max_tokens``."""
    for da, which in ((xa, "a"), (xb, "b")):
        _check_activation_dims(da, which)
    if xa.dims[1] != xb.dims[1]:
        raise ValueError(f"activations a are per {xa.dims[1]} and b per {xb.dims[1]}: "
                         "compare token-level with token-level, pooled with pooled")
    row_dim = xa.dims[1]
    if xa.sizes[row_dim] != xb.sizes[row_dim]:
        hint = (_special_token_hint(xa, xb) or " The two tokenizers split the texts "
                "differently; compare pooled text vectors instead with pooling='mean'."
                if row_dim == "token" else "")
        raise ValueError(f"a has {xa.sizes[row_dim]} {row_dim} rows and b has "
                         f"{xb.sizes[row_dim]}.{hint}")
    for coord in ("text", "position", "token_id"):
        if coord in xa.coords and coord in xb.coords and \
                not np.array_equal(xa[coord].values, xb[coord].values):
            raise ValueError(f"a and b disagree on the {coord!r} of their token rows: the two "
                             "tokenizers split the texts differently, so rows are not the same "
                             "positions. Compare pooled text vectors with pooling='mean'.")
    if exclude_massive is not None:
        drop = massive.massive_rows(xa, exclude_massive) | massive.massive_rows(
            xb, exclude_massive)
        xa, xb = (massive.exclude(da, exclude_massive, drop) for da in (xa, xb))
    n = xa.sizes[row_dim]
    if row_dim == "token" and max_tokens is not None and n > max_tokens:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_tokens, replace=False))
        xa, xb = xa.isel({row_dim: keep}), xb.isel({row_dim: keep})
    return xa, xb


def _special_token_hint(xa: xr.DataArray, xb: xr.DataArray) -> str:
    """A hint when one tokenizer puts exactly one more token into every text (a BOS or
    CLS token the other does not add), else ""."""
    if "text" not in xa.coords or "text" not in xb.coords:
        return ""
    n = int(max(xa.text.max(), xb.text.max())) + 1
    extra = np.bincount(xa.text.values, minlength=n) - np.bincount(xb.text.values, minlength=n)
    if abs(int(extra.sum())) != n or len(set(extra.tolist())) != 1:
        return ""
    which = "a" if extra[0] > 0 else "b"
    return (f" {which}'s tokenizer adds one special token (a BOS or CLS token) to every text "
            "that the other does not: capture both with add_special_tokens=False (the "
            "paper's protocol) or exclude_special_tokens=True.")


def layer_pairs(depth_a: np.ndarray, depth_b: np.ndarray, pairs: str) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` into the two layer lists.

    "matched": for each layer of the model with fewer layers, the layer of the other at the
    nearest relative depth (ties to the shallower); "all": every pair; "final": the last
    layer of each.
    """
    if pairs == "final":
        return [(len(depth_a) - 1, len(depth_b) - 1)]
    if pairs == "all":
        return [(i, j) for i in range(len(depth_a)) for j in range(len(depth_b))]
    if len(depth_a) <= len(depth_b):
        return [(i, int(np.argmin(np.abs(depth_b - d)))) for i, d in enumerate(depth_a)]
    return [(int(np.argmin(np.abs(depth_a - d))), j) for j, d in enumerate(depth_b)]


def _pair_coords(xa, xb, index_pairs, pairs):
    """Dims, coords and shape of one score grid."""
    if pairs == "final":
        return (), {}, ()
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


def _score(metric_objs, xa, xb, pairs, final_layer_only, progress,
           device: torch.device = torch.device("cpu")) -> xr.Dataset:
    """Every metric on every layer pair it needs (``pairs``, or the final pair for those in
    ``final_layer_only``), each layer prepared once per metric, on ``device``."""
    return _score_grids(metric_objs, xa, xb, pairs, final_layer_only, progress, None,
                        device)[0]


def score_replicates(metric_objs, xa, xb, pairs, final_layer_only, progress,
                     resampling: TextResampling,
                     device: torch.device = torch.device("cpu")) -> list[xr.Dataset]:
    """As :func:`_score`, for each of the ``B`` bootstrap replicates of ``resampling``
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
        index_pairs = layer_pairs(_depth(xa), _depth(xb), mode)
        grids[mode] = (index_pairs, *_pair_coords(xa, xb, index_pairs, mode))
    d_a, d_b = xa.sizes["feature"], xb.sizes["feature"]
    n_out = 1 if resampling is None else resampling.n_replicates
    variables: list[dict[str, xr.DataArray]] = [{} for _ in range(n_out)]
    modes = ["final" if m.name in final_layer_only else pairs for m in metric_objs]
    bar = tqdm(total=sum(len(grids[mode][0]) for mode in modes),
               desc="metrics" if resampling is None else "bootstrap",
               disable=not progress, unit="pair")
    for metric, mode in zip(metric_objs, modes):
        index_pairs, dims, coords, shape = grids[mode]
        if getattr(metric, "same_dim", False) and d_a != d_b:
            warnings.warn(f"{metric.name} needs the same feature dimension in both models "
                          f"(a has {d_a}, b has {d_b}); it is left out", stacklevel=4)
            bar.update(len(index_pairs))
            continue
        if resampling is not None:
            per_pair = _score_metric(metric, xa, xb, index_pairs, bar, lambda px, py, m=metric:
                                     m.score_resampled(px, py, resampling), device)
            results = [[res[r] for res in per_pair] for r in range(n_out)]
        elif mode == "all" and _has_batched_scores(metric):
            grid = metric.score_all(
                [metrics_mod.prepare(metric, _layer(xa, i, device),
                                     f"a layer {int(xa.layer[i])}")
                 for i in range(xa.sizes["layer"])],
                [metrics_mod.prepare(metric, _layer(xb, j, device),
                                     f"b layer {int(xb.layer[j])}")
                 for j in range(xb.sizes["layer"])])
            results = [[float(grid[i, j]) for i, j in index_pairs]]
            bar.update(len(index_pairs))
        else:
            results = [_score_metric(metric, xa, xb, index_pairs, bar, metric.score, device)]
        chance = _chance(metric, n=xa.sizes[xa.dims[1]], d=d_a)
        for out, res in zip(variables, results):
            new = _to_variables(metric, res, list(np.ndindex(*shape)), dims, coords, shape,
                                chance=chance)
            if mode == "final":
                for var in new.values():
                    var.attrs["layers"] = _final_label(xa, xb)
            out.update(new)
    bar.close()
    return [xr.Dataset(v, coords=grids[pairs][2]) for v in variables]


def _has_batched_scores(metric) -> bool:
    """Whether ``metric`` overrides ``score_all`` with a batched all-pairs path (one
    stacked product instead of a loop over pairs); only for scalar scores."""
    return not metric.dims and type(metric).score_all is not metrics_mod.Metric.score_all


def _final_label(xa: xr.DataArray, xb: xr.DataArray) -> str:
    return f"final layer only (a: {int(xa.layer[-1])}, b: {int(xb.layer[-1])})"


def _chance(metric, n: int, d: int) -> float | list[float] | None:
    """The metric's chance floor for these sizes (one per k for an extra dim), or None."""
    try:
        if "k" in metric.dims:
            return [float(metric.chance(d=d, n=n, k=k)) for k in metric.dims["k"]]
        value = metric.chance(d=d, n=n)
    except (ValueError, TypeError):
        return None
    return None if value is None else float(value)


def _score_metric(metric, xa, xb, flat, bar, score: Callable,
                  device: torch.device = torch.device("cpu")) -> list:
    """``score(prep_a, prep_b)`` of one metric for the layer-index pairs ``flat``, preparing
    each layer once on ``device`` and dropping each preparation as soon as its last pair is
    scored."""
    prepared_b: dict[int, Any] = {}
    uses_b = collections.Counter(j for _, j in flat)
    results: list = [None] * len(flat)
    by_a: dict[int, list[int]] = {}
    for p, (i, _) in enumerate(flat):
        by_a.setdefault(i, []).append(p)
    for i, positions in by_a.items():
        prep_a = metrics_mod.prepare(metric, _layer(xa, i, device),
                                     f"a layer {int(xa.layer[i])}")
        for p in positions:
            j = flat[p][1]
            if j not in prepared_b:
                prepared_b[j] = metrics_mod.prepare(metric, _layer(xb, j, device),
                                                    f"b layer {int(xb.layer[j])}")
            results[p] = score(prep_a, prepared_b[j])
            uses_b[j] -= 1
            if not uses_b[j]:
                del prepared_b[j]
            bar.update(1)
    return results


def _layer(da: xr.DataArray, i: int, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Layer ``i`` of ``da`` as a ``(rows, feature)`` tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(da.isel(layer=i).values)).to(device)


def _to_variables(metric, results, positions, dims, coords, shape,
                  chance=None) -> dict[str, xr.DataArray]:
    """One DataArray per output of ``metric``: the similarity under the metric's name (with
    its extra dim when it has one), diagnostics as ``{name}_{key}``. ``chance``, the
    floor, goes into the similarity's attrs."""
    attrs = metric_attrs(metric)
    if chance is not None:
        attrs["chance"] = chance
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


def _probe(metric, pooled_a: xr.DataArray, pooled_b: xr.DataArray, pairs, progress,
           resampling: TextResampling | None = None,
           device: torch.device = torch.device("cpu")) -> list[xr.Dataset]:
    """probe_self / probe_direct (accuracy by split) from mean-pooled text vectors, fitted
    on ``device`` (the torch solver; scikit-learn's on the CPU): one Dataset, or with
    ``resampling`` (rows: the texts) one per bootstrap replicate."""
    pooled_a, pooled_b = _align_rows(pooled_a, pooled_b, None, 0)
    index_pairs = layer_pairs(_depth(pooled_a), _depth(pooled_b), pairs)
    dims, coords, shape = _pair_coords(pooled_a, pooled_b, index_pairs, pairs)
    positions = list(np.ndindex(*shape))
    score = metric.score if resampling is None else (
        lambda px, py: metric.score_resampled(px, py, resampling))
    with tqdm(total=len(index_pairs), desc="probe", disable=not progress, unit="pair") as bar:
        per_pair = _score_metric(metric, pooled_a, pooled_b, index_pairs, bar, score, device)
    if resampling is None:
        per_pair = [[res] for res in per_pair]
    base = metric_attrs(metric)
    datasets = []
    for r in range(len(per_pair[0])):
        out = {}
        for readout, what in (("self", "fitted and read out on a"),
                              ("direct", "fitted on a, frozen, read out on b")):
            grid = np.full(shape + (len(SPLITS),), np.nan)
            for pos, res in zip(positions, per_pair):
                grid[pos] = [res[r][f"{readout}_{split}"] for split in SPLITS]
            out[f"probe_{readout}"] = xr.DataArray(
                grid, dims=dims + ("split",), coords={"split": list(SPLITS)},
                attrs={**base, "long_name": f"probe accuracy ({readout}: {what})",
                       "range": [0.0, 1.0]})
            if pairs == "final":
                out[f"probe_{readout}"].attrs["layers"] = _final_label(pooled_a, pooled_b)
        datasets.append(xr.Dataset(out, coords=coords))
    return datasets


def _provenance(xa, xb, texts, instruction, opts: dict) -> dict:
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
        "preset": opts["preset"],
        "pairs": opts["pairs"],
        "pooling": opts["pooling"] or "none",
        "max_tokens": int(opts["max_tokens"] or 0),
        "seed": int(opts["seed"]),
        "instruction": instruction or "",
        "final_layer_only": json.dumps(list(opts["final_layer_only"])),
        "metrics": json.dumps([{"name": m.name, **m.params()} for m in opts["metric_objs"]],
                              default=str),
        "probe": json.dumps(opts["probe"], sort_keys=True, default=str),
        "capture_options": json.dumps(opts["capture_options"], sort_keys=True, default=str),
        "exclude_massive": float(opts.get("exclude_massive") or 0),
        **{f"{key}_{which}": value for which, da in (("a", xa), ("b", xb))
           for key, value in massive.describe(da).items()},
        "metric_device": str(opts["metric_device"]),
        "hrsa_version": __version__,
    }


def trajectory(
    checkpoints_a: Any,
    checkpoints_b: Sequence[Any],
    texts: Sequence[str] | None = None,
    *,
    steps: Sequence[int] | None = None,
    labels: Sequence | None = None,
    metrics: Sequence[str | metrics_mod.Metric] | None = UNSET,
    pairs: str = UNSET,
    pooling: str | None = UNSET,
    max_tokens: int | None = UNSET,
    seed: int = UNSET,
    instruction: str | None = None,
    probe: dict | None = UNSET,
    final_layer_only: Sequence[str] = UNSET,
    preset: str = "default",
    progress: bool = True,
    bootstrap: int = 0,
    ci: float = 0.95,
    ci_method: str = "percentile",
    permutations: int = 0,
    keep_replicates: bool = False,
    n_threads: int | None = None,
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
        other arguments: as :func:`compare` (``bootstrap``, ``ci``, ``ci_method``,
            ``permutations``,
            ``keep_replicates``: per checkpoint, the same text resamples at every one).

    Returns:
        The comparisons concatenated along a new dim ``checkpoint`` with coords ``step``,
        ``model_a`` and ``model_b``: dims ``(checkpoint, layer)`` (or ``(checkpoint,
        layer_a, layer_b)``). Each distinct checkpoint is captured once, however many
        pairs it enters (a fixed reference once in all).
    """
    opts = _resolve(preset, metrics=metrics, pairs=pairs, pooling=pooling,
                    max_tokens=max_tokens, seed=seed, probe=probe,
                    final_layer_only=final_layer_only, capture_options=capture_options)
    uncertainty.validate(bootstrap, ci, permutations, keep_replicates, ci_method)
    opts["uncertainty"] = dict(bootstrap=bootstrap, ci=ci, ci_method=ci_method,
                               permutations=permutations, keep_replicates=keep_replicates)
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
    if labels is not None:
        labels = _validate_labels(labels, texts, None)
    views = _views(opts["pooling"], labels)
    cache: dict[str, list[xr.DataArray]] = {}

    def captured(spec: Any) -> list[xr.DataArray]:
        key = _checkpoint_key(spec)
        if key not in cache:
            model, revision = ((spec["model"], spec.get("revision"))
                               if isinstance(spec, dict) else (spec, None))
            options = {**opts["capture_options"],
                       **({"revision": revision} if revision else {})}
            cache[key] = _activations(model, texts, views, key,
                                      max_tokens=opts["max_tokens"], seed=opts["seed"],
                                      instruction=instruction, progress=progress, **options)
        return cache[key]

    with limit_threads(n_threads):
        results = [
            _compare_activations(
                captured(spec_a), captured(spec_b), texts, labels=labels, opts=opts,
                instruction=instruction, progress=False)
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
