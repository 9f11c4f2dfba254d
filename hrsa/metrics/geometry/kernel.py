"""CKA with RBF kernels (bandwidth: a fraction of the median pairwise distance).

See :mod:`hrsa.metrics.geometry` for the family; ``X: (n, d1)``, ``Y: (n, d2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._util import ROTATION_FREE, centred_input, check_pair
from ..base import Metric

__all__ = ["RBFCKA"]

@dataclass
class _KernelPrep:
    """Centred kernel ``Kc = H K H: (n, n)`` and its Frobenius norm."""

    Kc: torch.Tensor
    norm: float
    shape: tuple[int, int]


def _offdiag_median(Dist: torch.Tensor) -> float:
    """Median of the off-diagonal entries of a symmetric ``Dist: (n, n)`` with zero diagonal
    (= the median of the ``n(n-1)/2`` pairwise distances, averaging the middle two)."""
    n = Dist.shape[0]
    flat = Dist.flatten()
    half = n + n * (n - 1) // 2  # the n diagonal zeros sort first
    return 0.5 * float(flat.kthvalue(half).values + flat.kthvalue(half + 1).values)


class RBFCKA(Metric):
    r"""CKA with Gaussian (RBF) kernels.

    ``K_ij = exp(-|x_i - x_j|^2 / (2 s^2))`` with ``s = sigma * median_{i<j} |x_i - x_j|``, set
    per representation (Kornblith et al. 2019 use fractions 0.2-0.8 of the median distance;
    default ``sigma=0.8``). ``CKA = <Kc, Lc>_F / (|Kc|_F |Lc|_F)``, ``Kc = HKH``.
    ``X: (n, d1)``, ``Y: (n, d2)``. Range [0, 1]. Invariant to orthogonal maps, isotropic scaling
    (the bandwidth scales with the data), translation, feature permutation.
    ``ValueError`` if the median distance is 0 (more than half the rows coincide).
    Cost: prepare O(n^2 d) time, O(n^2) float64 memory (~3 n^2 x 8 bytes peak, n^2 x 8 kept);
    score O(n^2).
    """

    name = "cka_rbf"
    long_name = "RBF CKA"
    level = "geometry"
    invariances = ROTATION_FREE
    range = (0.0, 1.0)

    def __init__(self, sigma: float = 0.8) -> None:
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.sigma = float(sigma)

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma}

    def prepare(self, X: Any, name: str = "X") -> _KernelPrep:
        Xc = centred_input(X, name)
        G = Xc @ Xc.T
        sq = G.diagonal().clone()
        D2 = (sq[:, None] + sq[None, :] - 2 * G).clamp_min_(0).fill_diagonal_(0)
        del G
        med = _offdiag_median(D2.sqrt())
        if med <= 0:
            raise ValueError(f"{name}: the median pairwise distance is 0 (most rows coincide); "
                             "the RBF bandwidth is undefined")
        K = D2.mul_(-1 / (2 * (self.sigma * med) ** 2)).exp_()
        K -= K.mean(dim=0, keepdim=True)
        K -= K.mean(dim=1, keepdim=True)
        return _KernelPrep(K, float(torch.linalg.matrix_norm(K)), tuple(X.shape))

    def score(self, prep_x: _KernelPrep, prep_y: _KernelPrep) -> float:
        check_pair(prep_x, prep_y)
        inner = float((prep_x.Kc * prep_y.Kc.to(prep_x.Kc.device)).sum())
        return inner / (prep_x.norm * prep_y.norm)
