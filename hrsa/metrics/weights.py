r"""Replicate statistics of text-level bootstrap resamples, from per-text sums.

A text-level bootstrap replicate draws the ``m`` texts with replacement; text ``t`` appears
``u_t`` times (``u``: one row of ``counts``, summing to ``m``) and brings all its rows each
time. Row ``i`` of text ``t(i)`` therefore enters the replicate with weight ``w_i = u_{t(i)}``,
and any statistic that is a sum over rows is a weighted sum over the full rows:

* ``sums(V)``: ``sum_i w_i v_i = u^T T^T V`` (``T``: the ``(n, m)`` text indicator), i.e. the
  per-text sums ``T^T V: (m, c)`` computed once, then one ``(B, m) @ (m, c)`` product for all
  replicates;
* ``cross(X, Y)``: ``A = sum_i w_i x_i y_i^T = sum_t u_t X_t^T Y_t``, the per-text cross
  products ``S_t = X_t^T Y_t`` (``O(n d1 d2)`` once, texts padded to a common length in
  blocks of similar lengths) contracted with the counts (``O(B m d1 d2)``), instead of
  ``O(B n d1 d2)`` for ``B`` weighted products over the rows.

Weighted centring then gives the centred cross product of a replicate,
``C = A - s_x s_y^T / N`` with ``s_x = sums(X)``, ``N = sum_i w_i``: exactly what the metric
computes on the replicate's concatenated rows (duplicates kept), to rounding. Metrics use it
through ``Metric.score_resampled`` (linear CKA, dimension correlation, procrustes_alignment,
k-NN overlap); the others are recomputed on the resampled rows.

Public API: :class:`TextResampling`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["TextResampling"]


@dataclass(eq=False)
class TextResampling:
    """``B`` text-level bootstrap replicates of ``n`` rows grouped into ``m`` texts.

    Attributes:
        units: ``(n,)`` int64, the text of each row as a code in ``0 .. m-1``.
        counts: ``(B, m)`` float64, how many times replicate ``b`` drew text ``t``.
        block_mb: working-buffer bound of :meth:`cross`, in MB.
    """

    units: np.ndarray
    counts: np.ndarray
    block_mb: float = 256.0
    _layout: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.units = np.asarray(self.units, dtype=np.int64)
        self.counts = np.asarray(self.counts, dtype=np.float64)
        m = self.counts.shape[1]
        if self.units.ndim != 1 or self.counts.ndim != 2:
            raise ValueError(f"units must be (n,) and counts (B, m), got {self.units.shape} "
                             f"and {self.counts.shape}")
        if self.units.size and (self.units.min() < 0 or self.units.max() >= m):
            raise ValueError(f"units must be text codes in 0..{m - 1}")

    @classmethod
    def from_draws(cls, units: np.ndarray, draws: np.ndarray, **kwargs) -> TextResampling:
        """From ``units: (n,)`` (any text labels) and ``draws: (B, m)``, the indices of the
        drawn texts in sorted-label order (as :func:`hrsa.uncertainty.bootstrap_indices`
        draws them)."""
        _, codes = np.unique(np.asarray(units), return_inverse=True)
        m = int(codes.max()) + 1 if codes.size else 0
        counts = np.stack([np.bincount(d, minlength=m) for d in np.asarray(draws)])
        return cls(codes, counts, **kwargs)

    @property
    def n_replicates(self) -> int:
        return self.counts.shape[0]

    @property
    def n_texts(self) -> int:
        return self.counts.shape[1]

    def _counts(self, device: torch.device) -> torch.Tensor:
        return torch.as_tensor(self.counts, dtype=torch.float64, device=device)

    def text_sums(self, V: torch.Tensor) -> torch.Tensor:
        """``T^T V: (m, c)``, the sum of each text's rows of ``V: (n, c)`` (float64)."""
        V = V.to(torch.float64)
        out = torch.zeros((self.n_texts,) + tuple(V.shape[1:]), dtype=torch.float64,
                          device=V.device)
        return out.index_add_(0, torch.as_tensor(self.units, device=V.device), V)

    def sums(self, V: torch.Tensor) -> torch.Tensor:
        """``(B, c)``: the weighted row sums ``sum_i w_bi v_i`` of ``V: (n, c)`` in every
        replicate (float64)."""
        sums = self.text_sums(V)
        return self._counts(V.device) @ sums.reshape(self.n_texts, -1)

    def sizes(self) -> np.ndarray:
        """``(B,)``: the number of rows of each replicate, ``N_b = sum_i w_bi``."""
        return self.counts @ np.bincount(self.units, minlength=self.n_texts)

    def cross(self, X: torch.Tensor, Y: torch.Tensor, *,
              all_columns: bool = False) -> Iterator[tuple[slice, slice, torch.Tensor]]:
        """Blocks of the weighted cross products ``A_b = sum_i w_bi x_i y_i^T``.

        ``X: (n, d1)``, ``Y: (n, d2)``, float64. Yields ``(reps, cols, A)`` with
        ``A: (len(reps), d1, len(cols))`` = ``A_b[:, cols]`` for ``b`` in ``reps``, covering
        every replicate and column once. Blocks keep ``A`` and the per-text products under
        ``block_mb``: by columns of ``Y`` (all replicates at once), or, with
        ``all_columns=True`` (for a caller that needs whole matrices, e.g. an SVD), by
        replicates. Each block recomputes the per-text products of its columns, so the
        total cost is ``O(n d1 d2)`` per replicate block plus ``O(B m d1 d2)``.
        """
        n, d1 = X.shape
        d2 = Y.shape[1]
        budget = max(1, int(self.block_mb * 2**20 // 8))  # float64 entries
        B = self.n_replicates
        if all_columns:
            rep_block, col_block = max(1, min(B, budget // (d1 * d2))), d2
        else:
            rep_block, col_block = B, max(1, min(d2, budget // (B * d1)))
        counts = self._counts(X.device)
        for r0 in range(0, B, rep_block):
            reps = slice(r0, min(r0 + rep_block, B))
            for c0 in range(0, d2, col_block):
                cols = slice(c0, min(c0 + col_block, d2))
                yield reps, cols, self._contract(X, Y[:, cols], counts[reps], budget)

    def _contract(self, X: torch.Tensor, Y: torch.Tensor, counts: torch.Tensor,
                  budget: int) -> torch.Tensor:
        """``(b, d1, c)``: ``sum_t counts[:, t] X_t^T Y_t``, texts padded in length blocks."""
        d1, c = X.shape[1], Y.shape[1]
        A = torch.zeros((counts.shape[0], d1 * c), dtype=torch.float64, device=X.device)
        X0 = torch.cat([X, X.new_zeros(1, d1)])  # row n: the padding row, zero
        Y0 = torch.cat([Y, Y.new_zeros(1, c)])
        for texts, index in self._padded_blocks(budget, d1 + c, d1 * c):
            idx = torch.as_tensor(index, device=X.device)
            S = torch.bmm(X0[idx].transpose(1, 2), Y0[idx])  # (k, d1, c)
            A.addmm_(counts[:, torch.as_tensor(texts, device=X.device)], S.reshape(len(texts), -1))
        return A.reshape(-1, d1, c)

    def _padded_blocks(self, budget: int, width: int,
                       product: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Texts in blocks of similar length: ``(texts (k,), row index (k, L))``, rows
        padded with ``n`` (the zero row), each block's padded rows ``k L width`` and
        products ``k product`` within ``budget`` entries, lengths within 25% (+1) of the
        block's shortest so that padding wastes little of the product."""
        key = (budget, width, product)
        if key not in self._layout:
            n = self.units.size
            order = np.argsort(self.units, kind="stable")
            lengths = np.bincount(self.units, minlength=self.n_texts)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            by_length = np.argsort(lengths, kind="stable")
            blocks, t0 = [], 0
            while t0 < len(by_length):
                L = max(1, int(lengths[by_length[t0]]))
                k = 1
                while t0 + k < len(by_length):
                    L2 = max(L, int(lengths[by_length[t0 + k]]))
                    if (k + 1) * max(L2 * width, product) > budget or 4 * L2 > 5 * L + 4:
                        break  # over budget, or over 25% padding for the shortest text
                    k, L = k + 1, L2
                texts = by_length[t0:t0 + k]
                index = np.full((k, L), n, dtype=np.int64)
                for row, t in enumerate(texts):
                    index[row, :lengths[t]] = order[starts[t]:starts[t] + lengths[t]]
                blocks.append((texts, index))
                t0 += k
            self._layout[key] = blocks
        return self._layout[key]
