r"""Geometry-level metrics: do two spaces have the same shape?

Each metric here is invariant to orthogonal maps and isotropic scaling of either representation
and changes under anisotropic maps (the tests check both). ``X: (n, d1)``, ``Y: (n, d2)``; the
feature counts may differ.

Global geometry
  * ``cka``: linear CKA, ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` (= HSIC ratio with
    ``K = XX^T``, ``L = YY^T``). Range [0, 1].
  * ``cka_debiased``: linear CKA with the unbiased HSIC estimator (Song et al. 2012; Nguyen et
    al. 2021). Near 0 for independent inputs even when ``d >> n``.
  * ``cka_rbf``: CKA with RBF kernels, bandwidth ``sigma`` times the median pairwise distance.
  * ``procrustes``: orthogonal Procrustes similarity, the nuclear norm of ``Xc^T Yc`` after
    Frobenius normalisation (or its angular distance).
  * ``rsa``: Spearman (or Pearson) correlation of the two representational dissimilarity matrices.
Local geometry
  * ``knn_overlap``: mean Jaccard overlap of the k nearest cosine neighbours of each row.
  * ``geodesic``: Spearman correlation of geodesic (k-NN graph shortest-path) distances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components, shortest_path
from scipy.spatial.distance import pdist, squareform
from scipy.stats import hypergeom, rankdata
from sklearn.neighbors import kneighbors_graph

from ._util import (as_matrix, centered, centred_input, check_not_constant, check_pair,
                    ieee_float32, warn)
from .base import Metric
from .subsample import subsample_indices

if TYPE_CHECKING:
    from .moments import CrossMoments
    from .weights import TextResampling

__all__ = ["LinearCKA", "DebiasedCKA", "RBFCKA", "KNNOverlap", "RSA", "Procrustes", "Geodesic",
           "METRICS"]

_ROTATION_FREE = frozenset({"orthogonal", "isotropic_scaling", "translation", "permutation"})


# ----------------------------------------------------------------------------- linear kernels
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
    invariances = _ROTATION_FREE
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
    invariances = _ROTATION_FREE
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


# ----------------------------------------------------------------------------- RBF kernel
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
    invariances = _ROTATION_FREE
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


# ----------------------------------------------------------------------------- k-NN overlap
@dataclass
class _NeighbourPrep:
    """Indices of each row's nearest neighbours, most similar first: ``idx: (n, k_max)``."""

    idx: torch.Tensor
    shape: tuple[int, int]


def _nearest_lowest_index_first(S: torch.Tensor, v: torch.Tensor, i: torch.Tensor,
                                k: int) -> torch.Tensor:
    """``(b, k)``: the ``k`` nearest columns of each row of ``S: (b, m)``, most similar first
    and, among equal similarities, the lower column index first.

    ``v, i: (b, k or k + 1)`` are the row's top values and indices from ``torch.topk``, whose
    order among equal values is implementation-defined (it differs between devices and with
    the rest of the row). With ``k + 1`` of them, a tie across the ``k``-th place shows as
    ``v[:, k - 1] == v[:, k]``; those rows keep their values above the tie and take the tied
    columns of lowest index (one pass over those rows of ``S``: ``nonzero`` lists a row's
    tied columns in ascending order). Every row is then ordered by (similarity descending,
    index ascending), so that each prefix ``[:k']`` is a well-defined k'-NN set too.
    """
    i = i[:, :k].clone()
    if v.shape[1] > k:
        rows = (v[:, k - 1] == v[:, k]).nonzero().squeeze(1)
        if rows.numel():
            t = v[rows, k - 1]
            above = (v[rows, :k] > t[:, None]).sum(dim=1)  # these come first in v
            r, col = (S[rows] == t[:, None]).nonzero().unbind(1)  # row-major, columns ascending
            counts = torch.bincount(r, minlength=rows.numel())
            rank = torch.arange(r.numel(), device=S.device) - (counts.cumsum(0) - counts)[r]
            keep = rank < (k - above)[r]
            i[rows[r[keep]], above[r[keep]] + rank[keep]] = col[keep]
    i = i.sort(dim=1).values
    values = S.gather(1, i)
    return i.gather(1, values.sort(dim=1, descending=True, stable=True).indices)


