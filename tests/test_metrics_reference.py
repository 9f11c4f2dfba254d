"""Each metric against an independent reference written here (numpy/scipy/sklearn) or a peer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.sparse.csgraph import shortest_path
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr, pearsonr
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import NearestNeighbors, kneighbors_graph
from sklearn.preprocessing import StandardScaler

from hrsa.metrics import get


def _pair(n: int, d1: int, d2: int, seed: int = 0, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d1)) + rng.normal(size=d1)
    Y = X @ rng.normal(size=(d1, d2)) + noise * rng.normal(size=(n, d2))
    return X, Y


def _hsic_gram(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def _cka_gram(K: np.ndarray, L: np.ndarray) -> float:
    return _hsic_gram(K, L) / math.sqrt(_hsic_gram(K, K) * _hsic_gram(L, L))


@pytest.mark.parametrize("n,d1,d2", [(60, 8, 5), (30, 50, 70), (40, 10, 90)])
def test_linear_cka_matches_explicit_h_matrix_and_ckatorch(n, d1, d2):
    ckatorch = pytest.importorskip("ckatorch")
    X, Y = _pair(n, d1, d2)
    ours = get("cka")(X, Y)
    assert ours == pytest.approx(_cka_gram(X @ X.T, Y @ Y.T), rel=1e-10)
    peer = float(ckatorch.cka_base(torch.from_numpy(X), torch.from_numpy(Y)))
    assert ours == pytest.approx(peer, rel=1e-10)


def test_linear_cka_float32_input_on_torch_matches_float64():
    X, Y = _pair(500, 30, 20, noise=3.0)
    ours = get("cka")(torch.from_numpy(X).float(), torch.from_numpy(Y).float())
    assert ours == pytest.approx(_cka_gram(X @ X.T, Y @ Y.T), rel=1e-5)


def _hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012), Eq. 5, straight from the definition."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))


@pytest.mark.parametrize("n,d1,d2", [(50, 6, 9), (20, 40, 30)])
def test_debiased_cka_matches_song_estimator_and_ckatorch(n, d1, d2):
    ckatorch = pytest.importorskip("ckatorch")
    X, Y = _pair(n, d1, d2, seed=1, noise=4.0)
    K, L = X @ X.T, Y @ Y.T  # uncentred: the estimator is translation invariant
    ref = _hsic_unbiased(K, L) / math.sqrt(_hsic_unbiased(K, K) * _hsic_unbiased(L, L))
    ours = get("cka_debiased")(X, Y)
    assert ours == pytest.approx(ref, rel=1e-9)
    peer = float(ckatorch.cka_base(torch.from_numpy(X), torch.from_numpy(Y), unbiased=True))
    assert ours == pytest.approx(peer, rel=1e-9)


def test_debiased_cka_near_zero_for_independent_wide_data_while_biased_is_high():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(50, 1000)), rng.normal(size=(50, 1000))
    assert get("cka")(X, Y) > 0.8
    assert abs(get("cka_debiased")(X, Y)) < 0.05


@pytest.mark.parametrize("sigma", [0.8, 0.3])
def test_rbf_cka_matches_explicit_kernels(sigma):
    X, Y = _pair(41, 5, 7, seed=2)

    def kernel(Z):
        dist = pdist(Z)
        D2 = np.square(np.linalg.norm(Z[:, None] - Z[None], axis=-1))
        return np.exp(-D2 / (2 * (sigma * np.median(dist)) ** 2))

    assert get("cka_rbf", sigma=sigma)(X, Y) == pytest.approx(_cka_gram(kernel(X), kernel(Y)), rel=1e-9)


def test_dimension_correlation_matches_pearson_per_column():
    X, Y = _pair(80, 6, 6, seed=3, noise=2.0)
    ref = np.mean([pearsonr(X[:, j], Y[:, j])[0] for j in range(6)])
    assert get("dimension_correlation")(X, Y) == pytest.approx(ref, rel=1e-10)


def _h_inv(O: np.ndarray) -> float:
    P = O**2
    D = O.shape[0]
    return 1 + np.sum(P * np.log(np.where(P > 0, P, 1))) / (D * np.log(D))


def test_procrustes_alignment_matches_scipy_orthogonal_procrustes():
    X, Y = _pair(100, 7, 7, seed=4, noise=0.5)
    O, _ = orthogonal_procrustes(X - X.mean(0), Y - Y.mean(0))
    assert get("procrustes_alignment")(X, Y) == pytest.approx(_h_inv(O), rel=1e-9)


def test_procrustes_alignment_is_one_for_signed_permutation_and_low_for_rotation():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 16))
    S = np.eye(16)[rng.permutation(16)] * rng.choice([-1.0, 1.0], size=16)
    assert get("procrustes_alignment")(X, X @ S) == pytest.approx(1.0, abs=1e-9)
    Q = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    assert get("procrustes_alignment")(X, X @ Q) < 0.5


def _procrustes_reference(X, Y):
    """Zero-pad to a common width, fit O with scipy, similarity = 1 - residual / 2."""
    d = max(X.shape[1], Y.shape[1])
    Xc, Yc = (np.pad(Z - Z.mean(0), ((0, 0), (0, d - Z.shape[1]))) for Z in (X, Y))
    Xc, Yc = Xc / np.linalg.norm(Xc), Yc / np.linalg.norm(Yc)
    O, _ = orthogonal_procrustes(Xc, Yc)
    return 1 - np.linalg.norm(Xc @ O - Yc) ** 2 / 2


@pytest.mark.parametrize("n,d1,d2", [(60, 5, 8), (20, 40, 30)])
def test_procrustes_matches_padded_scipy_fit_and_netrep_angular_distance(n, d1, d2):
    X, Y = _pair(n, d1, d2, seed=6, noise=2.0)
    ref = _procrustes_reference(X, Y)
    assert get("procrustes")(X, Y) == pytest.approx(ref, rel=1e-9)
    assert get("procrustes", output="distance")(X, Y) == pytest.approx(math.acos(ref), rel=1e-9)
    try:
        from netrep.metrics import LinearMetric
    except ImportError:
        return
    peer = LinearMetric(alpha=1.0, center_columns=True, score_method="angular").fit(X, Y).score(X, Y)
    assert get("procrustes", output="distance")(X, Y) == pytest.approx(peer, rel=1e-6)


def _knn_sets(Z: np.ndarray, k: int) -> list[set[int]]:
    idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(Z).kneighbors(Z)[1]
    return [set(row[row != i][:k]) for i, row in enumerate(idx)]


@pytest.mark.parametrize("center", [False, True])
def test_knn_overlap_matches_sklearn_brute_cosine(center):
    X, Y = _pair(150, 6, 9, seed=7, noise=3.0)
    rX, rY = (Z - Z.mean(0) if center else Z for Z in (X, Y))
    ks = (3, 10)
    ref = {}
    for k in ks:
        A, B = _knn_sets(rX, k), _knn_sets(rY, k)
        ref[f"k={k}"] = np.mean([len(a & b) / len(a | b) for a, b in zip(A, B)])
    out = get("knn_overlap", k=ks, center=center)(X, Y)
    assert out == pytest.approx({**ref, "similarity": ref["k=3"]}, rel=1e-12)
    assert get("knn_overlap", k=10, center=center)(X, Y) == pytest.approx(ref["k=10"], rel=1e-12)


def _copies(n_groups: int = 40, n: int = 800, d: int = 16, seed: int = 1):
    """``n`` rows, each an exact copy of one of ``n_groups`` Gaussian rows (about 20 copies
    each: every row's nearest neighbours tie at cosine 1), and the group of each row."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_groups, d)).astype(np.float32)
    group = rng.integers(0, n_groups, n)
    return base, group


def test_knn_ties_are_broken_by_the_lower_row_index():
    """Every row's list is ordered by (cosine descending, row index ascending), exactly as a
    float64 numpy reference with np.lexsort; ties are exact (copies), other gaps wide."""
    base, group = _copies()
    X = base[group]
    idx = get("knn_overlap", k=(5, 30)).prepare(X).idx.numpy()
    Z = X.astype(np.float64) / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)
    S[group[:, None] == group[None, :]] = 1.0  # copies: exactly tied (the diagonal stays out)
    np.fill_diagonal(S, -np.inf)
    columns = np.arange(len(X))
    ref = np.stack([np.lexsort((columns, -row))[:30] for row in S])
    np.testing.assert_array_equal(idx, ref)


