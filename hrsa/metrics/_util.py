"""Input validation and conversion shared by the metrics (private).

Every metric receives ``X: (n, d)`` as a torch tensor (any device) or a numpy array. These helpers
turn it into a torch tensor on the caller's device, check it (2-D, finite, enough rows, not
constant), centre it in float64, and check that two prepared representations can be compared.
Errors are ``TypeError`` / ``ValueError`` whose message starts with the argument's name.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "ROTATION_FREE",
    "as_matrix",
    "centered",
    "check_not_constant",
    "check_pair",
    "ieee_float32",
    "warn",
]

# the invariances of the geometry-level metrics that see the whole shape
ROTATION_FREE = frozenset({"orthogonal", "isotropic_scaling", "translation", "permutation"})


def as_matrix(X: Any, name: str = "X", min_rows: int = 2) -> torch.Tensor:
    """Validate ``X: (n, d)`` and return it as a floating torch tensor on its own device.

    numpy arrays are wrapped without a copy where possible; integer and boolean inputs become
    float64, half precision becomes float32. Raises ``TypeError`` for other types and
    ``ValueError`` for a wrong number of dimensions, fewer than ``min_rows`` rows, no columns or
    non-finite entries (the message says how many).
    """
    if isinstance(X, np.ndarray):
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
            raise TypeError(f"{name} must hold numbers, got numpy dtype {X.dtype}")
        X = torch.from_numpy(np.ascontiguousarray(X))
    elif not isinstance(X, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(X).__name__}")
    X = X.detach()
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(X.shape)}")
    n, d = X.shape
    if n < min_rows:
        raise ValueError(f"{name} has {n} rows; this metric needs at least {min_rows}")
    if d < 1:
        raise ValueError(f"{name} has no columns (shape {tuple(X.shape)})")
    if X.is_complex():
        raise TypeError(f"{name} must be real, got dtype {X.dtype}")
    if not X.is_floating_point():
        X = X.to(torch.float64)
    elif X.dtype in (torch.float16, torch.bfloat16):
        X = X.to(torch.float32)
    # a NaN or inf entry makes the sum non-finite, so one reduction clears finite input; the
    # entries are counted only when the sum is not finite (or overflowed)
    if not bool(torch.isfinite(X.sum())):
        bad = int((~torch.isfinite(X)).sum())
        if bad:
            raise ValueError(f"{name} has {bad} non-finite entries (NaN or inf) out of {n * d}")
    return X


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """float32 matrix products in full IEEE precision inside the block, whatever the global
    setting (``torch.set_float32_matmul_precision("high")`` or ``allow_tf32 = True`` make
    CUDA use TF32, a 10-bit mantissa that reorders near-tied neighbours); the setting is
    restored on exit."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def centered(X: torch.Tensor) -> torch.Tensor:
    """Column-centred copy of ``X: (n, d)`` in float64: ``Xc = X - 1 mean(X, 0)`` (one new
    float64 buffer: the conversion's copy is centred in place)."""
    X64 = X.to(torch.float64)
    mean = X64.mean(dim=0, keepdim=True)
    return X64 - mean if X64 is X else X64.sub_(mean)


def rank_tolerance(s_max: float, size: int, dtype: torch.dtype) -> float:
    """numpy's ``matrix_rank`` tolerance ``s_max * size * eps`` (``size``: the larger side of
    the matrix): singular values at or below it count as zero."""
    return s_max * size * torch.finfo(dtype).eps


def centred_input(X: Any, name: str, min_rows: int = 2) -> torch.Tensor:
    """``X`` validated (:func:`as_matrix`), column-centred in float64 (:func:`centered`) and
    checked not constant (:func:`check_not_constant`): the common first step of
    ``prepare``."""
    X = as_matrix(X, name, min_rows)
    Xc = centered(X)
    check_not_constant(Xc, X, name)
    return Xc


def check_not_constant(Xc: torch.Tensor, X: torch.Tensor, name: str) -> None:
    """Raise if the centred ``Xc`` is zero up to rounding, i.e. every row of ``X`` is the same."""
    scale = float(torch.linalg.vector_norm(X))  # X's precision is plenty for a threshold
    if not 0 < scale < math.inf:  # over- or underflowed in float32 (or X is 0): in float64
        scale = float(torch.linalg.vector_norm(X.to(torch.float64)))
    if float(torch.linalg.vector_norm(Xc)) <= 1e-12 * max(scale, 1e-300):
        raise ValueError(
            f"{name} is constant (all {X.shape[0]} rows equal, zero variance after centring); "
            "the similarity is undefined"
        )


def check_pair(px: Any, py: Any, same_d: bool = False, why: str = "") -> None:
    """Check that two prepared representations (anything with ``.shape = (n, d)``) match.

    Same number of rows always; same number of columns when ``same_d`` (``why`` says which
    metric needs it).
    """
    sx, sy = tuple(px.shape), tuple(py.shape)
    if sx[0] != sy[0]:
        raise ValueError(
            f"X has shape {sx} and Y has shape {sy}: both must have the same number of rows n "
            "(the same inputs in the same order)"
        )
    if same_d and sx[1] != sy[1]:
        raise ValueError(
            f"X has shape {sx} and Y has shape {sy}: {why or 'this metric'} needs the same "
            "number of features d1 == d2"
        )


def warn(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """Emit a warning attributed to the caller of the metric (not to this module)."""
    warnings.warn(message, category, stacklevel=4)
