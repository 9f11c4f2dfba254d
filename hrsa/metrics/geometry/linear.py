"""Linear CKA and its debiased estimator: kernels ``K = X X^T`` computed in feature or Gram form.

See :mod:`hrsa.metrics.geometry` for the family; ``X: (n, d1)``, ``Y: (n, d2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._util import ROTATION_FREE, centred_input, check_pair
from ..base import Metric

if TYPE_CHECKING:
    from ..moments import CrossMoments
    from ..weights import TextResampling

__all__ = ["LinearCKA", "DebiasedCKA", "all_pairs_form"]

@dataclass
class _LinearPrep:
    """Centred linear-kernel statistics of ``X: (n, d)``, float64.

    Holds ``Xc: (n, d)`` when ``n >= d`` and the Gram matrix ``K = Xc Xc^T: (n, n)`` when
    ``n < d`` (whichever is smaller), the squared row norms ``a = diag(K): (n,)`` and
    ``self_sq = ||Xc^T Xc||_F^2``.
    """

    shape: tuple[int, int]
    Xc: torch.Tensor | None
    K: torch.Tensor | None
    row_sq: torch.Tensor

    def gram(self) -> torch.Tensor:
        return self.K if self.K is not None else self.Xc @ self.Xc.T

    def to(self, device: torch.device) -> _LinearPrep:
        move = (lambda t: None if t is None else t.to(device))
        return _LinearPrep(self.shape, move(self.Xc), move(self.K), self.row_sq.to(device))


def _linear_prep(X: Any, name: str, min_rows: int = 2) -> _LinearPrep:
    Xc = centred_input(X, name, min_rows)
    n, d = Xc.shape
    row_sq = torch.einsum("nd,nd->n", Xc, Xc)  # no (n, d) temporary
    if n < d:
        return _LinearPrep((n, d), None, Xc @ Xc.T, row_sq)
    return _LinearPrep((n, d), Xc, None, row_sq)


def _cross_sq(px: _LinearPrep, py: _LinearPrep) -> torch.Tensor:
    """``||Xc^T Yc||_F^2 = tr(K L)``, in the cheaper of the two forms.

    Feature form ``O(n d1 d2)`` when both are stored as centred data (``n >= d1, d2``); Gram form
    ``sum(K * L)`` (``O(n^2)``, plus ``O(n^2 d)`` for a Gram not yet stored) as soon as one side
    has ``n < d``, where it is never more expensive.
    """
    if px.K is None and py.K is None:
        return torch.linalg.matrix_norm(px.Xc.T @ py.Xc).square()
    return (px.gram() * py.gram()).sum()


def _self_sq(p: _LinearPrep) -> torch.Tensor:
    """``||Xc^T Xc||_F^2`` in the cheaper form (``d x d`` or ``n x n``)."""
    M = p.K if p.K is not None else p.Xc.T @ p.Xc
    return torch.linalg.matrix_norm(M).square()


def _resampled_hsic(px: _LinearPrep, py: _LinearPrep,
                    resampling: TextResampling) -> np.ndarray:
    r"""``(B,)``: ``||C_b||_F^2`` for every bootstrap replicate, ``C_b`` the centred cross product
    of the replicate's rows (duplicates kept) with row weights ``w_b``, ``N_b = sum_i w_bi``.

    Feature form (both stored as ``Xc``): ``C_b = A_b - s_x s_y^T / N_b`` with
    ``A_b = sum_i w_bi x_i y_i^T`` and ``s_x = sum_i w_bi x_i`` (``TextResampling.cross`` and
    ``.sums``). Gram form (``n < d``): with ``K, L`` the centred Grams,
    ``||C_b||^2 = w^T (K*L) w - (2/N) sum_i w_i (Kw)_i (Lw)_i + (w^T K w)(w^T L w) / N^2``.
    """
    N = torch.as_tensor(resampling.sizes(), dtype=torch.float64, device=px.row_sq.device)
    if px.Xc is not None and py.Xc is not None:
        sx, sy = resampling.sums(px.Xc), resampling.sums(py.Xc)
        out = torch.zeros_like(N)
        for reps, cols, A in resampling.cross(px.Xc, py.Xc):
            C = A - sx[reps, :, None] * (sy[reps, cols] / N[reps, None])[:, None, :]
            out[reps] += C.square().sum(dim=(1, 2))
        return out.cpu().numpy()
    K, L = px.gram(), py.gram()
    W = torch.as_tensor(resampling.counts[:, resampling.units], dtype=torch.float64,
                        device=K.device)  # (B, n)
    KW, LW = W @ K, W @ L  # (B, n): rows (K w_b)^T, K symmetric
    hsic = ((W @ (K * L)) * W).sum(1) - 2 / N * (W * KW * LW).sum(1) \
        + (KW * W).sum(1) * (LW * W).sum(1) / N.square()
    return hsic.cpu().numpy()


def _check_grid(preps_x, preps_y, same_d: bool = False, why: str = "") -> None:
    """``check_pair`` for every pair of the grid (cheap: shapes only)."""
    for px in preps_x:
        for py in preps_y:
            check_pair(px, py, same_d=same_d, why=why)


def all_pairs_form(n: int, dims_x: list[int | None], dims_y: list[int | None]) -> str:
    r"""``"feature"`` or ``"gram"``: the cheaper way to get ``||Xc_i^T Yc_j||_F^2`` for all pairs.

    ``dims_x`` / ``dims_y``: the feature count of each prepared layer, or None where the layer
    was prepared as a Gram matrix (``n < d``; then the Gram form is used). Cost model in
    multiply-adds, with ``D_x = sum(dims_x)``, ``D_y = sum(dims_y)``, ``L_x, L_y`` the list lengths:

    * feature form, ``Xc_i^T Yc_j`` per pair: ``n D_x D_y``;
    * Gram form, upper-triangle row blocks of every ``K_i = Xc_i Xc_i^T`` (``n^2 d / 2`` each)
      and one ``(L_x, n^2) @ (n^2, L_y)`` inner-product product, counted twice for its memory
      traffic: ``n^2 (D_x + D_y) / 2 + n^2 L_x L_y``.

    For one pair with ``n >= d`` this always picks the feature form (as ``score`` does); for
    all-pairs grids it picks the Gram form once ``n`` is below about ``L d``.
    """
    if any(d is None for d in dims_x) or any(d is None for d in dims_y):
        return "gram"
    Dx, Dy = sum(dims_x), sum(dims_y)
    feature = n * Dx * Dy
    gram = n * n * (Dx + Dy) / 2 + n * n * len(dims_x) * len(dims_y)
    return "feature" if feature <= gram else "gram"


def _gram_rows(p: _LinearPrep, r0: int, r1: int, out: torch.Tensor) -> None:
    """Rows ``r0:r1``, columns ``r0:n`` of the centred Gram ``K`` into ``out: (r1-r0, n-r0)``."""
    if p.K is not None:
        out.copy_(p.K[r0:r1, r0:])
    else:
        torch.mm(p.Xc[r0:r1], p.Xc[r0:].T, out=out)


def _cross_sq_all(lx: list[_LinearPrep], ly: list[_LinearPrep], block_mb: float = 256.0,
                  selfs: list | None = None) -> torch.Tensor:
    """``C[i, j] = ||Xc_i^T Yc_j||_F^2 = <K_i, L_j>_F`` for every pair, float64 ``(Lx, Ly)``.

    ``selfs``: a list of ``Lx + Ly`` slots; in the Gram form each is set to
    ``||K_t||_F^2 = ||Xc_t^T Xc_t||_F^2`` from the Gram blocks at no extra product (left as
    given in the feature form).

    Feature form: per ``i``, one product ``Xc_i^T [Yc_j ...]`` against the ``Y`` layers
    concatenated in chunks of at most ``block_mb`` MB. Gram form: the Gram matrices are formed
    in row blocks of their upper triangle (``b`` rows, all layers of both sides in one buffer of
    at most ``block_mb`` MB, so never ``L n^2`` floats at once), and each block adds
    ``A @ B^T`` (``A: (Lx, b m)``, ``B: (Ly, b m)``) to ``C``, off-diagonal entries twice.
    """
    device = lx[0].row_sq.device
    ly = [p.to(device) for p in ly]
    n = lx[0].shape[0]
    Lx, Ly = len(lx), len(ly)
    budget = int(block_mb * 2**20) // 8
    C = torch.zeros((Lx, Ly), dtype=torch.float64, device=device)
    dims = ([None if p.K is not None else p.shape[1] for p in lx],
            [None if p.K is not None else p.shape[1] for p in ly])
    if all_pairs_form(n, *dims) == "feature":
        start = 0
        while start < Ly:  # chunks of Y layers whose concatenation fits the budget
            stop, width = start, 0
            while stop < Ly and (stop == start or (width + ly[stop].shape[1]) * n <= budget):
                width += ly[stop].shape[1]
                stop += 1
            Ycat = ly[start].Xc if stop == start + 1 else torch.cat(
                [p.Xc for p in ly[start:stop]], dim=1)
            bounds = np.cumsum([0] + [p.shape[1] for p in ly[start:stop]])
            for i, px in enumerate(lx):
                col_sq = (px.Xc.T @ Ycat).square_().sum(dim=0)
                for j in range(stop - start):
                    C[i, start + j] = col_sq[bounds[j]:bounds[j + 1]].sum()
            del Ycat
            start = stop
        return C
    # panel height: within the budget, and at most about n / 16 rows (at least 64): the GEMMs
    # also compute the lower half of each diagonal block, n^2 / (2 P) extra entries for P
    # panels, i.e. 1/P more than the upper triangle's n^2 / 2 (a GEMM of 64 rows and more
    # runs at the speed of a large one; thinner panels also keep the inner products in cache)
    rows = max(1, min(n, budget // ((Lx + Ly) * n), max(64, -(-n // 16))))
    buf = torch.empty((Lx + Ly) * rows * n, dtype=torch.float64, device=device)
    self_sq = torch.zeros(Lx + Ly, dtype=torch.float64, device=device)
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        b, m = r1 - r0, n - r0
        G = buf[:(Lx + Ly) * b * m].view(Lx + Ly, b, m)
        for t, p in enumerate(lx + ly):
            _gram_rows(p, r0, r1, G[t])
        A, B = G[:Lx].reshape(Lx, b * m), G[Lx:].reshape(Ly, b * m)
        C += 2 * (A @ B.T)
        diag = G[:, :, :b].reshape(Lx + Ly, b * b)  # the diagonal block was counted twice
        C -= diag[:Lx] @ diag[Lx:].T
        if selfs is not None:
            self_sq += 2 * torch.linalg.vector_norm(G.view(Lx + Ly, b * m), dim=1).square()
            self_sq -= torch.linalg.vector_norm(diag, dim=1).square()
    if selfs is not None:
        selfs[:] = self_sq.tolist()
    return C


@dataclass
class _CKAPrep:
    """``lin`` and the self term; for ``cka`` the self term ``||Xc^T Xc||_F^2`` is computed on
    first use (``score``), or taken from the Gram blocks by ``score_all``; likewise the self
    terms of the bootstrap replicates of one resampling (``resampled_self``)."""

    lin: _LinearPrep
    self_hsic: float | None
    _resampled: tuple = field(default=(None, None), repr=False)

    def resampled_self(self, resampling: TextResampling) -> np.ndarray:
        """``(B,)``: ``||C_b||_F^2`` of this layer against itself in every replicate."""
        if self._resampled[0] is not resampling:
            self._resampled = (resampling, _resampled_hsic(self.lin, self.lin, resampling))
        return self._resampled[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.lin.shape

    def self_term(self) -> float:
        if self.self_hsic is None:
            self.self_hsic = float(_self_sq(self.lin))
        return self.self_hsic


class LinearCKA(Metric):
    r"""Linear centred kernel alignment (Kornblith et al. 2019).

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K = XX^T``, ``L = YY^T``,
    ``HSIC = tr(KHLH) / (n-1)^2``, ``H = I - 11^T/n``; computed as
    ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` (feature form) or ``sum(Kc * Lc) /
    (||Kc||_F ||Lc||_F)`` (Gram form, used when ``n < d``), all in float64.

    ``X: (n, d1)``, ``Y: (n, d2)``. Range [0, 1]. Invariant to orthogonal maps, isotropic
    scaling, translation, feature permutation. Constant input: ``ValueError``.
    Cost: prepare O(n d min(n, d)), stores min(nd, n^2) float64; score O(n d1 d2) or O(n^2)
    (the self term ``||Xc^T Xc||_F^2`` is computed on first use and cached in the prepared
    object). All pairs: ``score_all``, feature or Gram form by ``all_pairs_form``.
    """

    name = "cka"
    long_name = "linear CKA"
    level = "geometry"
    invariances = ROTATION_FREE
    range = (0.0, 1.0)
    block_mb = 256.0  # working-buffer bound of score_all (an attribute, not a parameter)

    def prepare(self, X: Any, name: str = "X") -> _CKAPrep:
        return _CKAPrep(_linear_prep(X, name), None)  # self term: on first use

    def score(self, prep_x: _CKAPrep, prep_y: _CKAPrep) -> float:
        check_pair(prep_x, prep_y)
        cross = _cross_sq(prep_x.lin, prep_y.lin.to(prep_x.lin.row_sq.device))
        return float(cross) / math.sqrt(prep_x.self_term() * prep_y.self_term())

    def score_moments(self, moments: CrossMoments) -> float:
        """From streamed moments: ``||Cxy||_F^2 / (||Cxx||_F ||Cyy||_F)``."""
        cxx, cyy, cxy = moments.centred()
        denominator = torch.linalg.matrix_norm(cxx) * torch.linalg.matrix_norm(cyy)
        if denominator <= 0:
            raise ValueError("a representation is constant: linear CKA is undefined")
        return float(cxy.square().sum() / denominator)

    def score_all(self, preps_x: list[_CKAPrep], preps_y: list[_CKAPrep]) -> np.ndarray:
        """All pairs at once (see ``Metric.score_all``): the cross terms of every pair come from
        one stacked computation, feature or Gram form by ``all_pairs_form`` (a cost model in
        ``n``, the feature counts and the numbers of layers), in float64, with at most
        ``block_mb`` (256) MB of working buffers."""
        if not preps_x or not preps_y:
            return np.empty((len(preps_x), len(preps_y)))
        _check_grid(preps_x, preps_y)
        preps = list(preps_x) + list(preps_y)
        selfs = [p.self_hsic for p in preps]
        cross = _cross_sq_all([p.lin for p in preps_x], [p.lin for p in preps_y],
                              self.block_mb, selfs).cpu().numpy()
        for p, v in zip(preps, selfs):  # the Gram form gives the self terms for free
            if p.self_hsic is None and v is not None:
                p.self_hsic = v
        sx = np.array([p.self_term() for p in preps_x])
        sy = np.array([p.self_term() for p in preps_y])
        return cross / np.sqrt(sx[:, None] * sy[None, :])

    def score_resampled(self, prep_x: _CKAPrep, prep_y: _CKAPrep,
                        resampling: TextResampling) -> list[float]:
        """Every bootstrap replicate exactly, from weighted moments (see
        ``Metric.score_resampled``): ``HSIC_b = ||C_b||_F^2`` with the replicate's centred
        cross product ``C_b`` (:func:`_resampled_hsic`); the self terms are computed once
        per prepared layer and cached in it."""
        check_pair(prep_x, prep_y)
        py = prep_y.lin.to(prep_x.lin.row_sq.device)
        cross = _resampled_hsic(prep_x.lin, py, resampling)
        selfs = [p.resampled_self(resampling) for p in (prep_x, prep_y)]
        return (cross / np.sqrt(selfs[0] * selfs[1])).tolist()


def _unbiased_hsic(cross_sq: float, a: torch.Tensor, b: torch.Tensor) -> float:
    r"""``n (n - 3)`` times the unbiased HSIC of Song et al. (2012) for centred linear kernels.

    With ``K~ = K - diag(a)`` (zero diagonal), ``HSIC_1 * n(n-3) = tr(K~ L~) + 1^T K~ 1 1^T L~ 1 /
    ((n-1)(n-2)) - 2 (K~1)^T (L~1) / (n-2)``. For column-centred data ``K 1 = 0``, so
    ``K~1 = -a``, ``1^T K~ 1 = -sum(a)`` and ``tr(K~ L~) = ||Xc^T Yc||_F^2 - a.b``. (The
    estimator is translation invariant, so centring first changes nothing.)
    """
    n = a.shape[0]
    ab = float(a @ b)
    return cross_sq - ab + float(a.sum()) * float(b.sum()) / ((n - 1) * (n - 2)) - 2 * ab / (n - 2)


class DebiasedCKA(Metric):
    r"""Linear CKA with the unbiased HSIC estimator (Song et al. 2012; Nguyen et al. 2021).

    ``CKA_u = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L))`` with linear kernels; see
    ``_unbiased_hsic`` for the feature-space formula. Unlike ``cka`` it is close to 0 for
    independent data even when ``d >> n``. ``X: (n, d1)``, ``Y: (n, d2)``, ``n >= 4``.

    Range: about [-1, 1] (the estimator is not a bounded inner product; small negative values
    mean no dependence). ``ValueError`` if a self-HSIC estimate is not positive (tiny ``n``).
    Invariances as ``cka``. Cost: as ``cka``, plus O(n) for the row norms.
    """

    name = "cka_debiased"
    long_name = "debiased linear CKA"
    level = "geometry"
    invariances = ROTATION_FREE
    range = (-1.0, 1.0)
    block_mb = 256.0  # working-buffer bound of score_all (an attribute, not a parameter)

    def prepare(self, X: Any, name: str = "X") -> _CKAPrep:
        lin = _linear_prep(X, name, min_rows=4)
        h = _unbiased_hsic(float(_self_sq(lin)), lin.row_sq, lin.row_sq)
        if not h > 0:
            raise ValueError(f"{name}: the unbiased HSIC estimate of {name} with itself is {h:.3g} "
                             f"<= 0 (n={lin.shape[0]}); cka_debiased is undefined, use more samples")
        return _CKAPrep(lin, h)

    def score(self, prep_x: _CKAPrep, prep_y: _CKAPrep) -> float:
        check_pair(prep_x, prep_y)
        ly = prep_y.lin.to(prep_x.lin.row_sq.device)
        h = _unbiased_hsic(float(_cross_sq(prep_x.lin, ly)), prep_x.lin.row_sq, ly.row_sq)
        return h / math.sqrt(prep_x.self_hsic * prep_y.self_hsic)

    def score_all(self, preps_x: list[_CKAPrep], preps_y: list[_CKAPrep]) -> np.ndarray:
        """All pairs at once: the cross terms as ``cka.score_all``, the row-norm terms of the
        unbiased estimator as one ``(Lx, n) @ (n, Ly)`` product."""
        if not preps_x or not preps_y:
            return np.empty((len(preps_x), len(preps_y)))
        _check_grid(preps_x, preps_y)
        lx, ly = [p.lin for p in preps_x], [p.lin for p in preps_y]
        device = lx[0].row_sq.device
        cross = _cross_sq_all(lx, ly, self.block_mb).cpu().numpy()
        Ra = torch.stack([p.row_sq for p in lx])
        Rb = torch.stack([p.row_sq.to(device) for p in ly])
        ab = (Ra @ Rb.T).cpu().numpy()
        sa, sb = Ra.sum(dim=1).cpu().numpy(), Rb.sum(dim=1).cpu().numpy()
        n = lx[0].shape[0]
        h = cross - ab + sa[:, None] * sb[None, :] / ((n - 1) * (n - 2)) - 2 * ab / (n - 2)
        sx = np.array([p.self_hsic for p in preps_x])
        sy = np.array([p.self_hsic for p in preps_y])
        return h / np.sqrt(sx[:, None] * sy[None, :])
