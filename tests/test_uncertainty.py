"""Uncertainty: text-level bootstrap intervals, permutation p-values, paired differences."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import xarray as xr  # noqa: E402

import hrsa  # noqa: E402
from hrsa.experiments.variants import perturbed_copy, reinitialized_copy  # noqa: E402
from hrsa.uncertainty import (bootstrap_indices, bootstrap_metric,  # noqa: E402
                              permutation_indices, permutation_test)


def _pooled(values: np.ndarray, **attrs) -> xr.DataArray:
    return xr.DataArray(values, dims=("layer", "sample", "feature"),
                        coords={"layer": np.arange(values.shape[0])}, attrs=attrs)


def _tokens(values: np.ndarray, text: np.ndarray, **attrs) -> xr.DataArray:
    return xr.DataArray(values, dims=("layer", "token", "feature"),
                        coords={"layer": np.arange(values.shape[0]), "text": ("token", text)},
                        attrs=attrs)


def _noisy_pair(rng, layers=3, n=60, d=6, noise=0.5):
    X = rng.normal(size=(layers, n, d))
    return X, X + noise * rng.normal(size=(layers, n, d))


# ------------------------------------------------------------------ resampling indices

def test_bootstrap_resamples_whole_texts_with_duplicates():
    units = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    for idx in bootstrap_indices(units, 50, seed=3):
        drawn = units[idx]
        # each drawn text brings all its rows, in stored order
        counts = np.bincount(drawn, minlength=4) / np.bincount(units)
        assert np.allclose(counts, np.round(counts)) and counts.sum() == 4
    again = bootstrap_indices(units, 50, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, bootstrap_indices(units, 50, 3)))
    assert not all(np.array_equal(a, b)
                   for a, b in zip(again, bootstrap_indices(units, 50, seed=4)))


def test_permutation_pairs_texts_cut_to_the_shorter():
    units = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    for rows_a, rows_b in permutation_indices(units, 20, seed=0):
        assert len(rows_a) == len(rows_b)
        ta, tb = units[rows_a], units[rows_b]
        pairs = {(int(a), int(b)) for a, b in zip(ta, tb)}
        assert len({a for a, _ in pairs}) == 3 == len({b for _, b in pairs})  # a bijection
        for a, b in pairs:  # first min(n_a, n_b) rows of each, position aligned
            m = min((units == a).sum(), (units == b).sum())
            assert (ta == a).sum() == m
            np.testing.assert_array_equal(rows_a[ta == a], np.flatnonzero(units == a)[:m])
            np.testing.assert_array_equal(rows_b[tb == b], np.flatnonzero(units == b)[:m])


# ------------------------------------------------------------------ coverage by simulation

def test_percentile_interval_covers_population_cka_about_95_percent():
    rng = np.random.default_rng(0)
    d, n, noise = 5, 500, 0.2
    lam = np.array([3.0, 1.5, 1.0, 0.5, 0.25])
    A = rng.normal(size=(d, d)) / np.sqrt(d)
    sx = np.diag(lam)
    sy = A.T @ sx @ A + noise * np.eye(d)
    population = np.linalg.norm(sx @ A) ** 2 / (np.linalg.norm(sx) * np.linalg.norm(sy))
    cka = hrsa.metrics.get("cka")
    reps, covered = 160, 0
    for r in range(reps):
        X = rng.normal(size=(n, d)) * np.sqrt(lam)
        Y = X @ A + np.sqrt(noise) * rng.normal(size=(n, d))
        out = bootstrap_metric(cka, X, Y, n_boot=200, ci=0.95, seed=r)
        covered += out["ci_low"] <= population <= out["ci_high"]
        assert out["ci_low"] <= out["ci_high"] and out["se"] > 0
    coverage = covered / reps
    assert 0.87 < coverage <= 0.995, coverage


# ------------------------------------------------------------------ permutation null

def test_permutation_p_values_are_uniform_under_independence():
    rng = np.random.default_rng(1)
    cka = hrsa.metrics.get("cka")
    P = 99
    ps = np.array([permutation_test(cka, rng.normal(size=(30, 3)), rng.normal(size=(30, 3)),
                                    n_perm=P, seed=r)["p_value"] for r in range(150)])
    assert set(np.round(ps * (P + 1)).astype(int)) <= set(range(1, P + 2))
    assert scipy.stats.kstest(ps, "uniform").pvalue > 0.01
    for q in (0.05, 0.1, 0.5):  # P(p <= q) = q for an exact test (within ~3 sd)
        assert abs(np.mean(ps <= q) - q) < 3 * np.sqrt(q * (1 - q) / len(ps)) + 0.01, q


def test_permutation_p_value_is_minimal_for_a_noisy_copy():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 5))
    out = permutation_test("cka", X, X + 0.3 * rng.normal(size=X.shape), n_perm=49)
    assert out["p_value"] == pytest.approx(1 / 50) and out["null_mean"] < out["estimate"]


# ------------------------------------------------------------------ through compare()

def test_compare_adds_intervals_p_values_and_keeps_them_out_of_the_summary(tmp_path):
    X, Y = _noisy_pair(np.random.default_rng(3))
    ds = hrsa.compare(_pooled(X), _pooled(Y), metrics=["cka", "knn_overlap"], bootstrap=20,
                      permutations=9, progress=False)
    plain = hrsa.compare(_pooled(X), _pooled(Y), metrics=["cka", "knn_overlap"],
                         progress=False)
    xr.testing.assert_identical(ds.cka, plain.cka)  # the estimate itself is unchanged
    for name in ("cka", "knn_overlap"):
        for suffix in ("ci_low", "ci_high", "se", "p_value", "null_mean"):
            var = ds[f"{name}_{suffix}"]
            assert var.dims == ds[name].dims, (name, suffix)
            assert var.attrs["diagnostic"] == suffix and var.attrs["level"] == "geometry"
            assert "long_name" in var.attrs
        assert (ds[f"{name}_ci_low"] <= ds[f"{name}_ci_high"]).all()
        np.testing.assert_allclose(ds[f"{name}_p_value"], 0.1)  # 1 / (P + 1)
    assert ds.attrs["bootstrap"] == 20 and ds.attrs["ci"] == 0.95
    summary = hrsa.summarize(ds)
    assert "ci_low" not in summary and "p_value" not in summary and "cka" in summary
    ds.to_netcdf(tmp_path / "ci.nc")
    xr.testing.assert_identical(xr.load_dataset(tmp_path / "ci.nc"), ds)
    # same seed: same intervals; another seed: others
    again = hrsa.compare(_pooled(X), _pooled(Y), metrics=["cka"], bootstrap=20, progress=False)
    xr.testing.assert_identical(again.cka_ci_low, ds.cka_ci_low)
    other = hrsa.compare(_pooled(X), _pooled(Y), metrics=["cka"], bootstrap=20, seed=5,
                         progress=False)
    assert not np.array_equal(other.cka_ci_low.values, ds.cka_ci_low.values)


def test_token_level_bootstrap_matches_a_manual_text_resample():
    rng = np.random.default_rng(4)
    lengths = rng.integers(2, 7, size=25)
    text = np.repeat(np.arange(25), lengths)
    X, Y = _noisy_pair(rng, layers=2, n=len(text), d=5)
    ds = hrsa.compare(_tokens(X, text), _tokens(Y, text), metrics=["cka"], bootstrap=10,
                      permutations=19, keep_replicates=True, max_tokens=None, progress=False)
    assert ds.cka_boot.dims == ("bootstrap", "layer")
    cka = hrsa.metrics.get("cka")
    for r, idx in enumerate(bootstrap_indices(text, 10, seed=0)):
        assert np.isin(text, text[idx]).sum() > 0
        np.testing.assert_allclose(ds.cka_boot.isel(bootstrap=r, layer=1),
                                   cka(X[1][idx], Y[1][idx]), rtol=1e-10)
    np.testing.assert_allclose(ds.cka_p_value, 1 / 20)
    with pytest.raises(ValueError, match="text"):
        hrsa.compare(_tokens(X, text).drop_vars("text"), _tokens(Y, text), metrics=["cka"],
                     bootstrap=5, max_tokens=None, progress=False)


@pytest.mark.parametrize("d", [5, 120])  # feature form (n > d) and Gram form (n < d)
def test_replicates_from_full_data_equal_a_recompute_on_the_resampled_rows(d):
    rng = np.random.default_rng(11)
    lengths = rng.integers(1, 9, size=20)
    text = np.repeat(rng.permutation(np.arange(100, 120)), lengths)  # any labels, any order
    X, Y = _noisy_pair(rng, layers=2, n=len(text), d=d)
    metrics = ["cka", "dimension_correlation", "procrustes_alignment", "rsa"]  # rsa: recomputed
    ds = hrsa.compare(_tokens(X, text), _tokens(Y, text), metrics=metrics, bootstrap=6,
                      keep_replicates=True, max_tokens=None, progress=False)
    for name in metrics:
        metric = hrsa.metrics.get(name)
        assert hrsa.metrics.supports_resampling(metric) == (name != "rsa")
        for r, idx in enumerate(bootstrap_indices(text, 6, seed=0)):
            for layer in range(2):
                expected = metric(X[layer][idx], Y[layer][idx])
                np.testing.assert_allclose(ds[f"{name}_boot"].isel(bootstrap=r, layer=layer),
                                           expected, rtol=1e-10, atol=1e-12, err_msg=name)


def test_knn_replicates_average_the_full_samples_row_overlaps_over_drawn_texts():
    from hrsa.resampling import TextResampling
    rng = np.random.default_rng(12)
    text = np.repeat(np.arange(30), rng.integers(1, 6, size=30))
    X, Y = _noisy_pair(rng, layers=1, n=len(text), d=8, noise=1.0)
    knn = hrsa.metrics.get("knn_overlap", k=(3, 5))
    px, py = knn.prepare(X[0]), knn.prepare(Y[0])
    counts = rng.multinomial(30, np.full(30, 1 / 30), size=4).astype(float)
    counts[0] = 1.0  # the identity resample gives the estimate
    reps = knn.score_resampled(px, py, TextResampling(text, counts))
    assert reps[0] == pytest.approx(knn.score(px, py), abs=1e-14)
    for k in (3, 5):  # independent per-row Jaccard from numpy sets
        jac = np.array([len(set(a) & set(b)) / len(set(a) | set(b))
                        for a, b in zip(px.idx[:, :k].tolist(), py.idx[:, :k].tolist())])
        for u, rep in zip(counts, reps):
            w = u[text]
            assert rep[f"k={k}"] == pytest.approx((w * jac).sum() / w.sum(), abs=1e-12)


def test_probe_intervals_resample_texts_within_split_and_class():
    from hrsa.uncertainty import stratified_resampling
    rng = np.random.default_rng(14)
    labels = np.repeat(["p", "q", "r"], 40)
    X = rng.normal(size=(1, 120, 6)) + (labels == "q")[None, :, None]  # class q is separable
    Y = X + 0.8 * rng.normal(size=X.shape)
    ds = hrsa.compare(_pooled(X, pooling="mean"), _pooled(Y, pooling="mean"), labels=labels,
                      metrics=["cka"], bootstrap=8, keep_replicates=True, progress=False)
    for name in ("probe_self", "probe_direct"):
        assert ds[f"{name}_ci_low"].dims == ds[name].dims == ("layer", "split")
        assert (ds[f"{name}_ci_low"] <= ds[f"{name}_ci_high"]).all()
    bars = [c for c in hrsa.plot.probe_bars(ds).containers if hasattr(c, "errorbar")]
    assert len(bars) == 2 and all(b.errorbar is not None for b in bars)
    plt.close("all")
    probe = hrsa.metrics.get("linear_probe_transfer", labels=list(labels), seed=0)
    resampling = stratified_resampling(probe.strata(), 8, seed=0)
    strata = probe.strata()
    for u in resampling.counts:  # every (split, class) keeps its size
        for s in np.unique(strata):
            assert u[strata == s].sum() == (strata == s).sum()
    clf = probe.prepare(X[0]).classifier
    F_y = probe.prepare(Y[0]).F
    test = probe.index["test"]
    for r, u in enumerate(resampling.counts):  # the frozen probe read out on the drawn rows
        rows = np.repeat(test, u[test].astype(int))
        np.testing.assert_allclose(ds.probe_direct_boot.isel(bootstrap=r, layer=0)
                                   .sel(split="test"), clf.score(F_y[rows], labels[rows]))
    few = np.array(["p"] * 12 + ["q"] * 12)  # test split: 10% of 24, one text per class
    with pytest.raises(ValueError, match="stratified resample"):
        hrsa.compare(_pooled(X[:, :24], pooling="mean"), _pooled(Y[:, :24], pooling="mean"),
                     labels=few, metrics=["cka"], bootstrap=5, progress=False)


def test_bca_interval_agrees_with_scipy_on_a_skewed_statistic():
    from hrsa.uncertainty import bca_interval
    rng = np.random.default_rng(15)
    x = rng.exponential(size=40)
    B = 40_000
    reps = x[rng.integers(0, x.size, size=(B, x.size))].mean(axis=1)
    jack = (x.sum() - x) / (x.size - 1)  # leave-one-out means
    low, high = bca_interval(reps, np.asarray(x.mean()), jack, 0.9)
    ref = scipy.stats.bootstrap((x,), np.mean, confidence_level=0.9, method="BCa",
                                n_resamples=B, random_state=1).confidence_interval
    width = ref.high - ref.low
    assert abs(low - ref.low) < 0.03 * width and abs(high - ref.high) < 0.03 * width
    p_low, p_high = np.quantile(reps, [0.05, 0.95])
    assert low > p_low and high > p_high  # right skew: BCa shifts the interval up


def test_compare_bca_intervals_and_a_degenerate_case():
    X, Y = _noisy_pair(np.random.default_rng(16), layers=2, n=80, d=4)
    pct = hrsa.compare(_pooled(X), _pooled(Y), metrics=["cka", "rsa"], bootstrap=60,
                       progress=False)
    bca = hrsa.compare(_pooled(X), _pooled(Y), metrics=["cka", "rsa"], bootstrap=60,
                       ci_method="bca", progress=False)
    assert bca.attrs["ci_method"] == "bca" and pct.attrs["ci_method"] == "percentile"
    for name in ("cka", "rsa"):  # direct (cka) and recomputed (rsa) jackknife
        assert bca[f"{name}_ci_low"].attrs["ci_method"] == "bca"
        assert (bca[f"{name}_ci_low"] < bca[name]).all()
        assert (bca[name] < bca[f"{name}_ci_high"]).all()
        np.testing.assert_array_equal(bca[f"{name}_se"], pct[f"{name}_se"])  # same replicates
        assert not np.array_equal(bca[f"{name}_ci_low"], pct[f"{name}_ci_low"])
    # cka(X, 2X) = 1 in every replicate: the interval is the point, not NaN
    same = hrsa.compare(_pooled(X), _pooled(2.0 * X), metrics=["cka"], bootstrap=20,
                        ci_method="bca", progress=False)
    np.testing.assert_allclose(same.cka_ci_low, 1.0)
    np.testing.assert_allclose(same.cka_ci_high, 1.0)
    with pytest.raises(ValueError, match="ci_method"):
        hrsa.compare(_pooled(X), _pooled(Y), metrics=["cka"], bootstrap=5, ci_method="bc",
                     progress=False)


def test_bootstrap_needs_two_texts():
    X, Y = _noisy_pair(np.random.default_rng(13), layers=1, n=12, d=3)
    with pytest.raises(ValueError, match="at least 2 texts"):
        hrsa.compare(_tokens(X, np.zeros(12, int)), _tokens(Y, np.zeros(12, int)),
                     metrics=["cka"], bootstrap=5, max_tokens=None, progress=False)


def test_bad_arguments_raise_naming_them():
    X, Y = _noisy_pair(np.random.default_rng(5), layers=1, n=20)
    a, b = _pooled(X), _pooled(Y)
    for kwargs, word in (({"bootstrap": 1}, "bootstrap"), ({"bootstrap": -3}, "bootstrap"),
                         ({"bootstrap": 2.5}, "bootstrap"), ({"ci": 1.0}, "ci"),
                         ({"ci": 0.0}, "ci"), ({"ci": 95}, "ci"),
                         ({"permutations": -1}, "permutations"),
                         ({"keep_replicates": True}, "keep_replicates")):
        with pytest.raises(ValueError, match=word):
            hrsa.compare(a, b, metrics=["cka"], progress=False, **kwargs)
    with pytest.raises(ValueError, match="bootstrap"):
        hrsa.trajectory(a, [b], metrics=["cka"], bootstrap=1, progress=False)


def test_difference_rejects_unpaired_comparisons():
    rng = np.random.default_rng(6)
    X, Y = _noisy_pair(rng, layers=2, n=30)
    opts = dict(metrics=["cka"], bootstrap=5, keep_replicates=True, progress=False)
    ds1 = hrsa.compare(_pooled(X, text_hash="aaaa"), _pooled(Y), **opts)
    ds2 = hrsa.compare(_pooled(X, text_hash="bbbb"), _pooled(Y), **opts)
    with pytest.raises(ValueError, match="text_hash"):
        hrsa.difference(ds1, ds2)
    ds3 = hrsa.compare(_pooled(X, text_hash="aaaa"), _pooled(Y), **{**opts, "seed": 1})
    with pytest.raises(ValueError, match="uncertainty_seed"):
        hrsa.difference(ds1, ds3)
    no_reps = hrsa.compare(_pooled(X, text_hash="aaaa"), _pooled(Y), metrics=["cka"],
                           bootstrap=5, progress=False)
    with pytest.raises(ValueError, match="ds2 holds no bootstrap replicates"):
        hrsa.difference(ds1, no_reps)


# ------------------------------------------------------------------ plots

def test_profile_heatmap_and_realignment_draw_intervals():
    rng = np.random.default_rng(7)
    X, Y = _noisy_pair(rng, layers=3, n=40)
    ds = hrsa.compare(_pooled(X), _pooled(Y), metrics=["cka", "knn_overlap"], bootstrap=10,
                      progress=False)
    fig = hrsa.plot.profile(ds)
    bands = [c for ax in fig.axes for c in ax.collections
             if isinstance(c, matplotlib.collections.PolyCollection)]
    assert len(bands) == 1 + 1  # cka, knn_overlap (k = 10)
    plt.close(fig)
    grid = hrsa.compare(_pooled(X), _pooled(Y), metrics=["cka"], pairs="all", bootstrap=10,
                        progress=False)
    threshold = float(grid.cka.isel(layer_a=0, layer_b=0))  # inside its own interval
    ax = hrsa.plot.heatmap(grid, "cka", mask_ci_crossing=threshold)
    shown = ax.images[0].get_array()
    assert np.ma.is_masked(shown) and shown.mask[0, 0]
    plt.close(ax.figure)
    traj = hrsa.trajectory(_pooled(X), [_pooled(Y), _pooled(X)], metrics=["cka"],
                           bootstrap=8, keep_replicates=True, progress=False)
    assert traj.cka_ci_low.dims == ("checkpoint", "layer")
    fig = hrsa.plot.realignment(traj)
    assert any(isinstance(c, matplotlib.collections.PolyCollection)
               for c in fig.axes[0].collections)
    plt.close(fig)


# ------------------------------------------------------------------ real weights

@pytest.fixture(scope="module")
def minilm_variants(minilm_dir):
    model = transformers.AutoModel.from_pretrained(minilm_dir, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    return (model, tok), (perturbed_copy(model, 0.05, seed=1), tok), \
        (reinitialized_copy(model, seed=1), tok)


def test_paired_difference_separates_random_init_from_a_light_perturbation(minilm_variants):
    base, light, random_init = minilm_variants
    texts, _ = hrsa.probes.load("reuters", limit=40)
    opts = dict(pooling="mean", metrics=["cka"], bootstrap=30, keep_replicates=True,
                progress=False)
    acts = [hrsa.capture(m, texts, pooling="mean", progress=False)
            for m in (base, light, random_init)]
    vs_random = hrsa.compare(acts[0], acts[2], texts, **opts)
    vs_light = hrsa.compare(acts[0], acts[1], texts, **opts)
    diff = hrsa.difference(vs_random, vs_light)
    deep = diff.isel(layer=slice(1, None))
    assert (deep.cka_diff < 0).all()
    assert (deep.cka_diff_ci_high < 0).all(), deep.cka_diff_ci_high.values  # excludes 0
    assert (deep.cka_diff_ci_low <= deep.cka_diff_ci_high).all() and (deep.cka_diff_se > 0).all()
    same = hrsa.difference(vs_light, hrsa.compare(acts[0], acts[1], texts, **opts))
    assert (same.cka_diff_ci_low <= 0).all() and (same.cka_diff_ci_high >= 0).all()
    with pytest.raises(ValueError, match="text_hash"):
        hrsa.difference(vs_light, hrsa.compare(acts[0], acts[1], texts[:39] + ["other"],
                                               **opts))


def test_permutation_p_value_is_minimal_for_a_real_model_against_itself(minilm_variants):
    base, light, _ = minilm_variants
    texts, _ = hrsa.probes.load("reuters", limit=40)
    ds = hrsa.compare(base, light, texts, pooling="mean", metrics=["cka", "knn_overlap"],
                      permutations=19, progress=False)
    np.testing.assert_allclose(ds.cka_p_value, 1 / 20)  # no shuffled pairing reaches it
    np.testing.assert_allclose(ds.knn_overlap_p_value, 1 / 20)
    assert (ds.cka_null_mean < ds.cka).all()
