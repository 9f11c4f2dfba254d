"""Bad input: a clear ValueError/TypeError naming the argument, or NaN + warning where documented."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from hrsa.metrics import available, get

LABELS = np.repeat(np.arange(3), 10)


def _metric(name: str):
    return get(name, labels=LABELS) if name == "linear_probe_transfer" else get(name)


def _good(n: int = 30, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize("name", available())
def test_mismatched_n_names_both_shapes(name):
    metric = _metric(name)
    px = metric.prepare(_good())
    other = get("linear_probe_transfer", labels=np.repeat(np.arange(3), 9)) if name == "linear_probe_transfer" else metric
    py = other.prepare(_good(27))
    with pytest.raises(ValueError, match=re.escape("(30, 4)") + ".*" + re.escape("(27, 4)")):
        metric.score(px, py)


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_entries_are_counted(name, bad):
    Y = _good()
    Y[[1, 5, 7], 2] = bad
    with pytest.raises(ValueError, match=r"^Y has 3 non-finite"):
        _metric(name)(_good(), Y)


@pytest.mark.parametrize("name", available())
def test_one_dimensional_and_wrong_type(name):
    with pytest.raises(ValueError, match=r"^X must be 2-D"):
        _metric(name)(np.arange(30.0), _good())
    with pytest.raises(TypeError, match=r"^Y must be a torch.Tensor or numpy.ndarray"):
        _metric(name)(_good(), _good().tolist())


@pytest.mark.parametrize("name", [n for n in available() if n != "knn_overlap"])
def test_constant_representation_raises(name):
    const = np.ones((30, 4)) * 3.0
    with pytest.raises(ValueError, match=r"Y\b.*(constant|equal|coincide)"):
        _metric(name)(_good(), const)


def test_knn_overlap_zero_rows_and_centred_constant():
    X = _good()
    X[4] = 0
    with pytest.raises(ValueError, match=r"^X has 1 all-zero rows"):
        get("knn_overlap", k=3)(X, _good())
    with pytest.raises(ValueError, match="constant"):
        get("knn_overlap", k=3, center=True)(_good(), np.ones((30, 4)))


@pytest.mark.parametrize("k", [30, 31, (5, 40)])
def test_knn_k_at_least_n(k):
    with pytest.raises(ValueError, match=r"k=\d+ must be < n=30"):
        get("knn_overlap", k=k)(_good(), _good())


def test_geodesic_k_at_least_rows_and_disconnected_warning():
    with pytest.raises(ValueError, match=r"k=30 must be <"):
        get("geodesic", k=30)(_good(), _good())
    far = np.vstack([_good(15), _good(15, seed=1) + 1000])
    with pytest.warns(RuntimeWarning, match="2 components"):
        value = get("geodesic", k=3)(far, far)
    assert value == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["dimension_correlation", "procrustes_alignment", "linear_probe_transfer"])
def test_same_d_required(name):
    metric = _metric(name)
    with pytest.raises(ValueError, match=r"\(30, 4\).*\(30, 5\).*d1 == d2"):
        metric(_good(), _good(d=5))


def test_dimension_correlation_constant_columns_are_dropped_with_warning():
    X, Y = _good(), _good(seed=1)
    Y[:, 1] = 7.0
    with pytest.warns(RuntimeWarning, match="1 of 4 features"):
        value = get("dimension_correlation")(X, Y)
    keep = [0, 2, 3]
    ref = np.mean([np.corrcoef(X[:, j], Y[:, j])[0, 1] for j in keep])
    assert value == pytest.approx(ref)
    X[:, [0, 2, 3]] = 1.0
    with pytest.raises(ValueError, match="no feature varies"):
        get("dimension_correlation")(X, Y)


def test_procrustes_alignment_rank_deficient_modes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 12))  # 5 rows: Xc^T Xc has rank 4 < 12
    with pytest.warns(RuntimeWarning, match=r"rank 4 < D=12, the map is not unique"):
        assert np.isnan(get("procrustes_alignment", rank_deficient="nan")(X, X))
    # default: the optimal map nearest the identity, so a self-comparison scores 1
    assert get("procrustes_alignment")(X, X) == pytest.approx(1.0, abs=1e-9)
    # subspace: the unique part U_r V_r^T; for an axis-aligned subspace it is a projector onto
    # coordinate axes, so the self-comparison scores 1
    Z = np.zeros((6, 12))
    Z[:, :4] = rng.normal(size=(6, 4))
    assert get("procrustes_alignment", rank_deficient="subspace")(Z, Z) == pytest.approx(1.0)
    # and it is equivariant: a signed permutation of Y keeps the score
    S = np.eye(12)[rng.permutation(12)] * rng.choice([-1, 1], size=12)
    sub = get("procrustes_alignment", rank_deficient="subspace")
    assert sub(X, X @ S) == pytest.approx(sub(X, X))
    assert 0 <= get("procrustes_alignment", rank_deficient="ignore")(X, X) <= 1
    with pytest.raises(ValueError, match="rank_deficient"):
        get("procrustes_alignment", rank_deficient="drop")


def test_procrustes_alignment_nearest_identity_matches_a_regularised_reference():
    """Post-LayerNorm-like data (rank D - 1 after centring) against a rotated copy: the
    default completion equals scipy's Procrustes map on the problem augmented with eps * I
    (which picks, among the optimal maps, the one nearest the identity)."""
    from scipy.linalg import orthogonal_procrustes

    rng = np.random.default_rng(1)
    D, n = 10, 200
    Z = rng.normal(size=(n, D))
    Z -= Z.mean(axis=1, keepdims=True)  # each row sums to 0: rank D - 1
    gamma = rng.uniform(0.5, 2.0, size=D)
    X = Z * gamma + rng.normal(size=D)
    Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    Y = X @ Q
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    eps = 1e-4 * np.linalg.norm(Xc)
    O, _ = orthogonal_procrustes(np.vstack([Xc, eps * np.eye(D)]),
                                 np.vstack([Yc, eps * np.eye(D)]))
    P = O ** 2
    expected = 1 + (P * np.log(np.where(P > 0, P, 1))).sum() / (D * np.log(D))
    assert get("procrustes_alignment")(X, Y) == pytest.approx(expected, abs=1e-6)
    assert get("procrustes_alignment")(X, X) == pytest.approx(1.0, abs=1e-9)


def test_probe_label_errors():
    with pytest.raises(ValueError, match="labels has a single class"):
        get("linear_probe_transfer", labels=np.zeros(30))
    with pytest.raises(ValueError, match="labels cannot be split"):
        get("linear_probe_transfer", labels=np.r_[np.zeros(29), 1])
    with pytest.raises(ValueError, match=r"X has 30 rows but labels has 20"):
        get("linear_probe_transfer", labels=np.repeat([0, 1], 10))(_good(), _good())
    with pytest.raises(ValueError, match="labels must be 1-D"):
        get("linear_probe_transfer", labels=np.zeros((30, 2)))
    with pytest.raises(ValueError, match="splits"):
        get("linear_probe_transfer", labels=LABELS, splits=(0.5, 0.1, 0.1))


def test_parameter_errors_name_the_parameter():
    for name, params, word in [("knn_overlap", {"k": 0}, "k"), ("rsa", {"distance": "nope"}, "distance"),
                               ("rsa", {"method": "kendall"}, "method"), ("cka_rbf", {"sigma": 0}, "sigma"),
                               ("procrustes", {"output": "angle"}, "output"),
                               ("linear_predictivity", {"weighting": "median"}, "weighting"),
                               ("geodesic", {"max_samples": -1}, "max_samples")]:
        with pytest.raises(ValueError, match=rf"^{word}\b"):
            get(name, **params)


def test_debiased_cka_needs_four_rows():
    with pytest.raises(ValueError, match=r"^X has 3 rows"):
        get("cka_debiased")(_good(3), _good(3))


def test_torch_inputs_with_grad_and_integers_work():
    X = torch.randn(30, 4, requires_grad=True)
    Y = torch.randint(0, 5, (30, 4))
    assert 0 <= get("cka")(X, Y) <= 1
