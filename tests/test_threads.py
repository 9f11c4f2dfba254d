"""n_threads caps torch and the BLAS/OpenMP pools for the duration of a call only."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

import hrsa
from hrsa.threads import limit_threads


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info()]


def test_limit_threads_applies_and_restores():
    before_torch, before_pools = torch.get_num_threads(), _blas_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas_threads())
    assert torch.get_num_threads() == before_torch and _blas_threads() == before_pools
    with limit_threads(None):
        assert torch.get_num_threads() == before_torch


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_n_threads(bad):
    with pytest.raises(ValueError, match="n_threads"):
        with limit_threads(bad):
            pass


def test_compare_runs_under_the_limit_and_restores(monkeypatch):
    rng = np.random.default_rng(0)
    import xarray as xr

    acts = xr.DataArray(rng.normal(size=(2, 30, 4)), dims=("layer", "sample", "feature"))
    seen = []
    metric = hrsa.metrics.get("cka")
    real = type(metric).prepare

    def spy(self, X, name="X"):
        seen.append(torch.get_num_threads())
        return real(self, X, name)

    monkeypatch.setattr(type(metric), "prepare", spy)
    before = torch.get_num_threads()
    ds = hrsa.compare(acts, acts + 0.1, metrics=["cka"], n_threads=1, progress=False)
    assert seen and set(seen) == {1} and torch.get_num_threads() == before
    assert ds.cka.dims == ("layer",)
