"""The one seeded row subsample of hrsa: the metrics' ``max_samples`` and compare's
``max_tokens`` draw the same rows for the same ``(n, size, seed)``."""

from __future__ import annotations

import numpy as np

__all__ = ["subsample_indices"]


def subsample_indices(n: int, max_samples: int, seed: int) -> np.ndarray | None:
    """Sorted seeded subsample of ``max_samples`` of ``range(n)``, or None if ``n <= max_samples``
    (or ``max_samples <= 0``: no limit).

    Depends only on ``(n, max_samples, seed)``, so two representations of the same ``n`` inputs
    get the same rows.
    """
    if max_samples <= 0 or n <= max_samples:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_samples, replace=False))
