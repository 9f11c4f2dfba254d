"""The metric protocol: the :class:`Metric` base class, the levels and the invariances.

A metric compares two representations of the same ``n`` inputs, ``X: (n, d1)`` and
``Y: (n, d2)``, in two steps, ``prepare(X)`` once per representation and
``score(prep_x, prep_y)`` per pair; see :mod:`hrsa.metrics` and docs/design.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ._util import as_matrix

if TYPE_CHECKING:
    from .weights import TextResampling

__all__ = ["Metric", "LEVELS", "INVARIANCES", "BatchedScores", "ResampledScores", "FromMoments",
           "CAPABILITIES"]

LEVELS = ("representation", "geometry", "function")
INVARIANCES = frozenset(
    {"orthogonal", "isotropic_scaling", "translation", "permutation", "invertible_linear"}
)


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
        needs_labels: True for a metric bound to the texts' labels (the linear probe):
            ``compare`` scores it through ``labels=``, not ``metrics=``.
    """

    name: ClassVar[str] = ""
    long_name: ClassVar[str] = ""
    level: ClassVar[str] = ""
    invariances: frozenset[str] = frozenset()
    range: tuple[float, float] = (-math.inf, math.inf)
    dims: dict[str, tuple] = {}
    same_dim: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False

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

        ``resampling``: a :class:`hrsa.metrics.weights.TextResampling` on the same ``n`` rows
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


class BatchedScores(Protocol):
    """Optional capability: every pair of two lists of prepared representations at once,
    ``(len(preps_x), len(preps_y))`` float64, equal to ``score`` pair by pair."""

    def score_all(self, preps_x: Sequence[Any], preps_y: Sequence[Any]) -> np.ndarray: ...


class ResampledScores(Protocol):
    """Optional capability: every text-level bootstrap replicate of a
    :class:`~hrsa.metrics.weights.TextResampling` from the full data's preparations."""

    def score_resampled(self, prep_x: Any, prep_y: Any,
                        resampling: TextResampling) -> list[float | dict[str, float]]: ...


@runtime_checkable
class FromMoments(Protocol):
    """Optional capability: the score from streamed float64 moments of every row
    (``moments``: a :class:`hrsa.metrics.moments.CrossMoments`), equal to ``score`` on all
    the rows at once. Used by :mod:`hrsa.streaming` and by compare on dask-backed
    activations."""

    def score_moments(self, moments: Any) -> float: ...


# the optional capabilities, by method name; a metric that has one is checked at register
CAPABILITIES: dict[str, type] = {"score_all": BatchedScores,
                                 "score_resampled": ResampledScores,
                                 "score_moments": FromMoments}
