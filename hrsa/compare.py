"""compare() and trajectory(): the user's entry points, from models (or captured
activations) to a labeled ``xarray.Dataset``.

A comparison holds one data variable per metric output, dims ``(layer,)`` for layers
matched by relative depth or ``(layer_a, layer_b)`` for every pair (docs/design.md, "Data
model"). This module resolves the options (:class:`hrsa.options.Options`), captures each
model once per view (split over the ranks of a process group, :mod:`hrsa.distributed`),
and hands the activations to the scoring engine (:mod:`hrsa.engine`), which prepares each
layer once per metric, whatever the number of pairs it enters.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr
from tqdm.auto import tqdm

from . import distributed, uncertainty
from . import metrics as metrics_mod
from .capture import validate_texts
from .engine.assemble import provenance
from .engine.chunked import score_chunked
from .engine.pairs import align_rows, layer_pairs
from .engine.scoring import score, score_probe, score_replicates
from .metrics.function import SPLITS
from .options import PAIRS, Options, metric_device, resolve_metrics
from .presets import UNSET
from .schema import check_activations, metric_attrs, text_hash
from .threads import limit_threads

# names this module had before the engine moved out, kept for existing imports
__all__ = ["compare", "trajectory", "Options", "PAIRS", "SPLITS", "layer_pairs",
           "metric_attrs", "metric_device", "resolve_metrics", "score_replicates"]


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
    opts = _resolve(locals())
    texts, labels = _check_inputs(texts, labels)
    views = _views(opts.pooling, labels)
    with limit_threads(n_threads):
        acts_a, acts_b = (_activations(model, texts, views, which, opts, progress)
                          for which, model in (("a", a), ("b", b)))
        return _compare_activations(acts_a, acts_b, texts, labels, opts, progress)


def _resolve(arguments: Mapping[str, Any]) -> Options:
    """The :class:`Options` of :func:`compare`'s ``arguments`` (its keywords by name)."""
    return Options.resolve(
        arguments["preset"], metrics=arguments["metrics"], pairs=arguments["pairs"],
        pooling=arguments["pooling"], max_tokens=arguments["max_tokens"],
        seed=arguments["seed"], probe=arguments["probe"],
        final_layer_only=arguments["final_layer_only"], instruction=arguments["instruction"],
        bootstrap=arguments["bootstrap"], ci=arguments["ci"], ci_method=arguments["ci_method"],
        permutations=arguments["permutations"], keep_replicates=arguments["keep_replicates"],
        capture_options=arguments["capture_options"])


def _check_inputs(texts, labels) -> tuple[list[str] | None, list | None]:
    """The texts and labels checked before the (long) capture."""
    if texts is not None:
        texts = validate_texts(texts)
    if labels is not None:
        labels = _validate_labels(labels, texts, None)
    return texts, labels


def _views(pooling: str | None, labels) -> tuple:
    """The capture views one comparison needs: its rows, plus mean-pooled text vectors
    for the probe when labels are given."""
    return (pooling, "mean") if labels is not None and pooling != "mean" else (pooling,)


def _compare_activations(acts_a: list, acts_b: list, texts, labels, opts: Options,
                         progress: bool) -> xr.Dataset:
    """The scoring half of :func:`compare`, on activations captured for every view."""
    if labels is not None:
        labels = _validate_labels(labels, texts, acts_a[0])
    rows_a, rows_b = align_rows(acts_a[0], acts_b[0], opts.max_tokens, opts.seed,
                                opts.exclude_massive)
    metric_objs = list(opts.metrics)
    if acts_a[0].chunks is None and acts_b[0].chunks is None:
        ds = score(metric_objs, rows_a, rows_b, opts.pairs, opts.final_layer_only, progress,
                   opts.metric_device)
    else:  # dask-backed (hrsa.store): never all rows in memory at once
        if opts.resampled:
            raise ValueError("bootstrap= and permutations= rescore all rows in memory; they "
                             "are not available for dask-backed activations (hrsa.store): "
                             "compare loaded arrays (acts.load()) or a subsample "
                             "(acts.isel(token=...))")
        ds = score_chunked(metric_objs, acts_a[0], acts_b[0], rows_a, rows_b, opts.pairs,
                           opts.final_layer_only, progress, opts.metric_device)
    if opts.resampled:
        ds = uncertainty.add_to_comparison(
            ds, rows_a, rows_b, metric_objs, pairs=opts.pairs,
            final_layer_only=opts.final_layer_only, bootstrap=opts.bootstrap, ci=opts.ci,
            permutations=opts.permutations, keep_replicates=opts.keep_replicates,
            seed=opts.seed, progress=progress, ci_method=opts.ci_method,
            device=opts.metric_device)
    if labels is not None:
        ds = ds.merge(_probe(acts_a[-1], acts_b[-1], labels, opts, progress),
                      compat="override", join="exact")
    ds.attrs.update(provenance(rows_a, rows_b, texts, opts))
    return ds