def test_knn_overlap_of_tied_neighbours_does_not_depend_on_the_rest_of_the_row():
    """Copies stay copies in Y (a rotated, noisy version of the same groups): the k nearest
    within a group of tied copies are the same rows in X and Y, so the overlap is 1 at every
    k below the group size (topk's own order among ties gave about 0.6 at k=5)."""
    base, group = _copies()
    rng = np.random.default_rng(2)
    Q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    Y = (base @ Q + 0.5 * rng.standard_normal(base.shape)).astype(np.float32)[group]
    assert np.bincount(group).min() > 10
    out = get("knn_overlap", k=(5, 10))(base[group], Y)
    assert out["k=5"] == out["k=10"] == 1.0


def test_knn_overlap_small_blocks_equal_one_block():
    X, Y = _pair(300, 5, 5, seed=8, noise=2.0)
    assert get("knn_overlap", block_mb=0.001)(X, Y) == get("knn_overlap")(X, Y)


@pytest.mark.parametrize("distance,method", [("cosine", "spearman"), ("euclidean", "pearson"),
                                             ("correlation", "spearman")])
def test_rsa_matches_scipy(distance, method):
    X, Y = _pair(40, 6, 4, seed=9, noise=2.0)
    a, b = pdist(X, distance), pdist(Y, distance)
    ref = (spearmanr(a, b) if method == "spearman" else pearsonr(a, b))[0]
    assert get("rsa", distance=distance, method=method)(X, Y) == pytest.approx(ref, rel=1e-9)


