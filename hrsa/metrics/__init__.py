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

from .base import INVARIANCES, LEVELS, Metric
from .registry import available, chance, get, prepare, register, supports_resampling

__all__ = ["Metric", "register", "get", "available", "chance", "prepare", "supports_resampling",
           "LEVELS", "INVARIANCES"]

from . import function, geometry, representation  # noqa: E402  (registers the built-ins)

for _module in (representation, geometry, function):
    for _cls in _module.METRICS:
        register(_cls)
del _module, _cls
