"""Activations on disk (hrsa.store): a capture written to zarr equals the in-memory capture,
compare on stores equals compare in memory, memory stays bounded, and neither an existing
path nor a failed capture leaves a partial store."""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

import hrsa
from hrsa.store import StoreWriter

zarr = pytest.importorskip("zarr")
dask_array = pytest.importorskip("dask.array")

MOMENT_METRICS = ["cka", "dimension_correlation", "procrustes_alignment"]


@pytest.fixture(scope="module")
def texts():
    return hrsa.probes.load("reuters", limit=24)[0]


@pytest.fixture(scope="module")
def stores(tiny_qwen3_dir, texts, tmp_path_factory):
    """Token rows of the tiny Qwen3 run causally (a) and bidirectionally (b): in memory and
    as stores of 97-row chunks."""
    folder = tmp_path_factory.mktemp("stores")
    out = {}
    for name, attention in (("a", "causal"), ("b", "bidirectional")):
        options = dict(attention=attention, batch_size=5, progress=False)
        out[name] = (hrsa.capture(tiny_qwen3_dir, texts, **options),
                     hrsa.capture(tiny_qwen3_dir, texts, store=folder / f"{name}.zarr",
                                  chunk_rows=97, **options))
    return out


def _entries(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("options", [{}, {"pooling": "mean"},
                                     {"max_tokens": 300, "exclude_first_token": True}])
def test_capture_to_a_store_equals_the_in_memory_capture(tiny_qwen3_dir, texts, tmp_path,
                                                          options):
    in_memory = hrsa.capture(tiny_qwen3_dir, texts, batch_size=5, progress=False, **options)
    stored = hrsa.capture(tiny_qwen3_dir, texts, batch_size=5, progress=False,
                          store=tmp_path / "acts.zarr", chunk_rows=13, **options)
    assert isinstance(stored.data, dask_array.Array)
    row_dim = stored.dims[1]
    n_rows = stored.sizes[row_dim]
    assert stored.chunksizes["layer"] == (1,) * stored.sizes["layer"]
    assert stored.chunksizes[row_dim][:-1] == (13,) * (n_rows // 13 - (n_rows % 13 == 0))
    xr.testing.assert_identical(stored.compute(), in_memory)  # values, coords and attrs
    on_disk = zarr.open_array(tmp_path / "acts.zarr" / "activations", mode="r")
    assert on_disk.chunks == (1, 13, stored.sizes["feature"])
    plain = xr.open_dataarray(tmp_path / "acts.zarr", engine="zarr", chunks={})
    xr.testing.assert_identical(plain.compute(), in_memory)
    assert _entries(tmp_path) == ["acts.zarr"]  # no staging or temporary folder left


@pytest.mark.parametrize("pairs", ["matched", "all"])
def test_compare_on_stores_equals_compare_in_memory(stores, pairs):
    (mem_a, lazy_a), (mem_b, lazy_b) = stores["a"], stores["b"]
    n = mem_a.sizes["token"]
    assert n > 2 * 300
    others = [("knn_overlap", {"k": (5, 10)}), "cka_debiased"]
    kwargs = dict(pairs=pairs, seed=3, progress=False)
    final = dict(final_layer_only=["procrustes_alignment"])
    lazy = hrsa.compare(lazy_a, lazy_b, metrics=MOMENT_METRICS + others, max_tokens=300,
                        **final, **kwargs)
    every_row = hrsa.compare(mem_a, mem_b, metrics=MOMENT_METRICS, max_tokens=None, **final,
                             **kwargs)
    subsample = hrsa.compare(mem_a, mem_b, metrics=others, max_tokens=300, **kwargs)
    for name in MOMENT_METRICS:  # float64 moments over every row, chunk by chunk
        np.testing.assert_allclose(lazy[name], every_row[name], rtol=0, atol=1e-8,
                                   err_msg=name)
        assert lazy[name].dims == every_row[name].dims
        assert lazy[name].attrs["rows"].startswith(f"all {n} rows")
    for name in ("knn_overlap", "cka_debiased"):  # the same seeded subsample in memory
        np.testing.assert_array_equal(lazy[name], subsample[name], err_msg=name)
        assert lazy[name].attrs["rows"].startswith(f"300 of {n} rows")
    assert lazy.procrustes_alignment.attrs["layers"] == every_row.procrustes_alignment.attrs[
        "layers"]
    assert list(lazy.data_vars)[:2] == ["cka", "dimension_correlation"]  # metric order
    assert lazy.attrs["chunked"] == 1 and lazy.attrs["n_rows_moments"] == n
    assert lazy.attrs["n_rows"] == 300 and lazy.attrs["model_a"] == mem_a.attrs["model"]


def test_one_store_against_an_in_memory_array_and_bad_options(stores):
    (mem_a, lazy_a), (mem_b, _) = stores["a"], stores["b"]
    mixed = hrsa.compare(lazy_a, mem_b, metrics=["cka"], max_tokens=None, progress=False)
    in_memory = hrsa.compare(mem_a, mem_b, metrics=["cka"], max_tokens=None, progress=False)
    np.testing.assert_allclose(mixed.cka, in_memory.cka, rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match="bootstrap= and permutations=.*dask-backed"):
        hrsa.compare(lazy_a, mem_b, metrics=["cka"], bootstrap=5, progress=False)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch, xarray as xr, hrsa
    from hrsa.store import StoreWriter, placeholder
    torch.set_num_threads(1)
    folder, n, chunk = sys.argv[1], int(sys.argv[2]), 16384
    layers, width = 4, 64
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(width, width)).astype(np.float32)
    for name in ("a", "b"):
        template = xr.DataArray(placeholder((layers, n, width)),
                                dims=("layer", "token", "feature"),
                                coords={"layer": np.arange(layers),
                                        "depth": ("layer", np.arange(layers) / (layers - 1)),
                                        "text": ("token", np.arange(n) // 50)})
        with StoreWriter(f"{folder}/{name}.zarr", template, chunk_rows=chunk) as writer:
            for r0 in range(0, n, chunk):
                m = min(chunk, n - r0)
                rows = np.random.default_rng(r0).standard_normal((layers, m, width),
                                                                 dtype=np.float32)
                rows = rows if name == "a" else rows @ mixing
                writer.write(rows, np.arange(r0, r0 + m))
    a, b = (hrsa.store.open_activations(f"{folder}/{name}.zarr") for name in ("a", "b"))
    options = dict(max_tokens=1000, progress=False)
    hrsa.compare(a[:, :20000], b[:, :20000], **options)  # warm up every code path
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ds = hrsa.compare(a, b, **options)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stored_mb = 2 * a.size * 4 / 2**20
    print(json.dumps({"growth_mb": (after - before) / 1024, "stored_mb": stored_mb,
                      "cka": ds.cka.values.tolist(), "n": ds.attrs["n_rows_moments"]}))
""")


def test_comparing_stores_keeps_memory_well_below_the_rows(tmp_path):
    n = 200_000
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path), str(n)],
                         check=True, capture_output=True, text=True, timeout=300, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] == n and result["stored_mb"] > 350
    assert result["cka"][0] > 0.5  # b is a linear map of a: the comparison is real
    assert result["growth_mb"] < result["stored_mb"] / 6, result


def test_an_existing_path_needs_overwrite_and_is_checked_before_loading(
        tiny_qwen3_dir, texts, tmp_path):
    path = tmp_path / "acts.zarr"
    first = hrsa.capture(tiny_qwen3_dir, texts[:3], layers=[0], store=path, progress=False)
    listing = sorted(p.name for p in path.rglob("*"))
    with pytest.raises(FileExistsError, match="overwrite=True"):  # no model is loaded
        hrsa.capture(str(tmp_path / "no-such-model"), texts, store=path, progress=False)
    assert sorted(p.name for p in path.rglob("*")) == listing
    xr.testing.assert_identical(hrsa.store.open_activations(path).compute(), first.compute())

    replaced = hrsa.capture(tiny_qwen3_dir, texts[:5], layers=[1, 2], store=path,
                            overwrite=True, progress=False)
    assert list(replaced.layer.values) == [1, 2] and replaced.attrs["n_texts"] == 5
    assert _entries(tmp_path) == ["acts.zarr"]

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a zarr store"):
        hrsa.capture(tiny_qwen3_dir, texts, store=other, overwrite=True, progress=False)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hrsa.capture(tiny_qwen3_dir, texts, store=tmp_path / "missing" / "acts.zarr",
                     progress=False)
    with pytest.raises(ValueError, match="chunk_rows applies with store= only"):
        hrsa.capture(tiny_qwen3_dir, texts, chunk_rows=10, progress=False)
    assert _entries(tmp_path) == ["acts.zarr", "notes"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_capture_that_fails_midway_leaves_nothing(tiny_qwen3_dir, texts, tmp_path,
                                                    monkeypatch, error):
    old = hrsa.capture(tiny_qwen3_dir, texts[:2], layers=[0], store=tmp_path / "old.zarr",
                       progress=False)
    capture_module = importlib.import_module("hrsa.capture")  # hrsa.capture is the function
    forward = capture_module._forward_layers
    calls = []

    def fail_on_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise error("interrupted")
        return forward(*args, **kwargs)

    monkeypatch.setattr(capture_module, "_forward_layers", fail_on_the_third_batch)
    for path, overwrite in ((tmp_path / "new.zarr", False), (tmp_path / "old.zarr", True)):
        calls.clear()
        with pytest.raises(error, match="interrupted"):
            hrsa.capture(tiny_qwen3_dir, texts, batch_size=4, store=path, chunk_rows=10,
                         overwrite=overwrite, progress=False)
        assert len(calls) == 3
    assert _entries(tmp_path) == ["old.zarr"]  # nothing new; the old store intact
    xr.testing.assert_identical(hrsa.store.open_activations(tmp_path / "old.zarr").compute(),
                                old.compute())


def test_writer_rejects_rows_written_twice_or_missing(tmp_path):
    template = xr.DataArray(np.zeros((2, 10, 3), np.float32), dims=("layer", "token", "feature"))
    rows = np.ones((2, 4, 3), np.float32)
    with pytest.raises(ValueError, match="written twice"):
        with StoreWriter(tmp_path / "x.zarr", template, chunk_rows=3) as writer:
            writer.write(rows, np.arange(4))
            writer.write(rows, np.arange(3, 7))
    with pytest.raises(ValueError, match="6 of 10 rows were never written"):
        with StoreWriter(tmp_path / "x.zarr", template, chunk_rows=3) as writer:
            writer.write(rows, np.array([9, 0, 5, 2]))
    with pytest.raises(ValueError, match=r"rows must be \(2, 3, 3\)"):
        with StoreWriter(tmp_path / "x.zarr", template) as writer:
            writer.write(rows, np.arange(3))
    assert _entries(tmp_path) == []


def test_missing_zarr_or_dask_says_how_to_install(tiny_qwen3_dir, texts, tmp_path,
                                                   monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match=r'pip install "hrsa\[scale\]"'):
        hrsa.capture(tiny_qwen3_dir, texts, store=tmp_path / "acts.zarr", progress=False)
    assert _entries(tmp_path) == []
    script = ("import sys; sys.modules['zarr'] = sys.modules['dask'] = None; import hrsa; "
              "print(hrsa.capture.__name__)")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
