"""Declared invariances hold; the level-defining non-invariances hold too."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hrsa.metrics import INVARIANCES, Metric, available, get
from hrsa.metrics.checks import transform

N, D = 48, 6
LABELS = np.repeat(np.arange(3), N // 3)
SETTINGS = settings(max_examples=5, deadline=None, derandomize=True)

CONFIGS: list[tuple[str, dict]] = [
    ("dimension_correlation", {}), ("procrustes_alignment", {}), ("cka", {}),
    ("cka_debiased", {}), ("cka_rbf", {}), ("knn_overlap", {"k": (5, 10)}),
    ("knn_overlap", {"center": True}), ("rsa", {}), ("rsa", {"distance": "euclidean"}),
    ("rsa", {"distance": "correlation", "method": "pearson"}), ("procrustes", {}),
    ("procrustes", {"output": "distance"}), ("geodesic", {"k": 5}),
    ("linear_probe_transfer", {"labels": LABELS, "classifier": "ridge"}),
    ("linear_probe_transfer", {"labels": LABELS, "classifier": "ridge", "normalize": True}),
    ("linear_predictivity", {}), ("linear_predictivity", {"weighting": "variance"}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items() if k != 'labels')}" for n, p in CONFIGS]
GEOMETRY = [(n, p) for n, p in CONFIGS if get(n, **p).level == "geometry"]


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) + np.eye(3, D)[LABELS] * 2
    Y = X @ (np.eye(D) + 0.5 * rng.normal(size=(D, D))) + 0.5 * rng.normal(size=(N, D))
    return X, Y


def _close(a, b, tol=1e-7) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    return abs(a - b) <= tol * max(1.0, abs(a))


def _main(value) -> float:
    return value["similarity"] if isinstance(value, dict) else value


@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_declared_invariances_hold_on_either_side(name, params, seed):
    metric = get(name, **params)
    X, Y = _data(seed)
    base = metric(X, Y)
    rng = np.random.default_rng(seed + 1)
    for kind in sorted(metric.invariances):
        assert _close(metric(transform(kind, X, rng), Y), base), (kind, "X")
        assert _close(metric(X, transform(kind, Y, rng)), base), (kind, "Y")


@pytest.mark.filterwarnings("ignore:geodesic")  # the stretched graph may disconnect
@pytest.mark.parametrize("name,params", GEOMETRY, ids=[i for i, c in zip(IDS, CONFIGS) if c in GEOMETRY])
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_anisotropic_scaling_changes_every_geometry_score(name, params, seed):
    metric = get(name, **params)
    X, Y = _data(seed)
    A = np.diag(np.logspace(-2, 1, D))
    assert abs(_main(metric(X @ A, Y)) - _main(metric(X, Y))) > 1e-3


@pytest.mark.parametrize("name", available())
def test_declarations_match_the_level_definition(name):
    metric = get(name, labels=LABELS) if name == "linear_probe_transfer" else get(name)
    assert isinstance(metric, Metric)
    assert metric.invariances <= INVARIANCES
    if metric.level == "representation":
        assert "orthogonal" not in metric.invariances
    if metric.level == "geometry":
        assert {"orthogonal", "isotropic_scaling"} <= metric.invariances
        assert "invertible_linear" not in metric.invariances


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_representation_metrics_drop_under_rotation(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 16))
    XQ = X @ np.linalg.qr(rng.normal(size=(16, 16)))[0]
    assert get("dimension_correlation")(X, X) == pytest.approx(1.0)
    assert get("procrustes_alignment")(X, X) == pytest.approx(1.0)
    assert get("dimension_correlation")(X, XQ) < 0.7
    assert get("procrustes_alignment")(X, XQ) < 0.7


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_signed_permutation_and_column_scaling(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(100, 8))
    perm = rng.permutation(8)
    while (perm == np.arange(8)).any():
        perm = rng.permutation(8)
    signs = np.ones(8)
    signs[:3] = -1
    signed = X[:, perm] * signs
    # procrustes_alignment: a signed permutation is a perfectly axis-aligned map
    assert get("procrustes_alignment")(X, signed) == pytest.approx(1.0, abs=1e-9)
    # dimension_correlation compares column j with column j: a derangement loses it, and a sign
    # flip turns rho_j = 1 into -1 ...
    assert get("dimension_correlation")(X, X[:, perm]) < 0.5
    assert get("dimension_correlation")(X, X * signs) == pytest.approx((8 - 2 * 3) / 8)
    # ... while any positive scale per column keeps every rho_j = 1
    assert get("dimension_correlation")(X, X * rng.uniform(0.01, 100, size=8)) == pytest.approx(1.0)
