"""``check_metric``: a conformance suite for any metric, built-in or a user's, in the spirit
of scikit-learn's ``check_estimator``.

It runs the metric on small seeded data, ``X: (n, d)`` with three clusters and
``Y = X A + noise``, and checks what the engine relies on: the declaration (name, level,
invariances, range, extra dims, netCDF-safe params), the output format, the range,
determinism, each declared invariance, the width rule (``same_dim``), and every optional
capability the metric implements (:data:`hrsa.metrics.base.CAPABILITIES`): ``score_all``
equals the loop over ``score``, ``score_resampled``'s identity replicate equals ``score``,
``score_moments`` equals ``score``; and a chance floor, where given, lies in the range.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from .base import INVARIANCES, LEVELS, Metric
from .moments import CrossMoments
from .registry import prepare
from .weights import TextResampling

__all__ = ["check_metric", "transform"]


def check_metric(metric: Metric, X: Any = None, Y: Any = None, *, seed: int = 0,
                 rtol: float = 1e-6) -> None:
    """Raise ``AssertionError`` naming the metric and the failed check, else return None.

    Args:
        metric: a configured :class:`~hrsa.metrics.Metric` (e.g. ``hrsa.metrics.get(name)``).
        X, Y: ``(n, d)`` arrays to run on; default ``n = 48`` rows in three clusters of
            ``d = 6`` features (a metric bound to labels, such as the probe, needs ``n`` of
            them: row ``i`` is in cluster ``i % 3``).
        seed: of the default data and of the transforms.
        rtol: relative tolerance of the invariance and capability checks.
    """
    rng = np.random.default_rng(seed)
    if X is None or Y is None:
        X, Y = _data(rng, 48, 6)
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    name = metric.name or type(metric).__name__

    def check(ok: bool, what: str) -> None:
        if not ok:
            raise AssertionError(f"metric {name!r}: {what}")

    _check_declaration(metric, check)
    value = metric.score(prepare(metric, X, "X"), prepare(metric, Y, "Y"))
    _check_output(metric, value, check)
    check(_close(value, metric(X, Y), 0.0), "__call__ differs from score(prepare, prepare)")
    for kind in sorted(metric.invariances):
        moved = metric(transform(kind, X, rng), transform(kind, Y, rng))
        check(_close(value, moved, rtol), f"declares {kind!r} invariance, but the score "
                                          f"moves from {_main(value)} to {_main(moved)}")
    wider = np.hstack([Y, rng.normal(size=(len(Y), 1))])
    if metric.same_dim:
        try:
            metric(X, wider)
        except ValueError:
            pass
        else:
            check(False, "same_dim is True but inputs of different widths do not raise "
                         "ValueError")
    else:
        _check_output(metric, metric(X, wider), check)
    _check_capabilities(metric, X, Y, value, rtol, check)


def _data(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, d)) + 2 * np.eye(3, d)[np.arange(n) % 3]
    Y = X @ (np.eye(d) + 0.5 * rng.normal(size=(d, d))) + 0.5 * rng.normal(size=(n, d))
    return X, Y


def transform(kind: str, Z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``Z: (n, d)`` under a random map of the invariance ``kind`` (one of
    :data:`~hrsa.metrics.base.INVARIANCES`): a Haar-random rotation, a scale in [0.1, 10],
    a shift, a column permutation, or a well-conditioned invertible matrix."""
    d = Z.shape[1]
    if kind == "orthogonal":
        return Z @ np.linalg.qr(rng.normal(size=(d, d)))[0]
    if kind == "isotropic_scaling":
        return Z * rng.uniform(0.1, 10.0)
    if kind == "translation":
        return Z + 5 * rng.normal(size=d)
    if kind == "permutation":
        return Z[:, rng.permutation(d)]
    if kind == "invertible_linear":
        return Z @ (rng.normal(size=(d, d)) + 3 * np.eye(d))
    raise ValueError(f"kind must be one of {sorted(INVARIANCES)}, got {kind!r}")


def _main(value: float | dict) -> float:
    return value["similarity"] if isinstance(value, dict) else value


def _close(a: float | dict, b: float | dict, rtol: float) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and \
            all(_close(a[k], b[k], rtol) for k in a)
    return a == b or abs(a - b) <= rtol * max(1.0, abs(a))


