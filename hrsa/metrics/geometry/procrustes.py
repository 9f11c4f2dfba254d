"""Orthogonal Procrustes similarity (a geometry-level shape metric) and its angular distance.

See :mod:`hrsa.metrics.geometry` for the family; ``X: (n, d1)``, ``Y: (n, d2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .._util import ROTATION_FREE, centred_input, check_pair
from ..base import Metric

__all__ = ["Procrustes"]

@dataclass
class _ProcrustesPrep:
    """``A: (n, r)``, ``r = min(n, d)``, with ``A A^T = Xc Xc^T / |Xc|_F^2``.

    ``A = Xc / |Xc|_F`` when ``d <= n``, else ``U S`` from its thin SVD, which keeps every
    nuclear norm ``|A_x^T A_y|_*`` while shrinking ``d`` to ``n``.
    """

    A: torch.Tensor
    shape: tuple[int, int]


class Procrustes(Metric):
    r"""Orthogonal Procrustes similarity (global shape after the best rotation).

    With ``Xc, Yc`` column-centred and scaled to unit Frobenius norm,
    ``min_O |Xc O - Yc|_F^2 = 2 - 2 s`` where ``s = |Xc^T Yc|_*`` (nuclear norm). ``d1 != d2`` is
    allowed (zero-padding the smaller space leaves ``s`` unchanged).

    ``output="similarity"`` (default): ``s``, range [0, 1]. ``output="distance"``: the angular
    Procrustes distance ``arccos(s)``, range [0, pi/2] (netrep's ``LinearMetric(alpha=1,
    score_method="angular")``, Williams et al. 2021). Invariant to orthogonal maps, isotropic
    scaling, translation, feature permutation. Constant input: ``ValueError``.
    Cost: prepare O(n d min(n, d)); score O(n r1 r2 + r1 r2 min(r1, r2)), ``r = min(n, d)``.
    """

    name = "procrustes"
    long_name = "Procrustes similarity"
    level = "geometry"
    invariances = ROTATION_FREE

    def __init__(self, output: str = "similarity") -> None:
        if output not in ("similarity", "distance"):
            raise ValueError(f"output must be 'similarity' or 'distance', got {output!r}")
        self.output = output
        self.range = (0.0, 1.0) if output == "similarity" else (0.0, math.pi / 2)
        if output == "distance":
            self.long_name = "angular Procrustes distance"

    def params(self) -> dict[str, Any]:
        return {"output": self.output}

    def prepare(self, X: Any, name: str = "X") -> _ProcrustesPrep:
        Xc = centred_input(X, name)
        Xc /= torch.linalg.matrix_norm(Xc)
        if Xc.shape[0] < Xc.shape[1]:
            U, S, _ = torch.linalg.svd(Xc, full_matrices=False)
            Xc = U * S
        return _ProcrustesPrep(Xc, tuple(Xc.shape))

    def score(self, prep_x: _ProcrustesPrep, prep_y: _ProcrustesPrep) -> float:
        check_pair(prep_x, prep_y)
        s = float(torch.linalg.matrix_norm(prep_x.A.T @ prep_y.A.to(prep_x.A.device), ord="nuc"))
        s = min(max(s, 0.0), 1.0)
        return s if self.output == "similarity" else math.acos(s)
