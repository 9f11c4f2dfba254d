"""``Metric.score_all`` equals the per-pair ``score`` for every pair (float64, 1e-10)."""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from sklearn.neighbors import NearestNeighbors

from hrsa.metrics import Metric, get, register
from hrsa.metrics.geometry import all_pairs_form
from hrsa.metrics.registry import _REGISTRY

TOL = 1e-10


def _stack(rng: np.random.Generator, L: int, n: int, dims) -> list[np.ndarray]:
    """L layers sharing a latent, so scores are spread over their range."""
    latent = rng.standard_normal((n, 4))
    dims = dims if isinstance(dims, (list, tuple)) else [dims] * L
    return [latent @ rng.standard_normal((4, d)) + 0.7 * rng.standard_normal((n, d)) for d in dims]


def _loop(metric: Metric, px: list, py: list) -> np.ndarray:
    return np.array([[metric.score(a, b) for b in py] for a in px])


def _check(metric: Metric, Xs: list, Ys: list) -> np.ndarray:
    # the loop on its own preparations (score_all may cache terms in the ones it is given)
    ref = _loop(metric, [metric.prepare(X) for X in Xs], [metric.prepare(Y) for Y in Ys])
    px = [metric.prepare(X) for X in Xs]
    py = [metric.prepare(Y) for Y in Ys]
    got = metric.score_all(px, py)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    assert got.shape == (len(Xs), len(Ys))
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(_loop(metric, px, py), ref, rtol=0, atol=TOL)
    return got


# (n, dims_x, dims_y): which form the cost model picks, and how each layer was prepared
CKA_CASES = {
    "feature (n large)": (200, [6, 8, 5], [7, 6, 6, 4]),
    "gram, all prepared as features (n < L d)": (30, [12, 16, 10], [14, 12, 12, 9]),
    "gram, all prepared as Gram (n < d)": (12, [20, 30], [25, 16, 18]),
    "gram, mixed preparations": (20, [8, 30, 12], [25, 6]),
}


@pytest.mark.parametrize("name", ["cka", "cka_debiased"])
@pytest.mark.parametrize("case", sorted(CKA_CASES))
def test_linear_cka_score_all_matches_score(name, case):
    n, dx, dy = CKA_CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))  # the same in every process
    _check(get(name), _stack(rng, len(dx), n, dx), _stack(rng, len(dy), n, dy))


def test_cost_model_sides_of_the_boundary():
    # prepared form: Xc when n >= d, Gram when n < d (None in the cost model)
    m = get("cka")
    assert m.prepare(np.random.default_rng(0).standard_normal((10, 4))).lin.K is None
    assert m.prepare(np.random.default_rng(0).standard_normal((4, 10))).lin.K is not None
    # one pair with n >= d: always the feature form, as score uses
    for n, d in ((8, 8), (50, 8), (1000, 384)):
        assert all_pairs_form(n, [d], [d]) == "feature"
    # all pairs: feature iff n d_x d_y L^2 <= n^2 (L d_x + L d_y) / 2 + L^2 n^2,
    # i.e. for L = 3, d = 8: n >= 8^2 * 3 / (8 + 3) = 17.45
    assert all_pairs_form(17, [8] * 3, [8] * 3) == "gram"
    assert all_pairs_form(18, [8] * 3, [8] * 3) == "feature"
    assert all_pairs_form(1500, [384] * 13, [384] * 13) == "gram"
    assert all_pairs_form(50_000, [384] * 7, [384] * 7) == "feature"
    assert all_pairs_form(10_000, [8, None], [8]) == "gram"
    for n in (17, 18):  # both sides of the boundary agree with score
        rng = np.random.default_rng(n)
        for name in ("cka", "cka_debiased"):
            _check(get(name), _stack(rng, 3, n, 8), _stack(rng, 3, n, 8))


@pytest.mark.parametrize("block_mb", [1e-4, 0.01, 256.0])
def test_linear_cka_blocking_does_not_change_scores(block_mb):
    rng = np.random.default_rng(3)
    Xs, Ys = _stack(rng, 3, 40, [30, 50, 20]), _stack(rng, 2, 40, [45, 10])
    m = get("cka")
    m.block_mb = block_mb  # one row of the Gram matrices per block at the smallest budget
    _check(m, Xs, Ys)


def test_linear_cka_score_all_float32_and_torch_input():
    rng = np.random.default_rng(4)
    Xs = [torch.from_numpy(X).float() for X in _stack(rng, 3, 25, 40)]
    Ys = [torch.from_numpy(Y).float() for Y in _stack(rng, 2, 25, 12)]
    _check(get("cka"), Xs, Ys)


def test_dimension_correlation_score_all_matches_score():
    rng = np.random.default_rng(5)
    m = get("dimension_correlation")
    _check(m, _stack(rng, 3, 60, 16), _stack(rng, 4, 60, 16))
    m.block_mb = 1e-4  # one column per block
    _check(m, _stack(rng, 2, 30, 7), _stack(rng, 3, 30, 7))