class KNNOverlap(Metric):
    r"""Mean Jaccard overlap of cosine k-nearest-neighbour sets.

    For each row ``i``, ``A_i`` (``B_i``) is the set of the ``k`` rows most cosine-similar to row
    ``i`` in ``X`` (``Y``), excluding ``i`` itself; the score is
    ``mean_i |A_i & B_i| / |A_i | B_i|``. Rows are used as given (the paper's choice) or
    column-centred first (``center=True``).

    ``k`` is an int (score: a float) or a tuple such as ``(5, 10, 50)`` (score: a dict with keys
    ``"k=5"``, ... and ``"similarity"`` = the value at the first k; ``dims = {"k": k}``).

    Computed blockwise: the similarity matrix is formed ``b`` rows at a time (``b x n`` with
    ``b * n * itemsize <= block_mb`` MB) and only the top-k indices are kept, so memory is
    O(n k + block) and never n x n. Equal similarities are ordered by row index, the lower
    first, so that tied neighbours (duplicate rows: repeated texts, a token's embedding-layer
    row, a prefix shared by many texts under causal attention) are chosen the same way in X
    and Y and on every device. Similarities are
    computed in the input's precision (float32 for float32 input), in full IEEE float32 on a
    GPU even where TF32 is enabled globally.

    ``X: (n, d1)``, ``Y: (n, d2)``, ``k < n``. Range [0, 1]; chance ``E[I / (2k - I)]`` with
    ``I ~ Hypergeom(n - 1, k, k)`` (about ``k / (2(n-1))`` for small ``k/n``). Invariant to
    orthogonal maps, isotropic scaling and feature permutation; to translation only with
    ``center=True``. An all-zero row (cosine undefined): ``ValueError``.
    Cost: prepare O(n^2 d) time; score O(n k log k).
    """

    name = "knn_overlap"
    long_name = "k-NN Jaccard overlap"
    level = "geometry"
    range = (0.0, 1.0)

    def __init__(self, k: int | tuple[int, ...] = 10, center: bool = False,
                 block_mb: float = 128.0) -> None:
        ks = (k,) if isinstance(k, (int, np.integer)) else tuple(k)
        if not ks or not all(isinstance(x, (int, np.integer)) and x >= 1 for x in ks):
            raise ValueError(f"k must be a positive int or a non-empty tuple of them, got {k!r}")
        if not block_mb > 0:
            raise ValueError(f"block_mb must be > 0, got {block_mb!r}")
        self.ks = tuple(int(x) for x in ks)
        self.multi = not isinstance(k, (int, np.integer))
        self.center = bool(center)
        self.block_mb = float(block_mb)
        self.dims = {"k": self.ks} if self.multi else {}
        self.invariances = (frozenset({"orthogonal", "isotropic_scaling", "permutation"})
                            | ({"translation"} if self.center else set()))

    def params(self) -> dict[str, Any]:
        return {"k": list(self.ks) if self.multi else self.ks[0], "center": int(self.center),
                "block_mb": self.block_mb}

    def prepare(self, X: Any, name: str = "X") -> _NeighbourPrep:
        X = as_matrix(X, name)
        n = X.shape[0]
        k_max = max(self.ks)
        if k_max >= n:
            raise ValueError(f"k={k_max} must be < n={n} (rows of {name}); a row has n-1 neighbours")
        if self.center:
            Xc = centered(X)
            check_not_constant(Xc, X, name)
            X = Xc.to(X.dtype)
        norms = torch.linalg.vector_norm(X, dim=1, keepdim=True)
        zero = int((norms == 0).sum())
        if zero:
            raise ValueError(f"{name} has {zero} all-zero rows; their cosine neighbours are undefined")
        Z = X / norms
        rows = min(n, max(1, int(self.block_mb * 2**20 // (n * Z.element_size()))))
        idx = torch.empty((n, k_max), dtype=torch.int64, device=Z.device)
        # one past the k-th place (to see a tie across it), unless every other row is kept
        kept = min(k_max + 1, n - 1)
        # one similarity block and one top-k buffer pair, reused (no fresh pages per block)
        block = torch.empty(rows * n, dtype=Z.dtype, device=Z.device)
        top = torch.empty(rows * kept, dtype=Z.dtype, device=Z.device)
        top_idx = torch.empty(rows * kept, dtype=torch.int64, device=Z.device)
        with ieee_float32():
            for start in range(0, n, rows):
                stop = min(start + rows, n)
                S = torch.mm(Z[start:stop], Z.T, out=block[:(stop - start) * n].view(-1, n))
                S[:, start:stop].diagonal().fill_(-torch.inf)  # a row is not its own neighbour
                v, i = (top[:(stop - start) * kept].view(-1, kept),
                        top_idx[:(stop - start) * kept].view(-1, kept))
                torch.topk(S, kept, dim=1, out=(v, i))
                idx[start:stop] = _nearest_lowest_index_first(S, v, i, k_max)
        return _NeighbourPrep(idx, tuple(X.shape))

    def score(self, prep_x: _NeighbourPrep, prep_y: _NeighbourPrep) -> float | dict[str, float]:
        return self._result(self._row_jaccard(prep_x, prep_y).mean(dim=0).tolist())

    def score_resampled(self, prep_x: _NeighbourPrep, prep_y: _NeighbourPrep,
                        resampling: TextResampling) -> list[float | dict[str, float]]:
        """Replicate ``b``: the mean of the rows' Jaccard indices weighted by how often
        their text was drawn, ``sum_i w_bi J_i / N_b``, with the FULL sample's neighbour
        sets. This is not the score recomputed on the replicate's rows (there a duplicated
        text's rows are each other's nearest neighbours, which inflates the overlap): the
        interval holds the neighbour sets fixed and captures which texts are averaged,
        not how the neighbour sets would change with the sample (docs/uncertainty.md)."""
        J = self._row_jaccard(prep_x, prep_y)  # (n, len(ks))
        N = torch.as_tensor(resampling.sizes(), dtype=torch.float64, device=J.device)
        means = resampling.sums(J) / N[:, None]
        return [self._result(row) for row in means.tolist()]

    def _row_jaccard(self, prep_x: _NeighbourPrep, prep_y: _NeighbourPrep) -> torch.Tensor:
        """``(n, len(ks))`` float64: ``|A_i & B_i| / |A_i | B_i|`` of every row at every k."""
        check_pair(prep_x, prep_y)
        iy = prep_y.idx.to(prep_x.idx.device)
        out = []
        for k in self.ks:
            both = torch.cat([prep_x.idx[:, :k], iy[:, :k]], dim=1).sort(dim=1).values
            inter = (both[:, 1:] == both[:, :-1]).sum(dim=1).to(torch.float64)
            out.append(inter / (2 * k - inter))
        return torch.stack(out, dim=1)

    def _result(self, values: list[float]) -> float | dict[str, float]:
        """``score``'s format for one value per k: a float, or a dict keyed ``"k=..."``."""
        if not self.multi:
            return values[0]
        out = {f"k={k}": v for k, v in zip(self.ks, values)}
        return {**out, "similarity": values[0]}

    def chance(self, d: int | None = None, n: int | None = None, k: int | None = None) -> float:
        """Expected Jaccard of two independent uniform k-subsets of the ``n - 1`` other rows.

        ``I = |A & B| ~ Hypergeom(M=n-1, K=k, N=k)``, so the floor is ``sum_i P(I=i) i / (2k - i)``
        (exact). ``k`` defaults to this metric's first k.
        """
        k = self.ks[0] if k is None else int(k)
        if n is None or not 1 <= k < n:
            raise ValueError(f"chance('knn_overlap') needs n > k >= 1, got n={n!r}, k={k!r}")
        i = np.arange(k + 1)
        return float((hypergeom(n - 1, k, k).pmf(i) * i / (2 * k - i)).sum())


# ----------------------------------------------------------------------------- RDM-based
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
    "euclidean": _ROTATION_FREE,
    "sqeuclidean": _ROTATION_FREE,
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
    invariances = _ROTATION_FREE
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


# ----------------------------------------------------------------------------- Procrustes
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
    invariances = _ROTATION_FREE

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


METRICS = (LinearCKA, DebiasedCKA, RBFCKA, KNNOverlap, RSA, Procrustes, Geodesic)
