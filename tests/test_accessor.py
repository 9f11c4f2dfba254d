"""``ds.hrsa``: similarities, by level, a tidy table and the plots of any comparison."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

import hrsa  # noqa: E402  (registers the accessor)
from hrsa.engine.scoring import score  # noqa: E402
from hrsa.metrics import get  # noqa: E402


def _acts(seed: int, d: int) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return xr.DataArray(rng.normal(size=(3, 40, d)), dims=("layer", "sample", "feature"),
                        coords={"layer": [0, 1, 2], "depth": ("layer", [0.0, 0.5, 1.0])})


def _comparison(pairs: str = "matched") -> xr.Dataset:
    metrics = [get("dimension_correlation"), get("cka"), get("knn_overlap", k=(3, 5))]
    return score(metrics, _acts(0, 6), _acts(1, 6), pairs, (), False)


def test_similarities_and_levels():
    ds = _comparison()
    assert ds.hrsa.by_level() == {"representation": ["dimension_correlation"],
                                  "geometry": ["cka", "knn_overlap"]}
    assert list(ds.hrsa.similarities) == ["dimension_correlation", "cka", "knn_overlap"]
    assert all("diagnostic" not in v.attrs for v in ds.hrsa.similarities.data_vars.values())


def test_tidy_table_has_one_row_per_value():
    ds = _comparison()
    table = ds.hrsa.to_dataframe()
    assert list(table.columns[:2]) == ["variable", "level"] and table.columns[-1] == "value"
    assert len(table) == 3 + 3 + 3 * 2  # layers x (1, 1, two k)
    knn = table[(table.variable == "knn_overlap") & (table.k == 5)].sort_values("layer")
    np.testing.assert_array_equal(knn.value.values, ds.knn_overlap.sel(k=5).values)
    assert table[table.variable == "cka"].k.isna().all()


def test_plots_and_summary_from_the_accessor():
    ds = _comparison("all")
    assert ds.hrsa.heatmap("cka") is not None
    assert ds.hrsa.summary() == hrsa.summarize(ds)
    assert _comparison().hrsa.report() is not None
