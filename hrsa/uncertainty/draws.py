"""Which texts each replicate draws: text-level bootstrap and permutation indices, BCa's
jackknife groups, the probe's stratified resamples, each on its own seed stream.

``units: (n_rows,)`` is the text of each row (coord ``text`` at token level, the row itself
for pooled rows, :func:`row_units`); a resample draws whole texts.
"""

from __future__ import annotations

import hashlib

import numpy as np
import xarray as xr

from ..metrics.weights import TextResampling

__all__ = ["rows_by_unit", "row_units", "bootstrap_indices", "bootstrap_draws",
           "permutation_indices", "units_hash", "jackknife_resampling",
           "stratified_resampling", "JACKKNIFE_GROUPS"]

# seed streams, apart from the row subsample's
_BOOT_STREAM, _PERM_STREAM, _STRATA_STREAM, _JACK_STREAM = 0xB007, 0x9E53, 0x5717, 0x7ACC

JACKKNIFE_GROUPS = 100  # at most this many leave-group-out replicates for BCa


def rows_by_unit(units: np.ndarray) -> list[np.ndarray]:
    """Row indices of each unit (text), units in sorted order, rows in stored order."""
    units = np.asarray(units)
    _, inverse = np.unique(units, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    return np.split(order, np.cumsum(counts)[:-1])


def row_units(da: xr.DataArray) -> np.ndarray:
    """The text of each row: coord ``text`` at token level, the row itself when pooled."""
    row_dim = da.dims[1]
    if row_dim == "sample":
        return np.arange(da.sizes["sample"])
    if "text" not in da.coords:
        raise ValueError("token-level activations need a 'text' coord (the source text of "
                         "each row, as hrsa.capture writes it) to resample or permute texts")
    return np.asarray(da["text"].values)


def bootstrap_indices(units: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_boot`` text-level bootstrap resamples.

    ``units: (n_rows,)`` is the text of each row (coord ``text`` at token level, or
    ``arange(n)`` for pooled rows). Each resample draws as many texts as there are, with
    replacement, and concatenates the rows of the drawn texts (duplicates kept). The draws
    depend only on ``seed`` and the number of texts, so two comparisons on the same rows
    get the same resamples (what :func:`difference` relies on).
    """
    groups = rows_by_unit(units)
    return [np.concatenate([groups[u] for u in draw])
            for draw in bootstrap_draws(len(groups), n_boot, seed)]


def bootstrap_draws(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_units)``: the units (texts, in sorted order) drawn by each resample."""
    rng = np.random.default_rng([int(seed), _BOOT_STREAM])
    return rng.integers(0, n_units, size=(n_boot, n_units))


def permutation_indices(units: np.ndarray, n_perm: int,
                        seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(rows_a, rows_b)`` of ``n_perm`` text-level permutations: text ``i``'s rows in a
    against text ``pi(i)``'s rows in b, both cut to the shorter of the two (position
    aligned). With one row per text this is a plain permutation of b's rows."""
    groups = rows_by_unit(units)
    rng = np.random.default_rng([int(seed), _PERM_STREAM])
    out = []
    for _ in range(n_perm):
        perm = rng.permutation(len(groups))
        keep = [min(len(groups[i]), len(groups[j])) for i, j in enumerate(perm)]
        rows_a = np.concatenate([groups[i][:m] for i, m in enumerate(keep)])
        rows_b = np.concatenate([groups[j][:m] for j, m in zip(perm, keep)])
        out.append((rows_a, rows_b))
    return out


def units_hash(units: np.ndarray) -> str:
    """A short hash of the row -> text layout, to check two comparisons share their rows."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(units, dtype=np.int64)).tobytes()
                          ).hexdigest()[:16]


def jackknife_resampling(units: np.ndarray, seed: int,
                         groups: int = JACKKNIFE_GROUPS) -> TextResampling:
    """Leave-one-group-out replicates for BCa's acceleration: the texts of ``units: (n,)``
    are dealt into ``min(groups, m)`` groups in a seeded random order, and replicate ``g``
    keeps every text but group ``g`` (weight 1, group ``g`` weight 0)."""
    _, codes = np.unique(np.asarray(units), return_inverse=True)
    m = int(codes.max()) + 1
    g = min(int(groups), m)
    group = np.empty(m, dtype=np.int64)
    group[np.random.default_rng([int(seed), _JACK_STREAM]).permutation(m)] = np.arange(m) % g
    return TextResampling(codes, (group[None, :] != np.arange(g)[:, None]).astype(float))


def stratified_resampling(strata: np.ndarray, n_boot: int, seed: int) -> TextResampling:
    """``n_boot`` resamples of ``n`` texts, each stratum's texts drawn with replacement
    within the stratum (so every stratum keeps its size), as a
    :class:`~hrsa.metrics.weights.TextResampling` with one row per text.

    ``strata: (n,)`` labels (the probe: split and class). ValueError naming the stratum if
    one has fewer than 2 texts (a resample of one text has no variability).
    """
    strata = np.asarray(strata)
    names, codes = np.unique(strata, return_inverse=True)
    sizes = np.bincount(codes)
    if (sizes < 2).any():
        small = {str(names[i]): int(sizes[i]) for i in np.flatnonzero(sizes < 2)}
        raise ValueError(f"a stratified resample needs at least 2 texts per stratum; these "
                         f"have fewer: {small}. Use more texts (or fewer classes)")
    rng = np.random.default_rng([int(seed), _STRATA_STREAM])
    counts = np.zeros((n_boot, strata.size))
    for code in range(len(names)):
        rows = np.flatnonzero(codes == code)
        drawn = rows[rng.integers(0, rows.size, size=(n_boot, rows.size))]
        np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1.0)
    return TextResampling(np.arange(strata.size), counts)