def _probe(pooled_a: xr.DataArray, pooled_b: xr.DataArray, labels: list, opts: Options,
           progress: bool) -> xr.Dataset:
    """The function level: ``probe_self`` / ``probe_direct`` from mean-pooled text vectors
    (:func:`hrsa.engine.scoring.score_probe`), with bootstrap intervals
    (:func:`hrsa.uncertainty.add_probe_intervals`) when ``opts.bootstrap``."""
    metric = metrics_mod.get("linear_probe_transfer", labels=list(labels),
                             **{"seed": opts.seed, **opts.probe})
    pairs = "final" if "probe" in opts.final_layer_only else opts.pairs
    device = opts.metric_device
    probe = score_probe(metric, pooled_a, pooled_b, pairs, progress, device=device)[0]
    if opts.bootstrap:
        probe = uncertainty.add_probe_intervals(
            probe, metric, pooled_a, pooled_b, pairs, bootstrap=opts.bootstrap, ci=opts.ci,
            ci_method=opts.ci_method, keep_replicates=opts.keep_replicates, seed=opts.seed,
            device=device)
    return probe


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


def _activations(model, texts, views, which: str, opts: Options, progress: bool,
                 **overrides: Any) -> list[xr.DataArray]:
    """Activations of one model for each view; a DataArray given is reused. Under a
    process group the capture is split over the ranks (:mod:`hrsa.distributed`).
    ``overrides``: capture options for this model only (a checkpoint's revision)."""
    if isinstance(model, xr.DataArray):
        check_activations(model, which)
        captured_on = model.attrs.get("text_hash")
        if texts is not None and captured_on and captured_on != text_hash(texts):
            raise ValueError(f"activations {which} were captured on other texts (text_hash "
                             f"{captured_on}) than the texts given (text_hash "
                             f"{text_hash(texts)})")
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
                                     max_tokens=opts.max_tokens if token_level else None,
                                     seed=opts.seed, instruction=opts.instruction,
                                     progress=progress,
                                     **{**opts.capture_options, **overrides})


def trajectory(checkpoints_a: Any, checkpoints_b: Sequence[Any],
               texts: Sequence[str] | None = None, *, steps: Sequence[int] | None = None,
               **options: Any) -> xr.Dataset:
    """The same comparison for each pair of checkpoints along training.

    Args:
        checkpoints_a: one model (the fixed reference, e.g. the base backbone) or a list
            as long as ``checkpoints_b`` (paired by position, e.g. two runs saved at the
            same steps).
        checkpoints_b: the checkpoints along training: paths or hub ids, ``{"model": id,
            "revision": rev}`` dicts, loaded models, or captured activations.
        texts: the texts every checkpoint reads.
        steps: the training step of each checkpoint (coord ``step``); default 0, 1, ...
        **options: every keyword of :func:`compare` (``labels``, ``metrics``, ``pairs``,
            ``preset``, ``progress``, ``n_threads``, ``bootstrap``, ``ci``, ``ci_method``,
            ``permutations``, ``keep_replicates``: per checkpoint, the same text resamples
            at every one; capture options).

    Returns:
        The comparisons concatenated along a new dim ``checkpoint`` with coords ``step``,
        ``model_a`` and ``model_b``: dims ``(checkpoint, layer)`` (or ``(checkpoint,
        layer_a, layer_b)``). Each distinct checkpoint is captured once, however many
        pairs it enters (a fixed reference once in all).
    """
    arguments = _COMPARE.bind(None, None, texts, **options)
    arguments.apply_defaults()
    args = arguments.arguments
    opts = _resolve(args)
    progress = args["progress"]
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
    texts, labels = _check_inputs(texts, args["labels"])
    views = _views(opts.pooling, labels)
    cache: dict[str, list[xr.DataArray]] = {}

    def captured(spec: Any) -> list[xr.DataArray]:
        key = _checkpoint_key(spec)
        if key not in cache:
            model, revision = ((spec["model"], spec.get("revision"))
                               if isinstance(spec, dict) else (spec, None))
            cache[key] = _activations(model, texts, views, key, opts, progress,
                                      **({"revision": revision} if revision else {}))
        return cache[key]

    with limit_threads(args["n_threads"]):
        results = [
            _compare_activations(captured(spec_a), captured(spec_b), texts, labels, opts,
                                 progress=False)
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


_COMPARE = inspect.signature(compare)


def _checkpoint_key(spec: Any) -> str:
    """An identity for caching captures: the path/id (and revision), else the object."""
    if isinstance(spec, dict):
        return f"{spec['model']}@{spec.get('revision') or ''}"
    if isinstance(spec, str) or hasattr(spec, "__fspath__"):
        return str(spec)
    return f"{type(spec).__name__} at {id(spec):#x}"
