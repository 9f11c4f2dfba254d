"""The metric device: where compare() scores, and GPU scores equal to the CPU's.

The CUDA tests run only where torch sees a GPU (skipped in CI); the device choice is
tested everywhere.
"""

import numpy as np
import pytest
import torch

import hrsa
from hrsa.compare import metric_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_metric_device_follows_the_capture_device():
    assert metric_device("cpu") == torch.device("cpu")
    assert metric_device("mps") == torch.device("cpu")  # no float64 there
    assert metric_device("cuda:0") == torch.device("cuda:0")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert metric_device(None).type == expected


def test_compare_records_the_metric_device(tiny_qwen3_dir, texts):
    ds = hrsa.compare(tiny_qwen3_dir, tiny_qwen3_dir, texts, device="cpu", progress=False)
    assert ds.attrs["metric_device"] == "cpu"


def _noisy(da, scale: float = 0.3, seed: int = 0):
    """``da`` plus seeded Gaussian noise (same coords): a second model's activations."""
    rng = np.random.default_rng(seed)
    return da + scale * float(da.std()) * rng.standard_normal(da.shape).astype(da.dtype)


@pytest.fixture(scope="module")
def many_texts(texts):
    return [f"{t} ({i})" for i in range(4) for t in texts]


@cuda
def test_gpu_scores_equal_cpu_scores(tiny_qwen3_dir, many_texts):
    """The same activations scored on the GPU and on the CPU: float64 metrics to 1e-10,
    identical neighbour sets, and the probe (always on the CPU) identical."""
    acts = hrsa.capture(tiny_qwen3_dir, many_texts, device="cuda", progress=False)
    kw = dict(metrics=["cka", "dimension_correlation", "procrustes_alignment",
                       ("knn_overlap", {"k": (5, 10)}), "cka_debiased", "rsa"],
              progress=False)
    gpu = hrsa.compare(acts, _noisy(acts), device="cuda", **kw)
    cpu = hrsa.compare(acts, _noisy(acts), device="cpu", **kw)
    assert gpu.attrs["metric_device"].startswith("cuda") and cpu.attrs["metric_device"] == "cpu"
    for name in ("cka", "dimension_correlation", "procrustes_alignment", "cka_debiased", "rsa"):
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=0, atol=1e-10, err_msg=name)
    np.testing.assert_array_equal(gpu["knn_overlap"], cpu["knn_overlap"])
    pooled = hrsa.capture(tiny_qwen3_dir, many_texts, pooling="mean", device="cuda",
                          progress=False)
    labels = [i % 2 for i in range(len(many_texts))]
    probe = [hrsa.compare(pooled, _noisy(pooled), labels=labels, metrics=["cka"],
                          device=device, progress=False) for device in ("cuda", "cpu")]
    np.testing.assert_array_equal(probe[0]["probe_direct"], probe[1]["probe_direct"])


@cuda
def test_gpu_bootstrap_equals_cpu_bootstrap(tiny_qwen3_dir, many_texts):
    acts = hrsa.capture(tiny_qwen3_dir, many_texts, device="cuda", progress=False)
    kw = dict(metrics=["cka", "procrustes_alignment"], bootstrap=20, progress=False)
    gpu = hrsa.compare(acts, _noisy(acts), device="cuda", **kw)
    cpu = hrsa.compare(acts, _noisy(acts), device="cpu", **kw)
    for name in ("cka_ci_low", "cka_ci_high", "procrustes_alignment_se"):
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=0, atol=1e-9, err_msg=name)