def test_rsa_matches_rsatoolbox():
    rsatoolbox = pytest.importorskip("rsatoolbox")
    X, Y = _pair(30, 6, 4, seed=10, noise=2.0)
    rdms = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(Z), method="correlation") for Z in (X, Y)]
    peer = rsatoolbox.rdm.compare(rdms[0], rdms[1], method="spearman")[0, 0]
    assert get("rsa", distance="correlation")(X, Y) == pytest.approx(peer, rel=1e-9)


def test_geodesic_matches_scipy_graph_reference():
    X, Y = _pair(80, 3, 3, seed=11, noise=0.5)

    def geo(Z):
        D = shortest_path(kneighbors_graph(Z, 6, mode="distance"), directed=False)
        return D[np.triu_indices(len(Z), 1)]

    ref = spearmanr(geo(X), geo(Y))[0]
    assert get("geodesic", k=6)(X, Y) == pytest.approx(ref, rel=1e-9)


def test_geodesic_subsamples_the_same_rows_of_both():
    X, Y = _pair(120, 3, 3, seed=12, noise=0.5)
    rows = np.sort(np.random.default_rng(3).choice(120, 50, replace=False))
    sub = get("geodesic", k=6, max_samples=50, seed=3)(X, Y)
    assert sub == pytest.approx(get("geodesic", k=6, max_samples=0)(X[rows], Y[rows]), rel=1e-12)


def test_linear_predictivity_matches_sklearn_cross_val_predict():
    X, Y = _pair(90, 12, 5, seed=13, noise=3.0)
    Y[:, 0] *= 50  # uneven variances make the two weightings differ
    pred = cross_val_predict(Ridge(alpha=2.0), X, Y, cv=KFold(5, shuffle=True, random_state=4))
    for weighting, sk in (("uniform", "uniform_average"), ("variance", "variance_weighted")):
        ours = get("linear_predictivity", alpha=2.0, seed=4, weighting=weighting)(X, Y)
        assert ours == pytest.approx(r2_score(Y, pred, multioutput=sk), rel=1e-9)


def test_linear_predictivity_wide_x_matches_sklearn():
    X, Y = _pair(40, 100, 3, seed=14, noise=1.0)
    pred = cross_val_predict(Ridge(alpha=5.0), X, Y, cv=KFold(4, shuffle=True, random_state=0))
    ours = get("linear_predictivity", alpha=5.0, n_splits=4)(X, Y)
    assert ours == pytest.approx(r2_score(Y, pred), rel=1e-8)


def _probe_data(n_classes: int, seed: int = 15, n: int = 300, d: int = 8):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n, d)) + 1.5 * np.eye(n_classes, d)[labels]
    Y = 3 * X + rng.normal(size=(n, d)) + 2.0
    return labels, X, Y


