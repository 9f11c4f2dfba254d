r"""Representation-level metrics: do two spaces share a coordinate basis?

Both metrics compare feature j of ``X: (n, D)`` with feature j of ``Y: (n, D)`` (or ask how far
the best rotation between them is from a permutation), so they are NOT invariant to orthogonal
maps; both need ``d1 == d2 == D``.

* ``dimension_correlation``: mean over features of the Pearson correlation of matching columns,
  :math:`\frac1D\sum_j \langle X^c_j, Y^c_j\rangle / (\|X^c_j\|\|Y^c_j\|)`. Range [-1, 1].
* ``procrustes_alignment``: inverse row entropy of the orthogonal Procrustes map
  :math:`O^* = \arg\min_{O^TO=I}\|X^cO - Y^c\|_F = UV^T` (SVD :math:`X^{cT}Y^c = USV^T`),
  :math:`H_{inv} = 1 + \frac{1}{D\ln D}\sum_{ij} O^{*2}_{ij}\ln O^{*2}_{ij}`. Range [0, 1]; 1 for a
  signed permutation, about :math:`0.73/\ln D` for a Haar-random rotation.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.special import digamma

from .base import Metric
from ._polar import polar_parts
from ._util import (as_matrix, centered, centred_input, check_not_constant, check_pair,
                    rank_tolerance, warn)

if TYPE_CHECKING:
    from .moments import CrossMoments
    from .weights import TextResampling

__all__ = ["DimensionCorrelation", "ProcrustesAlignment", "METRICS"]


def _column_dots(A: torch.Tensor, B: torch.Tensor, chunk_bytes: int = 2**23) -> torch.Tensor:
    """``(d,)`` float64: ``sum_i A_ij B_ij`` of ``A, B: (n, d)``, over row chunks of about
    ``chunk_bytes`` (8 MB): each chunk's products are a small temporary that stays in cache
    and is reused, where ``(A * B).sum(0)`` writes an ``(n, d)`` one (fresh pages) and
    ``vector_norm(A, dim=0)`` reduces with strided loads (both about 4-6x slower)."""
    rows = max(1, chunk_bytes // (8 * A.shape[1]))
    out = torch.zeros(A.shape[1], dtype=torch.float64, device=A.device)
    for a, b in zip(A.split(rows), B.split(rows)):
        out += (a.to(torch.float64) * b.to(torch.float64)).sum(dim=0)
    return out


@dataclass
class _UnitColumns:
    """Centred columns scaled to unit norm (``Z: (n, D)``; zero where a column is constant)."""

    Z: torch.Tensor
    varying: torch.Tensor  # (D,) bool: column not constant

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.Z.shape)


class DimensionCorrelation(Metric):
    r"""Mean Pearson correlation of matching features.

    ``rho_j = <Xc_j, Yc_j> / (|Xc_j| |Yc_j|)`` with columns centred over the ``n`` rows; the score
    is the mean of ``rho_j`` over ``j``. ``X: (n, D)``, ``Y: (n, D)`` (same ``D`` required).

    A column constant in either representation has no correlation: it is left out of the mean
    with a ``RuntimeWarning`` saying how many were left out; if no column is left, ``ValueError``.

    Range [-1, 1]. Invariant to translation and positive isotropic scaling (indeed to a positive
    scale per column), not to rotations, feature permutations or sign flips.
    Cost: prepare O(nD) time and memory (float64), score O(nD).
    """

    name = "dimension_correlation"
    long_name = "dimension-wise correlation"
    level = "representation"
    same_dim = True
    invariances = frozenset({"translation", "isotropic_scaling"})
    range = (-1.0, 1.0)

    def prepare(self, X: Any, name: str = "X") -> _UnitColumns:
        X = as_matrix(X, name)
        Xc = centered(X)
        check_not_constant(Xc, X, name)
        norms = _column_dots(Xc, Xc).sqrt_()
        scale = _column_dots(X, X).sqrt_()
        varying = norms > 1e-12 * scale.clamp_min(1e-300)
        # in place; a constant column is divided by inf, i.e. set to (signed) zero
        return _UnitColumns(Xc.div_(torch.where(varying, norms, torch.inf)), varying)

    def score(self, prep_x: _UnitColumns, prep_y: _UnitColumns) -> float:
        check_pair(prep_x, prep_y, same_d=True, why="dimension_correlation")
        Zy = prep_y.Z.to(prep_x.Z.device)
        both = prep_x.varying & prep_y.varying.to(prep_x.Z.device)
        kept = int(both.sum())
        if kept == 0:
            raise ValueError("no feature varies in both X and Y; dimension_correlation is undefined")
        if kept < both.numel():
            warn(f"dimension_correlation: {both.numel() - kept} of {both.numel()} features are "
                 "constant in X or Y and were left out of the mean")
        rho = _column_dots(prep_x.Z, Zy)
        return float(rho[both].mean())

    block_mb = 256.0  # working-buffer bound of score_all (an attribute, not a parameter)

    def score_resampled(self, prep_x: _UnitColumns, prep_y: _UnitColumns,
                        resampling: TextResampling) -> list[float]:
        """Every bootstrap replicate exactly (see ``Metric.score_resampled``), from weighted
        column moments: ``rho_bj = (s_xy - s_x s_y / N) / sqrt((s_xx - s_x^2 / N)(s_yy -
        s_y^2 / N))`` with ``s_x = sum_i w_bi x_ij`` etc. A column constant in a replicate
        (variance below 1e-12 of its second moment) is left out of that replicate's mean,
        as ``score`` on the replicate's rows would; a replicate with none left is NaN."""
        check_pair(prep_x, prep_y, same_d=True, why="dimension_correlation")
        Zx, Zy = prep_x.Z, prep_y.Z.to(prep_x.Z.device)
        N = torch.as_tensor(resampling.sizes(), dtype=torch.float64, device=Zx.device)[:, None]
        both = prep_x.varying & prep_y.varying.to(Zx.device)
        total = torch.zeros_like(N[:, 0])
        kept = torch.zeros_like(total)
        cols = max(1, int(self.block_mb * 2**20) // (8 * Zx.shape[0]))
        for c0 in range(0, Zx.shape[1], cols):
            x, y = Zx[:, c0:c0 + cols], Zy[:, c0:c0 + cols]
            sx, sy = resampling.sums(x), resampling.sums(y)
            sxy, sxx, syy = (resampling.sums(a * b) for a, b in ((x, y), (x, x), (y, y)))
            vx, vy = sxx - sx.square() / N, syy - sy.square() / N
            ok = both[c0:c0 + cols] & (vx > 1e-12 * sxx) & (vy > 1e-12 * syy)
            rho = (sxy - sx * sy / N) / (vx * vy).clamp_min(1e-300).sqrt()
            total += torch.where(ok, rho, 0.0).sum(dim=1)
            kept += ok.sum(dim=1)
        return (total / kept).tolist()

    def score_moments(self, moments: CrossMoments) -> float:
        """From streamed moments: the mean over features varying in both of
        ``Cxy_jj / sqrt(Cxx_jj Cyy_jj)`` (constant features left out, with a warning)."""
        cxx, cyy, cxy = moments.centred()
        var = torch.diagonal(cxx) * torch.diagonal(cyy)
        scale = torch.diagonal(moments.xx) * torch.diagonal(moments.yy)
        varying = var > 1e-24 * scale.clamp_min(1e-300)
        if not bool(varying.any()):
            raise ValueError("no feature varies in both X and Y; dimension_correlation "
                             "is undefined")
        if not bool(varying.all()):
            warnings.warn(f"dimension_correlation: {int((~varying).sum())} constant "
                          "features left out of the mean", RuntimeWarning, stacklevel=2)
        rho = torch.diagonal(cxy)[varying] / var[varying].sqrt()
        return float(rho.mean())

    def score_all(self, preps_x: list[_UnitColumns], preps_y: list[_UnitColumns]) -> np.ndarray:
        """All pairs at once (see ``Metric.score_all``): ``rho[c, i, j] = <Zx_i[:, c], Zy_j[:, c]>``
        for every feature ``c`` as one batched product ``(c, Lx, n) @ (c, n, Ly)`` over column
        blocks (at most ``block_mb`` MB of stacked columns), summed over ``c`` and divided by the
        number of columns varying in both.
        Constant columns: one ``RuntimeWarning`` for the grid (the largest count left out);
        ``ValueError`` if some pair has no column varying in both."""
        Lx, Ly = len(preps_x), len(preps_y)
        if not Lx or not Ly:
            return np.empty((Lx, Ly))
        for px in preps_x:
            for py in preps_y:
                check_pair(px, py, same_d=True, why="dimension_correlation")
        device = preps_x[0].Z.device
        n, D = preps_x[0].shape
        Vx = torch.stack([p.varying.to(device) for p in preps_x]).to(torch.float64)  # (Lx, D)
        Vy = torch.stack([p.varying.to(device) for p in preps_y]).to(torch.float64)
        kept = torch.einsum("ad,bd->ab", Vx, Vy)
        if bool((kept == 0).any()):
            raise ValueError("no feature varies in both X and Y for some pair; "
                             "dimension_correlation is undefined")
        if bool((kept < D).any()):
            warn(f"dimension_correlation: up to {int(D - kept.min())} of {D} features are "
                 "constant in X or Y and were left out of the mean")
        total = torch.zeros((Lx, Ly), dtype=torch.float64, device=device)
        cols = max(1, min(D, int(self.block_mb * 2**20) // (8 * n * (Lx + Ly))))
        for c0 in range(0, D, cols):
            c1 = min(c0 + cols, D)
            A = torch.stack([p.Z[:, c0:c1].T for p in preps_x], dim=1)  # (c, Lx, n)
            B = torch.stack([p.Z[:, c0:c1].T.to(device) for p in preps_y], dim=2)  # (c, n, Ly)
            # Z is exactly 0 in a constant column, so such columns add 0 to every sum
            total += torch.bmm(A, B).sum(dim=0)
            del A, B
        return (total / kept).cpu().numpy()


@dataclass
class _Centred:
    """Column-centred float64 representation ``Xc: (n, d)``."""

    Xc: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.Xc.shape)


def _row_entropy_inverse(P: torch.Tensor) -> float:
    r"""``1 - H`` for a (partial) isometry ``P: (D, D)``.

    Each row's squared entries, normalised to sum to 1, are a distribution with entropy ``H_i``;
    ``H = sum_i w_i H_i / ln D`` with row weights ``w_i = |P_i|^2 / |P|_F^2``. For an orthogonal
    ``P`` (rows of unit norm) this is ``-(1 / (D ln D)) sum_ij P_ij^2 ln P_ij^2``.
    """
    D = P.shape[0]
    sq = P.square()
    mass = sq.sum(dim=1)
    keep = mass > 0
    p = sq[keep] / mass[keep, None]
    h_rows = -torch.special.xlogy(p, p).sum(dim=1)
    H = float((mass[keep] * h_rows).sum() / mass.sum()) / math.log(D)
    return 1.0 - H


class ProcrustesAlignment(Metric):
    r"""Inverse row entropy of the orthogonal Procrustes map between ``X: (n, D)`` and ``Y: (n, D)``.

    ``O* = U V^T`` where ``Xc^T Yc = U S V^T`` (columns centred), the minimiser of
    ``||Xc O - Yc||_F`` over orthogonal ``O``. Rows of ``P = O*^2`` (elementwise) sum to 1;
    ``H = -(1 / (D ln D)) sum_ij P_ij ln P_ij``; the score is ``H_inv = 1 - H``: 1 for a signed
    permutation, about ``0.73 / ln D`` for a Haar-random rotation (exact value: ``chance``).

    Rank deficiency: ``O*`` is unique only if ``Xc^T Yc`` has full rank ``D``. The numerical rank
    ``r`` uses numpy's ``matrix_rank`` tolerance (``s_max * D * eps``). If ``r < D``:

    * ``rank_deficient="nearest_identity"`` (default): among all optimal maps (they differ only
      on the null spaces), the one nearest the identity, ``O = U_r V_r^T + U_0 R V_0^T`` with
      ``R = A B^T`` from the SVD ``U_0^T V_0 = A S B^T`` (maximises ``tr O``). A
      self-comparison then scores exactly 1. Post-LayerNorm states (BERT, MiniLM) always have
      rank ``D - 1`` after centring (each row satisfies ``sum_j (y_j - beta_j) / gamma_j = 0``),
      so this case is common, and the completion fixes only ``D - r`` of ``D`` directions.
    * ``"nan"``: NaN with a ``RuntimeWarning`` ("rank r < D, the map is not unique").
    * ``"subspace"``: only the unique part of the map is used, the partial isometry
      ``P = U_r V_r^T`` on the shared rank-``r`` subspace (``U_r, V_r``: the leading ``r``
      singular vectors). Its rows have squared norms ``w_i`` summing to ``r``; each row normalised
      is a distribution with entropy ``H_i``, and ``H = sum_i w_i H_i / (r ln D)`` (equal to the
      full-rank formula when ``r = D``). This measures how axis-aligned the constrained part of the
      map is: a self-comparison scores 1 only if the data's subspace is itself axis-aligned.
    * ``"ignore"``: one of the many optimal maps, ``U_r V_r^T + U_0 V_0^T`` with whichever
      null-space bases the solver returns (the SVD's ``U V^T``, or seeded ones), no warning.

    Range [0, 1]. Invariant to translation and positive isotropic scaling; not to rotations
    (which are what it measures). Signed feature permutations applied to both give the same
    score. Cost: prepare O(nD); score O(n D^2 + D^3) (cross-covariance, then an
    eigendecomposition of ``M^T M`` certified against its own error, or an SVD: see
    ``from_cross_covariance``).
    """

    name = "procrustes_alignment"
    long_name = "Procrustes inverse row entropy"
    level = "representation"
    same_dim = True
    invariances = frozenset({"translation", "isotropic_scaling"})
    range = (0.0, 1.0)

    RANK_DEFICIENT = ("nearest_identity", "nan", "subspace", "ignore")
    SVD_AFTER_DECLINE = 16

    def __init__(self, rank_deficient: str = "nearest_identity") -> None:
        if rank_deficient not in self.RANK_DEFICIENT:
            raise ValueError(f"rank_deficient must be one of {self.RANK_DEFICIENT}, "
                             f"got {rank_deficient!r}")
        self.rank_deficient = rank_deficient
        self._svd_next = 0  # maps left to solve by SVD before trying the eigendecomposition

    def params(self) -> dict[str, Any]:
        return {"rank_deficient": self.rank_deficient}

    def prepare(self, X: Any, name: str = "X") -> _Centred:
        Xc = centred_input(X, name)
        return _Centred(Xc)

    def score(self, prep_x: _Centred, prep_y: _Centred) -> float:
        check_pair(prep_x, prep_y, same_d=True, why="procrustes_alignment")
        return self.from_cross_covariance(prep_x.Xc.T @ prep_y.Xc.to(prep_x.Xc.device))

    def score_resampled(self, prep_x: _Centred, prep_y: _Centred,
                        resampling: TextResampling) -> list[float]:
        """Every bootstrap replicate exactly (see ``Metric.score_resampled``): H_inv from
        each replicate's centred cross product ``C_b = A_b - s_x s_y^T / N_b``
        (:meth:`hrsa.resampling.TextResampling.cross`), one SVD per replicate."""
        check_pair(prep_x, prep_y, same_d=True, why="procrustes_alignment")
        Xc, Yc = prep_x.Xc, prep_y.Xc.to(prep_x.Xc.device)
        N = torch.as_tensor(resampling.sizes(), dtype=torch.float64, device=Xc.device)
        sx, sy = resampling.sums(Xc), resampling.sums(Yc)
        out: list[float] = []
        for reps, _, A in resampling.cross(Xc, Yc, all_columns=True):
            C = A - sx[reps, :, None] * (sy[reps] / N[reps, None])[:, None, :]
            out.extend(self.from_cross_covariance(M) for M in C)
        return out

    def score_moments(self, moments: CrossMoments) -> float:
        """From streamed moments: H_inv of the Procrustes map of ``Cxy``."""
        return self.from_cross_covariance(moments.centred()[2])

    def from_cross_covariance(self, M: torch.Tensor) -> float:
        """H_inv from the centred cross-product ``M = Xc^T Yc: (D, D)`` (any positive
        scale), so that streamed moments (:mod:`hrsa.streaming`) score the same way.

        The map's parts come from the eigendecomposition of ``M^T M`` where that is certified
        accurate (:func:`hrsa.metrics._polar.polar_parts`, about 0.75x the SVD's time), else from
        the SVD ``M = U S V^T``: ``O_r = U_r V_r^T`` and the null-space bases ``U_0, V_0``. Both
        agree to about 1e-10 where both apply. A declined eigendecomposition costs about half an
        SVD on top of it, and maps of one comparison tend to be alike, so after a decline the
        next ``SVD_AFTER_DECLINE`` maps go straight to the SVD."""
        parts = None
        if self._svd_next:
            self._svd_next -= 1
        else:
            parts = polar_parts(M)
            if parts is None:
                self._svd_next = self.SVD_AFTER_DECLINE
        if parts is None:
            U, S, Vh = torch.linalg.svd(M)
            r = int((S > rank_tolerance(float(S[0]), M.shape[0], S.dtype)).sum())
            parts = U[:, :r] @ Vh[:r], U[:, r:], Vh[r:].T
        O_r, U0, V0 = parts
        if U0.shape[1] == 0:
            return _row_entropy_inverse(O_r)
        if self.rank_deficient == "nan":
            warn(f"procrustes_alignment: rank {M.shape[0] - U0.shape[1]} < D={M.shape[0]}, the "
                 "map is not unique (set rank_deficient='subspace' to score the unique part)")
            return float("nan")
        if self.rank_deficient == "subspace":
            return _row_entropy_inverse(O_r)
        if self.rank_deficient == "nearest_identity":
            A, _, Bh = torch.linalg.svd(U0.T @ V0)
            return _row_entropy_inverse(O_r + U0 @ (A @ Bh) @ V0.T)
        return _row_entropy_inverse(O_r + U0 @ V0.T)

    def chance(self, d: int | None = None, n: int | None = None, k: int | None = None) -> float:
        r"""Exact ``E[H_inv]`` for a Haar-random rotation of size ``d``.

        Each squared entry of a Haar orthogonal matrix is ``Beta(1/2, (d-1)/2)``, for which
        ``E[p ln p] = (psi(3/2) - psi(d/2 + 1)) / d``; summing ``d^2`` entries by linearity,
        ``E[H_inv] = 1 - (psi(d/2 + 1) - psi(3/2)) / ln d`` (``~ 0.7296 / ln d`` for large d).
        """
        if d is None or d < 2:
            raise ValueError(f"chance('procrustes_alignment') needs d >= 2, got d={d!r}")
        return float(1.0 - (digamma(d / 2 + 1) - digamma(1.5)) / math.log(d))


METRICS = (DimensionCorrelation, ProcrustesAlignment)
