"""The eigendecomposition route to the Procrustes map (``hrsa.metrics._polar``) against numpy's
float64 SVD: equal where it answers, ``None`` where it cannot certify itself."""

import contextlib
import warnings

import numpy as np
import pytest
import torch

from hrsa.metrics import _polar, get, representation

D = 96


def _orth(rng, d=D):
    return np.linalg.qr(rng.normal(size=(d, d)))[0]


def _with_spectrum(s, seed=0):
    rng = np.random.default_rng(seed)
    return (_orth(rng) * s) @ _orth(rng).T


def _layernorm_like(seed, d=D, n=400):
    """Rows that each satisfy one linear constraint (like post-LayerNorm states): rank d - 1
    after centring."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d)) @ np.diag(rng.uniform(0.5, 3, d))
    Z -= Z.mean(axis=1, keepdims=True)
    return Z * rng.uniform(0.5, 2.0, d) + rng.normal(size=d)


def _centred(X):
    return X - X.mean(0)


def _cases():
    rng = np.random.default_rng(3)
    tail = np.ones(D)
    tail[-2:] = 1e-6
    gap = np.logspace(0, -2, D)
    gap[-3:] = 0.0
    narrow = np.logspace(0, -5, D)  # the eigenvectors of M^T M for s = 0 are off by ~1e-9
    narrow[-2:] = 0.0
    X, Y = _layernorm_like(1), _layernorm_like(2)
    return {
        "gaussian": rng.normal(size=(D, D)),
        "two small singular values (kappa 1e6)": _with_spectrum(tail),
        "geometric (kappa 1e4)": _with_spectrum(np.logspace(0, -4, D)),
        "orthogonal (all equal)": 3.0 * _orth(rng),
        "rank D - 3 with a gap": _with_spectrum(gap),
        "rank D - 2 next to s = 1e-5": _with_spectrum(narrow),
        "layernorm-like pair": _centred(X).T @ _centred(Y),
        "layernorm-like self": _centred(X).T @ _centred(X),
    }


def _svd_parts(M):
    U, S, Vh = np.linalg.svd(M)
    r = np.linalg.matrix_rank(M)
    return U[:, :r] @ Vh[:r], U[:, r:], Vh[r:].T


@pytest.mark.parametrize("name", list(_cases()))
def test_polar_parts_equal_the_svd(name):
    M = _cases()[name]
    parts = _polar.polar_parts(torch.from_numpy(M))
    assert parts is not None, f"{name}: the fast route should certify this matrix"
    O_r, U0, V0 = (p.numpy() for p in parts)
    ref_O, ref_U0, ref_V0 = _svd_parts(M)
    assert U0.shape == ref_U0.shape and V0.shape == ref_V0.shape
    np.testing.assert_allclose(O_r, ref_O, atol=1e-10)
    k = U0.shape[1]
    for B, ref in ((U0, ref_U0), (V0, ref_V0)):  # orthonormal bases of the same null spaces
        np.testing.assert_allclose(B.T @ B, np.eye(k), atol=1e-12)
        np.testing.assert_allclose(B @ B.T, ref @ ref.T, atol=1e-10)


@pytest.mark.parametrize("mode", ["nearest_identity", "subspace", "nan"])
@pytest.mark.parametrize("name", list(_cases()))
def test_procrustes_alignment_is_the_same_on_either_route(name, mode, monkeypatch):
    M = torch.from_numpy(_cases()[name])
    metric = get("procrustes_alignment", rank_deficient=mode)
    with _maybe_warns(mode, name):
        fast = metric.from_cross_covariance(M)
    monkeypatch.setattr(representation, "polar_parts", lambda M: None)
    with _maybe_warns(mode, name):
        svd = metric.from_cross_covariance(M)
    if np.isnan(svd):
        assert np.isnan(fast)
    else:
        assert fast == pytest.approx(svd, abs=1e-10)


@contextlib.contextmanager
def _maybe_warns(mode, name):
    """The "nan" mode warns on rank-deficient maps; nothing else may warn."""
    if mode == "nan" and ("rank" in name or "layernorm" in name):
        with pytest.warns(RuntimeWarning, match="the map is not unique"):
            yield
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield


def _anisotropic(kind, seed=5, n=400):
    """Cross-covariance of strongly anisotropic states, as in large language models: three
    "massive activation" features 1000x the rest, or rotated features scaled by j^-1.5."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, D))
    Z2 = Z + 0.3 * rng.normal(size=(n, D))
    if kind == "massive":
        A = np.diag(np.where(np.arange(D) < 3, 1000.0, 1.0))
    else:
        A = _orth(rng) * np.arange(1, D + 1) ** -1.5
    return _centred(Z @ A).T @ _centred(Z2 @ A)


