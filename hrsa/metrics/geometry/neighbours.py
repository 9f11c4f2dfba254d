"""Local geometry: the overlap of the k nearest cosine neighbours of each row.

See :mod:`hrsa.metrics.geometry` for the family; ``X: (n, d1)``, ``Y: (n, d2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.stats import hypergeom

from .._util import as_matrix, centered, check_not_constant, check_pair, ieee_float32
from ..base import Metric

if TYPE_CHECKING:
    from ..weights import TextResampling

__all__ = ["KNNOverlap"]

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
