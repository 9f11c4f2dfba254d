"""Streamed moments: float64 sums of paired rows accumulated batch by batch.

For paired rows ``X: (n, d1)`` and ``Y: (n, d2)`` (the same token positions in both
models), the sums ``n``, ``sum X``, ``sum Y``, ``X^T X``, ``Y^T Y`` and ``X^T Y`` determine
the centred products ``Cxy = X^T Y - n mx my^T`` (and ``Cxx``, ``Cyy``). A metric that can
be computed from them implements ``score_moments(moments)``
(:class:`hrsa.metrics.base.FromMoments`): linear CKA, dimension correlation and
procrustes_alignment, exactly the values they give on all the rows at once. Memory:
``d1^2 + d2^2 + d1 d2`` float64 per pair, whatever the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import FromMoments
from .registry import get

__all__ = ["CrossMoments", "FromMoments", "STREAMING_METRICS"]

STREAMING_METRICS = ("cka", "dimension_correlation", "procrustes_alignment")  # FromMoments


@dataclass
class CrossMoments:
    """Running float64 sums of paired rows ``X: (n, d1)``, ``Y: (n, d2)``."""

    n: int
    sx: torch.Tensor  # (d1,)
    sy: torch.Tensor  # (d2,)
    xx: torch.Tensor  # (d1, d1)
    yy: torch.Tensor  # (d2, d2)
    xy: torch.Tensor  # (d1, d2)

    @classmethod
    def zeros(cls, d1: int, d2: int, device: str | torch.device = "cpu") -> CrossMoments:
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=device)

        return cls(0, zeros(d1), zeros(d2), zeros(d1, d1), zeros(d2, d2), zeros(d1, d2))

    def update(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Add the rows of ``X: (m, d1)`` and ``Y: (m, d2)`` (paired row by row)."""
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows and Y {Y.shape[0]}: rows must pair")
        X, Y = X.to(self.xx.device, torch.float64), Y.to(self.xx.device, torch.float64)
        self.n += X.shape[0]
        self.sx += X.sum(0)
        self.sy += Y.sum(0)
        self.xx += X.T @ X
        self.yy += Y.T @ Y
        self.xy += X.T @ Y

    def centred(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Cxx, Cyy, Cxy)``, the sums of centred products (``Xc^T Xc`` etc.)."""
        if self.n < 2:
            raise ValueError(f"at least 2 rows are needed, got {self.n}")
        mx, my = self.sx / self.n, self.sy / self.n
        return (self.xx - self.n * torch.outer(mx, mx), self.yy - self.n * torch.outer(my, my),
                self.xy - self.n * torch.outer(mx, my))

    def score(self, name: str) -> float:
        """The value of metric ``name`` (default parameters) from these moments; ValueError
        for a metric without ``score_moments``."""
        metric = get(name)
        if not isinstance(metric, FromMoments):
            raise ValueError(f"metric {name!r} cannot be streamed; streamable: "
                             f"{STREAMING_METRICS}")
        return metric.score_moments(self)