def _sklearn_pipeline(labels, X, Y, clf, seed=1):
    """Splits, per-representation StandardScaler and ``clf`` fitted on X's train rows, as
    the paper's analysis code does it with scikit-learn."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(labels.size)
    tr, rest = train_test_split(idx, train_size=0.8, stratify=labels, random_state=seed)
    dv, te = train_test_split(rest, train_size=0.5, stratify=labels[rest], random_state=seed)
    FX = StandardScaler().fit(X[tr]).transform(X)
    FY = StandardScaler().fit(Y[tr]).transform(Y)
    clf.fit(FX[tr], labels[tr])
    return clf, FX, FY, (("train", tr), ("dev", dv), ("test", te))


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("classifier", ["logistic", "ridge"])
def test_linear_probe_transfer_matches_sklearn_pipeline(classifier, n_classes):
    labels, X, Y = _probe_data(n_classes)
    metric = get("linear_probe_transfer", labels=labels, classifier=classifier, C=0.5, seed=1,
                 solver="sklearn")
    out = metric(X, Y)
    clf, FX, FY, splits = _sklearn_pipeline(
        labels, X, Y, LogisticRegression(C=0.5, max_iter=1000) if classifier == "logistic"
        else RidgeClassifier(alpha=2.0))
    for split, rows in splits:
        assert out[f"self_{split}"] == pytest.approx(clf.score(FX[rows], labels[rows]))
        assert out[f"direct_{split}"] == pytest.approx(clf.score(FY[rows], labels[rows]))
    assert out["similarity"] == out["direct_test"]
    assert out["self_test"] > 0.6


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("classifier", ["logistic", "ridge"])
def test_torch_probe_reaches_the_sklearn_optimum(classifier, n_classes):
    """solver="torch": the ridge classifier equals sklearn's closed form; the logistic
    regression equals sklearn's fitted to a tight tolerance (the objective's optimum),
    coefficients and intercepts included (sklearn's own default stops earlier)."""
    import warnings

    labels, X, Y = _probe_data(n_classes, seed=20 + n_classes, d=12)
    metric = get("linear_probe_transfer", labels=labels, classifier=classifier, C=0.5, seed=1)
    assert metric.solver == "torch"
    px = metric.prepare(X)
    out = metric.score(px, metric.prepare(Y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's lbfgs may warn at tol=1e-12
        ref = (LogisticRegression(C=0.5, tol=1e-12, max_iter=100_000) if classifier == "logistic"
               else RidgeClassifier(alpha=2.0))
        clf, FX, FY, splits = _sklearn_pipeline(labels, X, Y, ref)
    for split, rows in splits:
        assert out[f"self_{split}"] == clf.score(FX[rows], labels[rows])
        assert out[f"direct_{split}"] == clf.score(FY[rows], labels[rows])
    np.testing.assert_allclose(px.F.numpy(), FX, atol=1e-12)
    coef, intercept = px.classifier.coef.numpy(), px.classifier.intercept.numpy()
    tol = 1e-10 if classifier == "ridge" else 1e-4
    np.testing.assert_allclose(coef, np.atleast_2d(clf.coef_).T,
                               atol=tol * max(1, np.abs(coef).max()))
    if classifier == "logistic" and n_classes > 2:  # softmax: intercepts up to a constant
        intercept, expected = intercept - intercept.mean(), clf.intercept_ - clf.intercept_.mean()
    else:
        expected = np.atleast_1d(clf.intercept_)
    np.testing.assert_allclose(intercept, expected, atol=tol * max(1, np.abs(expected).max()))


def test_torch_probe_warns_when_it_does_not_converge():
    from hrsa.metrics._classifiers import LogisticProbe

    labels, X, _ = _probe_data(3)
    F = torch.from_numpy(StandardScaler().fit_transform(X))
    with pytest.warns(RuntimeWarning, match="not converged"):
        LogisticProbe(np.arange(3), max_iter=2).fit(F, torch.from_numpy(labels))


@pytest.mark.parametrize("name,params", [
    ("dimension_correlation", {}), ("procrustes_alignment", {}), ("cka", {}),
    ("cka_debiased", {}), ("cka_rbf", {}), ("knn_overlap", {"k": (5, 10)}), ("rsa", {}),
    ("procrustes", {}), ("geodesic", {}), ("linear_predictivity", {}),
])
def test_prepare_once_then_score_equals_call(name, params):
    X, Y = _pair(60, 6, 6, seed=16, noise=1.0)
    metric = get(name, **params)
    px, py = metric.prepare(X), metric.prepare(torch.from_numpy(Y))
    assert metric.score(px, py) == metric(X, Y)
    assert metric.score(px, py) == metric.score(px, py)