def test_dimension_correlation_score_all_constant_columns():
    rng = np.random.default_rng(6)
    Xs, Ys = _stack(rng, 2, 40, 6), _stack(rng, 2, 40, 6)
    Xs[0][:, 1] = 3.0
    Ys[1][:, 4] = -1.0
    m = get("dimension_correlation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        px, py = [m.prepare(X) for X in Xs], [m.prepare(Y) for Y in Ys]
        ref = _loop(m, px, py)
    with pytest.warns(RuntimeWarning, match="left out of the mean"):
        got = m.score_all(px, py)
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)


def test_dimension_correlation_score_all_needs_same_d_and_n():
    rng = np.random.default_rng(7)
    m = get("dimension_correlation")
    with pytest.raises(ValueError, match="d1 == d2"):
        m.score_all([m.prepare(rng.standard_normal((20, 5)))], [m.prepare(rng.standard_normal((20, 6)))])
    with pytest.raises(ValueError, match="same number of rows"):
        get("cka").score_all([get("cka").prepare(rng.standard_normal((20, 5)))],
                             [get("cka").prepare(rng.standard_normal((21, 5)))])


def _h_inv(X: np.ndarray, Y: np.ndarray) -> float:
    """Inverse row entropy of scipy's Procrustes map of the centred inputs."""
    P = orthogonal_procrustes(X - X.mean(0), Y - Y.mean(0))[0] ** 2
    return 1 + np.sum(P * np.log(np.where(P > 0, P, 1))) / (P.shape[0] * np.log(P.shape[0]))


def _procrustes(X: np.ndarray, Y: np.ndarray) -> float:
    """1 - residual / 2 of scipy's fit on centred, unit-norm inputs."""
    Xc, Yc = ((Z - Z.mean(0)) / np.linalg.norm(Z - Z.mean(0)) for Z in (X, Y))
    O = orthogonal_procrustes(Xc, Yc)[0]
    return 1 - np.linalg.norm(Xc @ O - Yc) ** 2 / 2


def _rsa(X: np.ndarray, Y: np.ndarray) -> float:
    return spearmanr(pdist(X, "cosine"), pdist(Y, "cosine"))[0]


def _knn_overlap(X: np.ndarray, Y: np.ndarray, k: int = 3) -> float:
    def sets(Z):
        nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(Z)
        return [set(row[row != i][:k]) for i, row in enumerate(nn.kneighbors(Z)[1])]
    return np.mean([len(a & b) / len(a | b) for a, b in zip(sets(X), sets(Y))])


def _cka_rbf(X: np.ndarray, Y: np.ndarray, sigma: float = 0.8) -> float:
    def centred_kernel(Z):
        D2 = np.square(np.linalg.norm(Z[:, None] - Z[None], axis=-1))
        K = np.exp(-D2 / (2 * (sigma * np.median(pdist(Z))) ** 2))
        H = np.eye(len(Z)) - 1 / len(Z)
        return H @ K @ H
    K, L = centred_kernel(X), centred_kernel(Y)
    return np.sum(K * L) / (np.linalg.norm(K) * np.linalg.norm(L))


@pytest.mark.parametrize("name,params,reference", [
    ("procrustes_alignment", {}, _h_inv), ("procrustes", {}, _procrustes), ("rsa", {}, _rsa),
    ("knn_overlap", {"k": 3}, _knn_overlap), ("cka_rbf", {}, _cka_rbf),
])
def test_default_score_all_matches_an_independent_reference(name, params, reference):
    """The default ``score_all`` (a loop over ``score``) puts pair ``(i, j)`` at ``[i, j]``
    with the value an independent implementation (scipy, scikit-learn, numpy) gives."""
    rng = np.random.default_rng(8)
    Xs, Ys = _stack(rng, 2, 30, 6), _stack(rng, 3, 30, 6)
    got = _check(get(name, **params), Xs, Ys)
    expected = np.array([[reference(X, Y) for Y in Ys] for X in Xs])
    assert np.ptp(expected) > 1e-3  # the pairs differ, so a misplaced pair would show
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_default_score_all_rejects_dict_scores_and_handles_empty():
    rng = np.random.default_rng(9)
    m = get("knn_overlap", k=(2, 3))
    p = [m.prepare(rng.standard_normal((20, 4)))]
    with pytest.raises(TypeError, match="float-valued"):
        m.score_all(p, p)
    for name in ("knn_overlap", "cka", "dimension_correlation"):
        assert get(name).score_all([], p if name != "knn_overlap" else []).shape[0] == 0
    assert get("cka").score_all([], []).shape == (0, 0)


def test_registered_function_gets_the_default_loop():
    def mean_gap(X, Y):
        return float(np.abs(np.asarray(X).mean() - np.asarray(Y).mean()))
    m = register(mean_gap, name="batched_test_mean_gap", level="representation", overwrite=True)
    try:
        rng = np.random.default_rng(10)
        _check(m, _stack(rng, 2, 10, 3), _stack(rng, 2, 10, 3))
    finally:
        _REGISTRY.pop("batched_test_mean_gap", None)
