"""Massive activations on constructed data with a known answer; special tokens on and off."""

import numpy as np
import pytest
import xarray as xr

import hrsa
from hrsa import massive


def token_acts(n_layers=3, n_texts=4, length=5, d=8, seed=0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n_layers, n_texts * length, d)).astype(np.float32)
    return xr.DataArray(
        data, dims=("layer", "token", "feature"),
        coords={"layer": np.arange(n_layers),
                "text": ("token", np.repeat(np.arange(n_texts), length)),
                "position": ("token", np.tile(np.arange(length), n_texts)),
                "token_id": ("token", np.arange(n_texts * length) + 100)},
        attrs={"model": "synthetic"})


def test_massive_rows_are_found_exactly_with_their_feature():
    acts = token_acts()
    acts.values[1, [0, 5], 3] = 1e4  # first token of texts 0 and 1, feature 3, layer 1
    acts.values[2, 10, 6] = -5e3  # first token of text 2, feature 6, layer 2
    found = hrsa.massive_activations(acts, ratio=100)
    assert found.n_massive.values.tolist() == [0, 2, 1]
    assert found.row.values.tolist() == [0, 5, 10]
    assert found.massive_layer.values.tolist() == [1, 1, 2]
    assert found.text.values.tolist() == [0, 1, 2] and (found.position == 0).all()
    assert found.token_id.values.tolist() == [100, 105, 110]
    assert found.feature.values.tolist() == [3, 3, 6]
    assert (found.feature_share > 0.99).all()
    norms = np.linalg.norm(acts.values.astype(np.float64), axis=2)
    np.testing.assert_allclose(found.median_norm, np.median(norms, axis=1))
    np.testing.assert_allclose(found.norm, norms[[1, 1, 2], [0, 5, 10]])
    np.testing.assert_allclose(found.max_ratio, norms.max(axis=1) / np.median(norms, axis=1))
    # the rows massive in any layer are the ones exclude drops
    kept = massive.exclude(acts, 100)
    assert kept.sizes["token"] == 17 and kept.attrs["n_massive_excluded"] == 3
    assert not np.isin([0, 5, 10], kept.token_id.values - 100).any()


def test_pooled_rows_and_a_higher_ratio():
    acts = token_acts().rename(token="sample").drop_vars(["text", "position", "token_id"])
    acts.values[0, 7] *= 50
    assert hrsa.massive_activations(acts, ratio=100).n_massive.sum() == 0
    found = hrsa.massive_activations(acts, ratio=20)
    assert found.row.values.tolist() == [7] and "text" not in found.coords


@pytest.mark.parametrize("ratio", [1, 0.5, -3, float("nan"), float("inf")])
def test_bad_ratios_are_refused(ratio):
    with pytest.raises(ValueError, match="ratio"):
        hrsa.massive_activations(token_acts(), ratio=ratio)


def test_degenerate_inputs_raise_instead_of_scoring():
    acts = token_acts()
    acts.values[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="layer 1 holds non-finite"):
        hrsa.massive_activations(acts)
    acts = token_acts()
    acts.values[2, :15] = 0
    with pytest.raises(ValueError, match="median row norm is 0"):
        hrsa.massive_activations(acts)
    with pytest.raises(ValueError, match="dims"):
        hrsa.massive_activations(token_acts().isel(layer=0))
    with pytest.raises(ValueError, match="drop all"):
        massive.exclude(token_acts(), 100, drop=np.ones(20, dtype=bool))


def test_special_tokens_can_be_left_out_and_are_recorded(minilm_dir, texts):
    added = hrsa.capture(minilm_dir, texts, progress=False)
    plain = hrsa.capture(minilm_dir, texts, add_special_tokens=False, progress=False)
    assert added.attrs["add_special_tokens"] == 1 and plain.attrs["add_special_tokens"] == 0
    assert added.sizes["token"] - plain.sizes["token"] == 2 * len(texts)  # [CLS], [SEP]
    assert not np.isin([101, 102], plain.token_id.values).any()
    with pytest.raises(ValueError, match="tokenize to no token with add_special_tokens"):
        hrsa.capture(minilm_dir, ["a text", "   "], add_special_tokens=False, progress=False)


def test_a_bos_token_in_one_model_only_is_named():
    with_bos = token_acts()
    without = with_bos.isel(token=with_bos.position.values > 0)
    with pytest.raises(ValueError, match="a's tokenizer adds one special token .*"
                                         "add_special_tokens=False"):
        hrsa.compare(with_bos, without, metrics=["cka"], progress=False)


def test_compare_refuses_exclude_massive_on_pooled_rows(minilm_dir, texts):
    with pytest.raises(ValueError, match="exclude_massive applies at token level"):
        hrsa.compare(minilm_dir, minilm_dir, texts, pooling="mean", exclude_massive=100,
                     progress=False)


def test_activations_of_different_texts_are_not_compared(minilm_dir, texts):
    a = hrsa.capture(minilm_dir, texts, pooling="mean", progress=False)
    other = [t + " (again)" for t in texts]
    b = hrsa.capture(minilm_dir, other, pooling="mean", progress=False)
    with pytest.raises(ValueError, match="captured on different texts"):
        hrsa.compare(a, b, metrics=["cka"], progress=False)
    with pytest.raises(ValueError, match="activations a were captured on other texts"):
        hrsa.compare(a, a, other, metrics=["cka"], progress=False)
    assert hrsa.compare(a, a, texts, metrics=["cka"], progress=False).cka.min() > 0.999