def _check_declaration(metric: Metric, check) -> None:
    check(isinstance(metric.name, str) and metric.name.isidentifier(),
          "name must be an identifier")
    check(metric.level in LEVELS, f"level {metric.level!r} is not one of {LEVELS}")
    check(set(metric.invariances) <= INVARIANCES,
          f"invariances {sorted(set(metric.invariances) - INVARIANCES)} are unknown")
    low, high = metric.range
    check(low <= high, f"range {metric.range} is not (low, high)")
    dims = dict(metric.dims)
    check(len(dims) <= 1 and all(isinstance(v, tuple) and v for v in dims.values()),
          f"dims {dims} must be {{}} or one extra dim with a non-empty tuple of values")
    try:
        json.dumps(metric.params(), default=None)
    except TypeError as error:
        check(False, f"params() is not JSON-serialisable: {error}")


def _check_output(metric: Metric, value: Any, check) -> None:
    """A float, or a dict of floats with ``similarity`` (and ``{dim}={v}`` per extra
    value); the similarity finite and in the range."""
    if isinstance(value, dict):
        check("similarity" in value, f"a dict score needs 'similarity', got {sorted(value)}")
        for dim, values in metric.dims.items():
            missing = [f"{dim}={v}" for v in values if f"{dim}={v}" not in value]
            check(not missing, f"the score lacks the keys {missing} of its extra dim")
        check(all(isinstance(v, float) for v in value.values()), "scores must be floats")
    else:
        check(isinstance(value, float), f"score must return a float or a dict, got "
                                        f"{type(value).__name__}")
        check(not metric.dims, "a metric with an extra dim must return a dict")
    similarity = _main(value)
    low, high = metric.range
    check(math.isfinite(similarity), f"similarity {similarity} is not finite")
    check(low - 1e-9 <= similarity <= high + 1e-9,
          f"similarity {similarity} is outside the range {metric.range}")


def _check_capabilities(metric: Metric, X: np.ndarray, Y: np.ndarray, value: Any,
                        rtol: float, check) -> None:
    cls = type(metric)
    if cls.score_all is not Metric.score_all and not metric.dims:
        preps_x = [prepare(metric, Z, "X") for Z in (X, 2 * X + 1)]
        preps_y = [prepare(metric, Z, "Y") for Z in (Y, X)]
        grid = metric.score_all(preps_x, preps_y)
        check(isinstance(grid, np.ndarray) and grid.shape == (2, 2),
              "score_all must return a (len(preps_x), len(preps_y)) array")
        for i, px in enumerate(preps_x):
            for j, py in enumerate(preps_y):
                check(_close(float(grid[i, j]), metric.score(px, py), rtol),
                      f"score_all[{i}, {j}] differs from score")
    if cls.score_resampled is not Metric.score_resampled:
        n = len(X)
        units = np.arange(n) // 2  # two rows per text
        counts = np.ones((3, units.max() + 1))
        counts[1:] = np.random.default_rng(0).multinomial(units.max() + 1, counts[0] /
                                                          counts[0].sum(), size=2)
        reps = metric.score_resampled(prepare(metric, X, "X"), prepare(metric, Y, "Y"),
                                      TextResampling(units, counts))
        check(len(reps) == 3, f"score_resampled returned {len(reps)} replicates for 3")
        check(_close(reps[0], value, rtol), "score_resampled's identity replicate (every "
                                            "text once) differs from score")
    if callable(getattr(metric, "score_moments", None)):
        moments = CrossMoments.zeros(X.shape[1], Y.shape[1])
        moments.update(torch.from_numpy(X), torch.from_numpy(Y))
        check(_close(metric.score_moments(moments), _main(value), rtol),
              "score_moments differs from score")
    k = next(iter(metric.dims.values()), (None,))[0]
    try:
        floor = metric.chance(d=X.shape[1], n=len(X), k=k)
    except (TypeError, ValueError):
        floor = None
    if floor is not None:
        low, high = metric.range
        check(low - 1e-9 <= float(floor) <= high + 1e-9,
              f"chance floor {floor} is outside the range {metric.range}")
