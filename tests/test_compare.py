"""compare() and trajectory() end to end on real MiniLM weights and tiny models."""

import warnings
import numpy as np
import pytest
import torch
import transformers
import xarray as xr

import hrsa
from hrsa.compare import layer_pairs
from hrsa.experiments.variants import perturbed_copy, reinitialized_copy


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    model = transformers.AutoModel.from_pretrained(minilm_dir, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def task():
    texts, labels = hrsa.probes.load("reuters", limit=120)
    return texts, labels


@pytest.fixture(scope="module")
def self_report(minilm, task):
    texts, labels = task
    return hrsa.compare(minilm, minilm, texts, labels=labels, max_tokens=3000, progress=False)


def test_self_comparison_is_one_at_every_level(self_report):
    ds = self_report
    for name in ("dimension_correlation", "procrustes_alignment", "cka", "knn_overlap"):
        np.testing.assert_allclose(ds[name].values, 1.0, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(ds.probe_self.values, ds.probe_direct.values)
    assert ds.sizes["layer"] == 7 and list(ds.knn_overlap.k.values) == [5, 10, 50]
    assert list(ds.split.values) == ["train", "dev", "test"]
    for name, var in ds.data_vars.items():
        assert var.attrs["level"] in ("representation", "geometry", "function"), name
        for key in ("long_name", "params", "range", "invariances"):
            assert key in var.attrs, (name, key)
    assert ds.attrs["n_texts"] == 120 and ds.attrs["n_rows"] == 3000
    assert ds.attrs["hrsa_version"] == hrsa.__version__ and len(ds.attrs["text_hash"]) == 16


def test_random_init_copy_falls_well_below_at_every_level(minilm, task, self_report):
    texts, labels = task
    model, tok = minilm
    ds = hrsa.compare(minilm, (reinitialized_copy(model, seed=1), tok), texts, labels=labels,
                      max_tokens=3000, progress=False)
    deep = ds.isel(layer=slice(1, None))  # layer 0 shares nothing but the tokenizer either
    assert float(deep.dimension_correlation.max()) < 0.2
    assert float(deep.procrustes_alignment.max()) < 0.5
    assert float(deep.cka.max()) < 0.7
    assert float(deep.knn_overlap.sel(k=10).max()) < 0.3
    last = ds.isel(layer=-1)
    gap = last.probe_self.sel(split="test") - last.probe_direct.sel(split="test")
    assert float(gap) > 0.3, float(gap)


def test_all_pairs_equal_per_pair_metric_calls(minilm, task, tiny_qwen3_dir):
    texts, _ = task
    model, tok = minilm
    other = (perturbed_copy(model, 0.3, seed=2), tok)
    ds = hrsa.compare(minilm, other, texts[:40], pairs="all", max_tokens=800,
                      metrics=["cka", "dimension_correlation"], progress=False)
    assert ds.cka.dims == ("layer_a", "layer_b") and ds.cka.shape == (7, 7)
    xa = hrsa.capture(minilm, texts[:40], max_tokens=800, progress=False)
    xb = hrsa.capture(other, texts[:40], max_tokens=800, progress=False)
    cka = hrsa.metrics.get("cka")
    for i, j in [(0, 0), (2, 5), (6, 1), (6, 6)]:
        expected = cka(xa.isel(layer=i).values, xb.isel(layer=j).values)
        np.testing.assert_allclose(ds.cka.isel(layer_a=i, layer_b=j), expected, rtol=1e-10)
    # captured activations are reused as they are
    again = hrsa.compare(xa, xb, pairs="all", metrics=["cka", "dimension_correlation"],
                         progress=False)
    xr.testing.assert_allclose(again.cka, ds.cka)


def test_matched_pairs_follow_relative_depth():
    depth_a = np.arange(7) / 6
    depth_b = np.arange(4) / 3
    assert layer_pairs(depth_a, depth_b, "matched") == [(0, 0), (2, 1), (4, 2), (6, 3)]
    assert layer_pairs(depth_b, depth_a, "matched") == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert len(layer_pairs(depth_a, depth_b, "all")) == 28


def test_models_of_different_depth(minilm_dir, tmp_path, task):
    texts, _ = task
    config = transformers.AutoConfig.from_pretrained(minilm_dir)
    config.num_hidden_layers = 3
    from conftest import save_tiny_model

    shallow = save_tiny_model(config, minilm_dir, tmp_path / "bert3")
    ds = hrsa.compare(minilm_dir, shallow, texts[:20], metrics=["cka"], max_tokens=500,
                      progress=False)
    assert list(ds.layer_a.values) == [0, 2, 4, 6]
    assert list(ds.layer_b.values) == [0, 1, 2, 3]
    np.testing.assert_allclose(ds.depth.values, [0, 1 / 3, 2 / 3, 1])


def test_netcdf_round_trip_and_summary(self_report, tmp_path):
    path = tmp_path / "report.nc"
    self_report.to_netcdf(path)
    back = xr.open_dataset(path).load()
    xr.testing.assert_identical(back, self_report)
    text = hrsa.summarize(back)
    assert text == back.hrsa.summary()
    for name in ("representation", "geometry", "function", "cka", "knn_overlap k=50",
                 "probe_direct split=test"):
        assert name in text


def test_trajectory_captures_each_checkpoint_once(minilm, task, monkeypatch):
    texts, labels = task
    model, tok = minilm
    checkpoints = [minilm, (perturbed_copy(model, 0.2, seed=0), tok),
                   (perturbed_copy(model, 0.6, seed=0), tok)]
    calls = []
    real = hrsa.distributed.capture_views  # what compare captures through
    monkeypatch.setattr(hrsa.distributed, "capture_views",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = hrsa.trajectory(minilm, checkpoints, texts[:60], labels=labels[:60],
                         steps=[0, 10, 20], max_tokens=1500, progress=False)
    assert len(calls) == 3  # the reference is the first checkpoint too: captured once
    assert ds.cka.dims == ("checkpoint", "layer")
    assert list(ds.step.values) == [0, 10, 20]
    np.testing.assert_allclose(ds.cka.isel(checkpoint=0), 1.0, atol=1e-6)
    mean_cka = ds.cka.mean("layer").values
    assert mean_cka[0] > mean_cka[1] > mean_cka[2]
    assert ds.probe_direct.dims == ("checkpoint", "layer", "split")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"texts": None}, "texts"),
        ({"labels": ["a", "b"]}, "labels"),
        ({"labels": ["x"] * 4}, "two classes"),
        ({"metrics": ["nope"]}, "unknown metric"),
        ({"pairs": "diagonal"}, "pairs"),
    ],
)
def test_bad_input(minilm, kwargs, match):
    kwargs = {"texts": ["one text", "two texts", "three", "four"], **kwargs}
    with pytest.raises(ValueError, match=match):
        hrsa.compare(minilm, minilm, progress=False, **kwargs)


