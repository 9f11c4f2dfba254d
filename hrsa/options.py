"""The options of one comparison, resolved once into a frozen :class:`Options`.

:func:`hrsa.compare` and :func:`hrsa.trajectory` take the same keywords; a preset fills
every one the caller left ``UNSET`` (:mod:`hrsa.presets`), metric names become configured
:class:`~hrsa.metrics.Metric` objects, and the result is recorded in the Dataset's
provenance (:func:`hrsa.engine.assemble.provenance`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import massive
from . import metrics as metrics_mod
from . import presets
from .models import default_device

__all__ = ["Options", "PAIRS", "CI_METHODS", "resolve_metrics", "metric_device",
           "validate_uncertainty"]

PAIRS = ("matched", "all")  # the layer pairings a user chooses; "final" is set per metric
CI_METHODS = ("percentile", "bca")


@dataclass(frozen=True)
class Options:
    """Every choice of one comparison, after the preset and validation.

    Attributes:
        preset: the preset's name. metrics: the configured metric objects. pairs:
        "matched" or "all". pooling: None (token level) or a pooling. max_tokens: the token
        row subsample (None: all rows). seed: of that subsample and the probe's splits.
        final_layer_only: metric names (and "probe") scored on the final pair only. probe:
        the probe metric's options. capture_options: for :func:`hrsa.capture` (attention
        included). exclude_massive: token level: drop the rows massive at this ratio in
        either model (:mod:`hrsa.massive`), None keeps them. metric_device: where the
        metrics run. instruction: the query
        instruction. bootstrap, ci, ci_method, permutations, keep_replicates: the
        uncertainty options (:mod:`hrsa.uncertainty`).
    """

    preset: str
    metrics: tuple[metrics_mod.Metric, ...]
    pairs: str
    pooling: str | None
    max_tokens: int | None
    seed: int
    final_layer_only: tuple[str, ...]
    probe: dict = field(default_factory=dict)
    capture_options: dict = field(default_factory=dict)
    exclude_massive: float | None = None
    metric_device: torch.device = torch.device("cpu")
    instruction: str | None = None
    bootstrap: int = 0
    ci: float = 0.95
    ci_method: str = "percentile"
    permutations: int = 0
    keep_replicates: bool = False

    @classmethod
    def resolve(cls, preset: str = "default", *, metrics: Any = presets.UNSET,
                pairs: Any = presets.UNSET, pooling: Any = presets.UNSET,
                max_tokens: Any = presets.UNSET, seed: Any = presets.UNSET,
                probe: Any = presets.UNSET, final_layer_only: Any = presets.UNSET,
                instruction: str | None = None, bootstrap: int = 0, ci: float = 0.95,
                ci_method: str = "percentile", permutations: int = 0,
                keep_replicates: bool = False,
                capture_options: dict | None = None) -> Options:
        """The preset's options overridden by what was given (``UNSET``: the preset's;
        ``metrics=None`` too), checked: ValueError naming the argument otherwise."""
        validate_uncertainty(bootstrap, ci, permutations, keep_replicates, ci_method)
        capture_options = dict(capture_options or {})
        opts = presets.resolve(preset, metrics=presets.UNSET if metrics is None else metrics,
                               pairs=pairs, pooling=pooling, max_tokens=max_tokens, seed=seed,
                               probe=probe, final_layer_only=final_layer_only,
                               attention=capture_options.get("attention", presets.UNSET))
        if opts["pairs"] not in PAIRS:
            raise ValueError(f"pairs must be one of {PAIRS}, got {opts['pairs']!r}")
        exclude_massive = capture_options.pop("exclude_massive", None)
        if exclude_massive is not None:  # both models' rows at once, after the capture
            exclude_massive = massive.check_ratio(exclude_massive)
            if opts["pooling"] is not None:
                raise ValueError("exclude_massive applies at token level only (pooling=None), "
                                 f"not with pooling={opts['pooling']!r}")
        metric_objs = tuple(resolve_metrics(opts["metrics"]))
        unknown = set(opts["final_layer_only"]) - {m.name for m in metric_objs} - {"probe"}
        if unknown:
            raise ValueError(f"final_layer_only names {sorted(unknown)}, which are neither "
                             "among the metrics nor 'probe'")
        return cls(preset=preset, metrics=metric_objs, pairs=opts["pairs"],
                   pooling=opts["pooling"], max_tokens=opts["max_tokens"], seed=opts["seed"],
                   final_layer_only=tuple(opts["final_layer_only"]), probe=opts["probe"],
                   capture_options={**capture_options, "attention": opts["attention"]},
                   exclude_massive=exclude_massive,
                   metric_device=metric_device(capture_options.get("device")),
                   instruction=instruction, bootstrap=bootstrap, ci=ci, ci_method=ci_method,
                   permutations=permutations, keep_replicates=keep_replicates)

    @property
    def resampled(self) -> bool:
        """Whether the comparison adds bootstrap intervals or permutation p-values."""
        return bool(self.bootstrap or self.permutations)


def resolve_metrics(metrics: Sequence) -> list[metrics_mod.Metric]:
    """Metric objects for ``metrics``: names, ``(name, params)`` pairs or objects. Any
    registered metric that compares two representations pairwise may be given, at any
    level (``linear_predictivity`` too); the probe, bound to labels, comes through
    ``labels=``."""
    if isinstance(metrics, (str, metrics_mod.Metric)):
        metrics = [metrics]
    resolved = [metrics_mod.get(m[0], **m[1]) if isinstance(m, (tuple, list)) else
                metrics_mod.get(m) for m in metrics]
    bound = [m.name for m in resolved if getattr(m, "needs_labels", False)]
    if bound:
        raise ValueError(f"metrics: {bound} need the texts' labels; pass labels= to "
                         "compare() for the probe instead")
    return resolved


def validate_uncertainty(bootstrap: int, ci: float, permutations: int,
             keep_replicates: bool = False, ci_method: str = "percentile") -> None:
    """ValueError naming the argument for a bad ``bootstrap`` (0 = off, else >= 2), ``ci``
    (in (0, 1)), ``permutations`` (0 = off, else >= 1) or ``ci_method``."""
    for name, value, low in (("bootstrap", bootstrap, 2), ("permutations", permutations, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int (0 = off), got {value!r}")
        if value != 0 and value < low:
            raise ValueError(f"{name} must be 0 (off) or at least {low}, got {value}")
    if isinstance(ci, bool) or not isinstance(ci, (int, float, np.floating)) \
            or not 0.0 < float(ci) < 1.0:
        raise ValueError(f"ci must be a coverage level strictly between 0 and 1 (e.g. 0.95), "
                         f"got {ci!r}")
    if keep_replicates and not bootstrap:
        raise ValueError("keep_replicates=True needs bootstrap >= 2")
    if ci_method not in CI_METHODS:
        raise ValueError(f"ci_method must be one of {CI_METHODS}, got {ci_method!r}")


def metric_device(device: str | torch.device | None) -> torch.device:
    """Where the metrics run for a capture on ``device``: that GPU for a CUDA device (None:
    the default GPU when torch sees one), else the CPU (float64 metrics need a device that
    has float64)."""
    device = default_device() if device is None else torch.device(device)
    return device if device.type == "cuda" else torch.device("cpu")
