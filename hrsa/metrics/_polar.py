r"""The orthogonal factor of ``M: (D, D)`` through the eigendecomposition of ``M^T M``.

``procrustes_alignment`` needs the polar factor ``O = U V^T`` of a cross-covariance
``M = U S V^T``, split into its unique part on the rank-``r`` row space and bases of the two
null spaces: ``M = U_r S_r V_r^T``, ``O_r = U_r V_r^T``, ``U_0: (D, D-r)``, ``V_0: (D, D-r)``.
An SVD gives all of it; a symmetric eigendecomposition of ``G = M^T M = V S^2 V^T`` and a few
products give the same in about half the time (LAPACK's ``syevd`` against ``gesdd``).

Squaring ``M`` squares its condition number ``kappa``, so the eigenvectors alone give the
map only to about ``eps kappa^2``. :func:`polar_parts` therefore measures its own error,
corrects it to first order, and returns ``None`` (the caller then uses the SVD) whenever it
cannot certify the result:

1. ``M^T M = V diag(lam) V^T`` (``eigh``); ``B = M V`` and its column norms ``c``, which are the
   singular values to rounding ``eps s_max`` (``sqrt(lam)`` is only good to ``sqrt(eps) s_max``).
   Columns with ``c < NULL s_max`` are the candidate null space ``V_0``; the rest, with
   ``s = c``, the row space ``V_r``.
2. ``U~ = M V_r diag(1/s)`` is ``U_r`` up to the defect ``N = U~^T U~ - I`` (a product of unit
   columns, accurate to rounding). To first order in ``N`` the polar factor of ``M V_r`` is
   ``U~ (I + T)`` with ``T_ij = -N_ij s_i / (s_i + s_j)``; what remains is about
   ``5 |N|_F^2`` per entry (measured). If ``|N|_F > MAX_DEFECT``: ``None``.
3. Null space: with ``Z = diag(1/s) U_r^T M V_0``, ``V_0 - V_r Z`` is ``M``'s null space to
   first order (and ``V_r + V_0 Z^T`` its complement); the residual ``M V_0 - U_r U_r^T M V_0``
   has the ``D - r`` small singular values. Unless they are all below ``NULL_SHARE`` of numpy's
   rank tolerance ``s_max D eps`` (so the SVD's rank is the same): ``None``. ``U_0`` is an
   orthonormal basis of the complement of ``U_r`` (seeded random vectors, projected twice).

So the route answers where the rank is unambiguous and the row space is resolved: moderate
``kappa``, or a few isolated small singular values (each one only enters ``N`` through its own
column), and post-LayerNorm states whose null direction sits well apart (measured: the token
states of all-MiniLM-L6-v2 against a perturbed copy, at every layer but the last). It declines strongly anisotropic spectra, such as a few
"massive activation" features 1000x the rest, or feature scales falling as ``j^-1.5``: there
``|N|`` is 1e-4 to 1e-1. Further correction steps (measuring ``U^T U - I`` and the skew part of
``U^T M V_r`` each time) converge there in 2-4 steps, but on a CPU they cost more than the SVD
they would save (prototyped and measured; not kept). Cost: five ``D^3`` products and one
``eigh``, about 0.75x a float64 SVD on a CPU.
"""

from __future__ import annotations

import math

import torch

from ._util import rank_tolerance

NULL = 1e-8
"""Eigenvectors ``v`` with ``|M v| < NULL * s_max`` are candidates for the null space; the
others must be resolved to ``MAX_DEFECT``."""
MAX_DEFECT = 1e-5
"""Largest accepted ``|U~^T U~ - I|_F``: the corrected map is then off by at most about
``5e-10`` per entry."""
NULL_SHARE = 0.1
"""The null space's singular values must be below this share of ``s_max D eps``."""


def polar_parts(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(O_r: (D, D), U_0: (D, k), V_0: (D, k))`` of a float64 ``M: (D, D)`` with
    ``k = D - rank(M)`` (see the module docstring), or ``None`` where the eigendecomposition
    route cannot certify it (then use an SVD)."""
    if M.dtype != torch.float64 or not bool(torch.isfinite(M).all()):
        return None
    D = M.shape[0]
    try:
        V = torch.linalg.eigh(M.T @ M)[1]
    except torch.linalg.LinAlgError:  # did not converge: leave it to the SVD
        return None
    B = M @ V
    c = torch.linalg.vector_norm(B, dim=0)  # ~ the singular values, to rounding eps s_max
    s_max = float(c.max())
    if not 0 < s_max < math.inf:
        return None
    null = c < NULL * s_max
    k = int(null.sum())
    V0, Vr, s = V[:, null], V[:, ~null], c[~null]
    Ut = B[:, ~null] / s
    N = Ut.T @ Ut - torch.eye(D - k, dtype=M.dtype, device=M.device)
    if not float(torch.linalg.matrix_norm(N)) <= MAX_DEFECT:
        return None
    Ur = Ut - Ut @ (N * (s[:, None] / (s[:, None] + s[None, :])))
    if k == 0:
        return Ur @ Vr.T, Ur[:, :0], V0
    B0 = B[:, null]
    C = Ur.T @ B0  # (r, k)
    if not (float(torch.linalg.matrix_norm(B0 - Ur @ C, ord=2))
            < NULL_SHARE * rank_tolerance(s_max, D, M.dtype)):
        return None
    Z = C / s[:, None]  # V_0 + V_r (-Z) is the corrected null basis, V_r + V_0 Z^T the row basis
    Vr, V0 = Vr + V0 @ Z.T, torch.linalg.qr(V0 - Vr @ Z)[0]
    W = torch.randn(D, k, dtype=M.dtype, generator=torch.Generator().manual_seed(0))
    W = W.to(M.device)
    for _ in range(2):
        W = W - Ur @ (Ur.T @ W)
    return Ur @ Vr.T, torch.linalg.qr(W)[0], V0