@pytest.mark.parametrize("why,M", [
    ("row space too ill-conditioned", _with_spectrum(np.logspace(0, -7, D))),
    ("massive activations (kappa 4e6)", _anisotropic("massive")),
    ("power-law features (kappa 2e6)", _anisotropic("power")),
    ("a singular value between the rank tolerance and the null threshold",
     _with_spectrum(np.r_[np.ones(D - 1), 1e-11])),
    ("zero", np.zeros((D, D))),
    ("not finite", np.full((D, D), np.nan)),
])
def test_polar_parts_decline_what_they_cannot_certify(why, M):
    assert _polar.polar_parts(torch.from_numpy(M)) is None, why
    assert _polar.polar_parts(torch.from_numpy(np.eye(D, dtype=np.float32))) is None


def test_declined_matrices_still_score_through_the_svd():
    M = _with_spectrum(np.r_[np.ones(D - 1), 1e-11])  # full rank for numpy: the unique map
    ref_O = _svd_parts(M)[0]
    P = ref_O**2
    expected = 1 + (P * np.log(P)).sum() / (D * np.log(D))
    score = get("procrustes_alignment").from_cross_covariance(torch.from_numpy(M))
    assert score == pytest.approx(expected, abs=1e-12)


def test_ignore_mode_is_deterministic_and_optimal():
    X = _layernorm_like(4)
    M = torch.from_numpy(_centred(X).T @ _centred(_layernorm_like(5)))
    metric = get("procrustes_alignment", rank_deficient="ignore")
    assert metric.from_cross_covariance(M) == metric.from_cross_covariance(M)
    O_r, U0, V0 = _polar.polar_parts(M)
    O = O_r + U0 @ V0.T  # orthogonal, and as good a fit as the SVD's U V^T: tr(O^T M) = sum(S)
    torch.testing.assert_close(O.T @ O, torch.eye(D, dtype=O.dtype), atol=1e-12, rtol=0)
    assert float(torch.trace(O.T @ M)) == pytest.approx(np.linalg.svd(M.numpy())[1].sum(),
                                                        rel=1e-12)


def test_real_minilm_states_score_the_same_on_either_route(minilm_dir, monkeypatch):
    """all-MiniLM-L6-v2 token states against a perturbed copy on 200 probe texts: every layer's
    H_inv equals the SVD route's, and the post-LayerNorm layers (rank D - 1) are certified."""
    from transformers import AutoModel, AutoTokenizer

    import hrsa
    from hrsa.experiments.variants import perturbed_copy

    model, tok = AutoModel.from_pretrained(minilm_dir), AutoTokenizer.from_pretrained(minilm_dir)
    texts = hrsa.probes.load("reuters")[0][:200]
    A = hrsa.capture((model, tok), texts, progress=False).values
    B = hrsa.capture((perturbed_copy(model, scale=0.05), tok), texts, progress=False).values
    metric = get("procrustes_alignment")
    Ms = [torch.from_numpy(_centred(a.astype(np.float64)).T @ _centred(b.astype(np.float64)))
          for a, b in zip(A, B)]
    certified = [_polar.polar_parts(M) for M in Ms]
    assert all(p is not None and p[1].shape[1] == 1 for p in certified[:6])
    fast = [metric.from_cross_covariance(M) for M in Ms]
    monkeypatch.setattr(representation, "polar_parts", lambda M: None)
    np.testing.assert_allclose(fast, [metric.from_cross_covariance(M) for M in Ms], atol=1e-10)


def test_after_a_decline_the_next_maps_go_straight_to_the_svd(monkeypatch):
    calls = []
    real = _polar.polar_parts
    monkeypatch.setattr(representation, "polar_parts", lambda M: calls.append(1) or real(M))
    metric = get("procrustes_alignment")
    hard = torch.from_numpy(_with_spectrum(np.logspace(0, -9, D)))  # declined
    easy = torch.from_numpy(_cases()["gaussian"])
    expected = metric.from_cross_covariance(easy)
    assert len(calls) == 1
    metric.from_cross_covariance(hard)
    scores = [metric.from_cross_covariance(easy) for _ in range(metric.SVD_AFTER_DECLINE + 1)]
    assert len(calls) == 3  # the easy map, the declined one, then again after 16 SVDs
    np.testing.assert_allclose(scores, expected, atol=1e-10)
