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
Modules: :mod:`.linear` (cka, cka_debiased), :mod:`.kernel` (cka_rbf), :mod:`.neighbours`
(knn_overlap), :mod:`.rdm` (rsa, geodesic), :mod:`.procrustes` (procrustes).
"""

from .kernel import RBFCKA
from .linear import DebiasedCKA, LinearCKA, all_pairs_form
from .neighbours import KNNOverlap
from .procrustes import Procrustes
from .rdm import RSA, Geodesic

__all__ = ["LinearCKA", "DebiasedCKA", "RBFCKA", "KNNOverlap", "RSA", "Procrustes", "Geodesic",
           "METRICS", "all_pairs_form"]

METRICS = (LinearCKA, DebiasedCKA, RBFCKA, KNNOverlap, RSA, Procrustes, Geodesic)