def test_tokenizers_that_disagree_point_to_mean_pooling(minilm, tmp_path):
    model, tok = minilm
    tok.save_vocabulary(str(tmp_path))
    cased = transformers.BertTokenizer(vocab_file=str(tmp_path / "vocab.txt"),
                                       do_lower_case=False)  # splits capitals differently
    texts = ["Hello World", "Some MIXED case Text"]
    with pytest.raises(ValueError, match="pooling='mean'"):
        hrsa.compare(minilm, (model, cased), texts, progress=False)
    pooled = hrsa.compare(minilm, (model, cased), texts, pooling="mean", metrics=["cka"],
                          progress=False)
    assert pooled.sizes["layer"] == 7


def test_different_hidden_sizes_leave_out_same_width_metrics(minilm_dir, tiny_qwen3_dir, task):
    texts, labels = task
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = hrsa.compare(minilm_dir, tiny_qwen3_dir, texts[:30], max_tokens=400,
                          progress=False)
    messages = " ".join(str(w.message) for w in caught)
    for name in ("dimension_correlation", "procrustes_alignment"):
        assert f"{name} needs the same feature dimension" in messages
    assert "dimension_correlation" not in ds and "procrustes_alignment" not in ds
    assert {"cka", "knn_overlap"} <= set(ds.data_vars)
    assert ds.sizes["layer"] == 4  # the 3-block model sets the grid


def test_function_level_metrics_are_reachable_from_compare():
    """linear_predictivity scores layer pairs like any metric; the probe needs labels=."""
    rng = np.random.default_rng(0)
    coords = {"layer": [0, 1], "depth": ("layer", [0.0, 1.0])}
    xa = xr.DataArray(rng.normal(size=(2, 60, 5)), dims=("layer", "sample", "feature"),
                      coords=coords)
    xb = xa + 0.1 * rng.normal(size=xa.shape)
    ds = hrsa.compare(xa, xb, metrics=["linear_predictivity", "cka"], progress=False)
    assert ds.linear_predictivity.attrs["level"] == "function"
    assert ds.linear_predictivity.dims == ("layer",)
    expected = hrsa.metrics.get("linear_predictivity")(xa.values[1], xb.values[1])
    assert float(ds.linear_predictivity[1]) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="labels="):
        hrsa.compare(xa, xb, metrics=[hrsa.metrics.get("linear_probe_transfer",
                                                       labels=[0, 1] * 30)], progress=False)
