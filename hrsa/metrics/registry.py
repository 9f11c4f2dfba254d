"""The metric registry: :func:`register`, :func:`get`, :func:`available`, and the helpers
the engine calls on any registered metric (:func:`prepare`, :func:`supports_resampling`,
:func:`chance`)."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

from ._util import as_matrix, check_pair
from .base import CAPABILITIES, INVARIANCES, LEVELS, Metric

__all__ = ["register", "get", "available", "chance", "prepare", "supports_resampling"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


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


def _check_capabilities(metric: type[Metric] | Metric, name: str) -> None:
    """TypeError unless each optional capability that ``metric`` implements (a method of
    :data:`~hrsa.metrics.base.CAPABILITIES` beyond the base class's) is callable with its
    Protocol's arguments."""
    cls = metric if isinstance(metric, type) else type(metric)
    for method, protocol in CAPABILITIES.items():
        impl = getattr(cls, method, None)
        if impl is None or impl is getattr(Metric, method, None):
            continue
        expected = inspect.signature(getattr(protocol, method))
        try:
            inspect.signature(impl).bind(*expected.parameters)
        except (TypeError, ValueError):
            raise TypeError(f"metric {name!r}: {method} must take the arguments of "
                            f"{protocol.__name__}.{method}{expected}") from None


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
        _check_capabilities(metric, name)
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
