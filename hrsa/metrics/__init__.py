"""The metric protocol and registry.

A metric compares two representations of the same ``n`` inputs, ``X: (n, d1)`` and
``Y: (n, d2)`` (torch tensors on any device, or numpy arrays), in two steps:

* ``prepare(X)`` does the per-representation work once (centring, Gram matrices, neighbour
  sets, a fitted probe) and returns an opaque prepared object;
* ``score(prep_x, prep_y)`` does the cheap per-pair work and returns a Python float, or a dict
  of floats whose main value is under ``"similarity"`` (other keys are diagnostics; a metric with
  an extra output dimension, see ``Metric.dims``, uses keys ``f"{dim}={value}"``);
* ``score_resampled(prep_x, prep_y, resampling)`` (optional) scores every text-level
  bootstrap replicate at once from the full data's preparations (:mod:`hrsa.resampling`);
* ``score_all(preps_x, preps_y)`` (optional) scores every pair of two lists of prepared
  representations at once and returns a float64 array ``(len(preps_x), len(preps_y))``. The base
  class loops over ``score`` (float-valued metrics only); ``cka``, ``cka_debiased`` and
  ``dimension_correlation`` override it with one stacked product for all pairs.

``compare()`` prepares each layer once and scores every pair it needs. The level of a metric
(representation / geometry / function) is defined by its invariances, declared in
``Metric.invariances`` and checked by the tests.

Public API: ``Metric``, ``register``, ``get``, ``available``, ``chance``, ``prepare``,
``supports_resampling``.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ._util import as_matrix, check_pair

if TYPE_CHECKING:
    from ..resampling import TextResampling

__all__ = ["Metric", "register", "get", "available", "chance", "prepare", "supports_resampling",
           "LEVELS", "INVARIANCES"]

LEVELS = ("representation", "geometry", "function")
INVARIANCES = frozenset(
    {"orthogonal", "isotropic_scaling", "translation", "permutation", "invertible_linear"}
)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class Metric:
    """Base class of all metrics; subclasses set the class attributes and override the methods.

    Attributes:
        name: registry name, e.g. ``"cka"`` (also the netCDF variable name).
        long_name: human label for plots, e.g. ``"linear CKA"``.
        level: ``"representation"``, ``"geometry"`` or ``"function"``.
        invariances: subset of ``INVARIANCES`` under which ``score`` is unchanged when either
            argument is transformed (``"permutation"`` permutes features, i.e. columns).
        range: ``(low, high)`` of the similarity.
        dims: extra output dimension, e.g. ``{"k": (5, 10, 50)}``; ``{}`` for a scalar.
        same_dim: True when ``X`` and ``Y`` must have the same width (``d1 == d2``);
            ``compare`` then leaves the metric out, with a warning, for models of
            different hidden sizes.
    """

    name: ClassVar[str] = ""
    long_name: ClassVar[str] = ""
    level: ClassVar[str] = ""
    invariances: frozenset[str] = frozenset()
    range: tuple[float, float] = (-math.inf, math.inf)
    dims: dict[str, tuple] = {}
    same_dim: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        """Constructor parameters as netCDF-safe values (str, int, float, list of those)."""
        return {}

    def prepare(self, X: Any, name: str = "X") -> Any:
        """Per-representation work on ``X: (n, d)``, done once; ``name`` labels error messages."""
        return as_matrix(X, name)

    def score(self, prep_x: Any, prep_y: Any) -> float | dict[str, float]:
        """Similarity of two prepared representations."""
        raise NotImplementedError

    def score_all(self, preps_x: Sequence[Any], preps_y: Sequence[Any]) -> np.ndarray:
        """Scores of every pair: ``out[i, j] == score(preps_x[i], preps_y[j])``.

        ``preps_x``, ``preps_y``: sequences of prepared representations (from ``prepare``), all
        on the same ``n`` rows. Returns a float64 numpy array ``(len(preps_x), len(preps_y))``;
        empty sequences give an empty array of that shape. The same errors as ``score`` are
        raised (the first failing pair in row-major order for this default).

        This default loops over ``score``; it needs a float-valued metric and raises
        ``TypeError`` if ``score`` returns a dict (e.g. ``knn_overlap`` with a tuple ``k``): score
        those pair by pair. Subclasses override it where one batched computation is cheaper
        (``cka``, ``cka_debiased``, ``dimension_correlation``); an override agrees with the loop
        to rounding (about 1e-12 relative in float64). Any subset of rows or columns of the grid
        may be asked for separately (e.g. ``score_all(preps_x[i:i + 1], preps_y)``) to bound the
        memory of holding every prepared layer at once.
        """
        out = np.empty((len(preps_x), len(preps_y)), dtype=np.float64)
        for i, px in enumerate(preps_x):
            for j, py in enumerate(preps_y):
                s = self.score(px, py)
                if isinstance(s, dict):
                    raise TypeError(f"{self.name or type(self).__name__}.score returns a dict "
                                    f"(keys {sorted(s)}); score_all supports float-valued "
                                    "metrics only: call score pair by pair")
                out[i, j] = s
        return out

    def score_resampled(self, prep_x: Any, prep_y: Any,
                        resampling: TextResampling) -> list[float | dict[str, float]]:
        """Scores of every text-level bootstrap replicate, from the full data's preparations.

        ``resampling``: a :class:`hrsa.resampling.TextResampling` on the same ``n`` rows
        (``B`` replicates). Returns ``B`` results in ``score``'s format, replicate ``b``
        equal (to rounding) to ``score`` on the replicate's concatenated rows, or, for a
        metric that documents it, an estimate of that. Optional: ``compare`` recomputes
        ``prepare`` + ``score`` on each replicate's rows for a metric that does not
        override it. ``cka``, ``dimension_correlation`` and ``procrustes_alignment``
        override it exactly (weighted moments); ``knn_overlap`` with the full sample's
        neighbour sets.
        """
        raise NotImplementedError

    def chance(self, d: int | None = None, n: int | None = None, k: int | None = None) -> float | None:
        """Expected score of unrelated representations where known in closed form, else None."""
        return None

    def __call__(self, X: Any, Y: Any) -> float | dict[str, float]:
        """``score(prepare(X), prepare(Y))``."""
        return self.score(self.prepare(X, "X"), self.prepare(Y, "Y"))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class _FunctionMetric(Metric):
    """A plain ``f(X, Y) -> float`` as a metric: ``prepare`` validates, ``score`` calls ``f``."""

    def __init__(self, fn: Callable[[Any, Any], float], name: str, level: str,
                 invariances: frozenset[str], range: tuple[float, float], long_name: str) -> None:
        self.fn = fn
        self.name = name  # type: ignore[misc]
        self.level = level  # type: ignore[misc]
        self.invariances = invariances
        self.range = range
        self.long_name = long_name  # type: ignore[misc]

    def prepare(self, X: Any, name: str = "X") -> Any:
        as_matrix(X, name)
        return X

    def score(self, prep_x: Any, prep_y: Any) -> float:
        check_pair(prep_x, prep_y)
        return float(self.fn(prep_x, prep_y))


_REGISTRY: dict[str, type[Metric] | Metric] = {}


def _check_declaration(name: str, level: str, invariances: frozenset[str]) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be an identifier-like string (letters, digits, _), got {name!r}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r} (metric {name!r})")
    unknown = set(invariances) - INVARIANCES
    if unknown:
        raise ValueError(f"invariances {sorted(unknown)} unknown (metric {name!r}); "
                         f"choose from {sorted(INVARIANCES)}")


def register(
    metric: type[Metric] | Metric | Callable[[Any, Any], float],
    name: str | None = None,
    level: str | None = None,
    invariances: tuple[str, ...] | frozenset[str] = (),
    range: tuple[float, float] = (-math.inf, math.inf),
    long_name: str | None = None,
    *,
    overwrite: bool = False,
) -> type[Metric] | Metric:
    """Register a metric under ``name`` and return what was stored.

    ``metric`` is a ``Metric`` subclass (``get`` instantiates it with the given parameters), a
    configured ``Metric`` instance (``get`` returns it), or a plain function ``f(X, Y) -> float``
    (wrapped: prepare validates and passes the input through, score calls ``f``; ``level`` is then
    required and ``invariances``, ``range``, ``long_name`` describe it). For a ``Metric``, ``name``
    may rename it; ``level``, ``invariances``, ``range`` and ``long_name`` come from the metric
    itself and passing them raises ``TypeError``. Re-registering a name raises ``ValueError``
    unless ``overwrite=True``.
    """
    is_class = isinstance(metric, type) and issubclass(metric, Metric)
    if is_class or isinstance(metric, Metric):
        if level is not None or long_name is not None or tuple(invariances) or range != (-math.inf, math.inf):
            raise TypeError("level, invariances, range and long_name are declared by a Metric "
                            "itself; pass them only when registering a plain function")
        name = name or metric.name
        if is_class and name != metric.name:
            metric = type(metric.__name__, (metric,), {"name": name})
        elif not is_class and name != metric.name:
            raise ValueError(f"name {name!r} differs from the instance's name {metric.name!r}")
        entry: type[Metric] | Metric = metric
        _check_declaration(name, metric.level, frozenset(metric.invariances))
    elif callable(metric):
        name = name or getattr(metric, "__name__", "")
        if level is None:
            raise ValueError(f"level is required when registering the function {name!r}: "
                             f"one of {LEVELS}")
        inv = frozenset(invariances)
        _check_declaration(name, level, inv)
        entry = _FunctionMetric(metric, name, level, inv, tuple(range), long_name or name)
    else:
        raise TypeError(f"metric must be a Metric subclass, a Metric instance or a callable, "
                        f"got {type(metric).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a metric named {name!r} is already registered; pass overwrite=True "
                         "to replace it")
    _REGISTRY[name] = entry
    return entry


def get(name: str | Metric, **params: Any) -> Metric:
    """A configured metric: ``get("knn_overlap", k=(5, 10, 50))``.

    A ``Metric`` instance passes through unchanged (then ``params`` must be empty). Unknown names
    raise ``ValueError`` listing ``available()``.
    """
    if isinstance(name, Metric):
        if params:
            raise TypeError(f"params {sorted(params)} given with a Metric instance; configure the "
                            "instance itself")
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(available())}")
    entry = _REGISTRY[name]
    if isinstance(entry, Metric):
        if params:
            raise TypeError(f"metric {name!r} was registered as a configured instance; it takes no "
                            f"params (got {sorted(params)})")
        return entry
    return entry(**params)


def available(level: str | None = None) -> list[str]:
    """Registered metric names (in registration order), optionally only those of one level."""
    if level is not None and level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS} or None, got {level!r}")
    return [n for n, e in _REGISTRY.items() if level is None or e.level == level]


def prepare(metric: Metric, X: Any, name: str = "X") -> Any:
    """``metric.prepare(X, name)``; a user's metric whose ``prepare`` takes only ``X`` works
    too."""
    try:
        inspect.signature(metric.prepare).bind(X, name)
    except TypeError:
        return metric.prepare(X)
    return metric.prepare(X, name)


def supports_resampling(metric: Metric) -> bool:
    """Whether ``metric`` overrides ``Metric.score_resampled`` (bootstrap replicates from the
    full data's preparations instead of a recomputation per replicate)."""
    return type(metric).score_resampled is not Metric.score_resampled


def chance(name: str | Metric, d: int | None = None, n: int | None = None,
           k: int | None = None) -> float | None:
    """Chance floor of a metric (its expected score for unrelated inputs) where known, else None.

    ``procrustes_alignment`` needs ``d`` (expected H_inv of a Haar-random rotation);
    ``knn_overlap`` needs ``n`` and uses ``k`` (default: the metric's default, 10). See
    ``docs/metrics.md``.
    """
    return get(name).chance(d=d, n=n, k=k)


from . import function, geometry, representation  # noqa: E402  (registers the built-ins)

for _module in (representation, geometry, function):
    for _cls in _module.METRICS:
        register(_cls)
del _module, _cls
