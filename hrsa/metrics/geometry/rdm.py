"""Metrics on representational dissimilarity matrices: RSA and geodesic (k-NN graph) distances.

See :mod:`hrsa.metrics.geometry` for the family; ``X: (n, d1)``, ``Y: (n, d2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components, shortest_path
from scipy.spatial.distance import pdist, squareform
from scipy.stats import rankdata
from sklearn.neighbors import kneighbors_graph

from .._util import ROTATION_FREE, as_matrix, check_pair, warn
from ..base import Metric
from ..subsample import subsample_indices

__all__ = ["RSA", "Geodesic"]

@dataclass
class _VectorPrep:
    """A standardised vector (zero mean, unit norm) of pair statistics; score = dot product."""

    v: np.ndarray
    shape: tuple[int, int]


def _standardised(v: np.ndarray, name: str, what: str) -> np.ndarray:
    """``(v - mean) / |v - mean|``; ``ValueError`` if ``v`` is constant."""
    v = v - v.mean()
    norm = np.linalg.norm(v)
    if not norm > 0:
        raise ValueError(f"{name}: all {what} are equal; their correlation is undefined")
    return v / norm


_RSA_INVARIANCES = {
    "cosine": frozenset({"orthogonal", "isotropic_scaling", "permutation"}),
    "euclidean": ROTATION_FREE,
    "sqeuclidean": ROTATION_FREE,
    "correlation": frozenset({"isotropic_scaling", "permutation"}),
    "cityblock": frozenset({"isotropic_scaling", "translation", "permutation"}),
    "chebyshev": frozenset({"isotropic_scaling", "translation", "permutation"}),
}


class RSA(Metric):
    r"""Representational similarity analysis: correlation of two RDMs.

    ``RDM_X = pdist(X, distance)`` (the ``n(n-1)/2`` upper-triangle dissimilarities, scipy),
    compared by Spearman (default; rank correlation, ties averaged) or Pearson correlation.
    ``X: (n, d1)``, ``Y: (n, d2)``, ``n >= 3``; computed with numpy/scipy on the CPU.

    Range [-1, 1]. Invariances depend on ``distance``: cosine (default): orthogonal, isotropic
    scaling, permutation (not translation: cosine is uncentred); euclidean/sqeuclidean: also
    translation; correlation: isotropic scaling and permutation; cityblock/chebyshev: isotropic
    scaling, translation, permutation; other scipy metrics: none declared.
    ``ValueError`` for undefined dissimilarities (e.g. cosine of an all-zero row) or a constant RDM.
    Cost: prepare O(n^2 d) time, O(n^2) memory (ranking O(n^2 log n)); score O(n^2).
    """

    name = "rsa"
    long_name = "RSA (RDM correlation)"
    level = "geometry"
    range = (-1.0, 1.0)

    def __init__(self, distance: str = "cosine", method: str = "spearman") -> None:
        if method not in ("spearman", "pearson"):
            raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
        try:
            pdist(np.zeros((2, 1)) + [[0.0], [1.0]], distance)
        except ValueError as err:
            raise ValueError(f"distance {distance!r} is not a scipy pdist metric: {err}") from err
        self.distance, self.method = distance, method
        self.invariances = _RSA_INVARIANCES.get(distance, frozenset())

    def params(self) -> dict[str, Any]:
        return {"distance": self.distance, "method": self.method}

    def prepare(self, X: Any, name: str = "X") -> _VectorPrep:
        X = as_matrix(X, name, min_rows=3)
        rdm = pdist(X.cpu().to(torch.float64).numpy(), self.distance)
        bad = int((~np.isfinite(rdm)).sum())
        if bad:
            raise ValueError(f"{name}: {bad} {self.distance} dissimilarities are undefined "
                             "(e.g. an all-zero row under cosine)")
        if self.method == "spearman":
            rdm = rankdata(rdm)
        return _VectorPrep(_standardised(rdm, name, "dissimilarities"), tuple(X.shape))

    def score(self, prep_x: _VectorPrep, prep_y: _VectorPrep) -> float:
        check_pair(prep_x, prep_y)
        return float(prep_x.v @ prep_y.v)


class Geodesic(Metric):
    r"""Spearman correlation of geodesic distances on k-NN graphs.

    Per representation: the (symmetrised) graph of each row's ``k`` Euclidean nearest neighbours,
    edge weight = distance (sklearn ``kneighbors_graph``), all-pairs shortest paths (scipy
    ``shortest_path``, Dijkstra, undirected); the score is the Spearman correlation of the two
    geodesic distance vectors over pairs ``i < j``.

    Disconnected graph: pairs in different components have infinite geodesic distance; they are
    kept and rank as farther than every finite pair (tied at the top), with a ``RuntimeWarning``
    that gives the number of components. Raise ``k`` to connect the graph instead.

    ``n > max_samples``: a seeded subsample of ``max_samples`` rows (the same rows for every
    representation of the same ``n`` inputs; ``max_samples=0`` uses all rows).
    ``X: (n, d1)``, ``Y: (n, d2)``, ``k < n``; numpy/scipy on the CPU. Range [-1, 1]. Invariant to
    orthogonal maps, isotropic scaling, translation, feature permutation.
    Cost (m = min(n, max_samples)): prepare O(m^2 (d + log m)) time, O(m^2) memory; score O(m^2).
    """

    name = "geodesic"
    long_name = "geodesic distance correlation"
    level = "geometry"
    invariances = ROTATION_FREE
    range = (-1.0, 1.0)

    def __init__(self, k: int = 10, max_samples: int = 2000, seed: int = 0) -> None:
        if not (isinstance(k, (int, np.integer)) and k >= 1):
            raise ValueError(f"k must be a positive int, got {k!r}")
        if max_samples < 0:
            raise ValueError(f"max_samples must be >= 0 (0 = all rows), got {max_samples!r}")
        self.k, self.max_samples, self.seed = int(k), int(max_samples), int(seed)

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "max_samples": self.max_samples, "seed": self.seed}

    def prepare(self, X: Any, name: str = "X") -> _VectorPrep:
        X = as_matrix(X, name, min_rows=3)
        rows = subsample_indices(X.shape[0], self.max_samples, self.seed)
        Xn = X.cpu().to(torch.float64).numpy()
        if rows is not None:
            Xn = Xn[rows]
        m = Xn.shape[0]
        if self.k >= m:
            raise ValueError(f"k={self.k} must be < the number of rows used ({m}) of {name}")
        graph = kneighbors_graph(Xn, self.k, mode="distance")
        n_comp = connected_components(graph, directed=False)[0]
        if n_comp > 1:
            warn(f"geodesic: the k={self.k} nearest-neighbour graph of {name} has {n_comp} "
                 "components; pairs across components rank as the most distant (raise k to avoid)")
        geo = squareform(shortest_path(graph, method="D", directed=False), checks=False)
        return _VectorPrep(_standardised(rankdata(geo), name, "geodesic distances"),
                           (X.shape[0], X.shape[1]))

    def score(self, prep_x: _VectorPrep, prep_y: _VectorPrep) -> float:
        check_pair(prep_x, prep_y)
        return float(prep_x.v @ prep_y.v)
