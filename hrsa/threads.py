"""One documented thread setting for CPU work: torch's intra-op threads and every
BLAS/OpenMP pool that numpy, scipy and scikit-learn use (through threadpoolctl).

On a busy host, oversubscribed threads (several pools each taking every core) run SVDs and
matrix products several times slower; ``n_threads=1`` on a shared 2-core runner is often
the fastest. ``compare``, ``trajectory`` and ``capture`` take ``n_threads=`` and apply it
for their duration only; the caller's settings are restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def limit_threads(n_threads: int | None) -> Iterator[None]:
    """Within the block, torch and every BLAS/OpenMP pool use at most ``n_threads``
    threads; None leaves everything as it is."""
    if n_threads is None:
        yield
        return
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        torch.set_num_threads(before)
