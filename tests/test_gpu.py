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
    """20 texts that differ from their first word on: with the first token dropped, no two
    token rows past the embedding layer are equal, so no k-NN ties that the CPU and GPU
    could break differently (the embedding layer repeats a token's row wherever it
    occurs)."""
    first = ("red blue green black white brown pink grey gold silver one two three four five "
             "six seven eight nine ten").split()
    return [f"{word} {t}" for word, t in zip(first, texts * 4)]


@cuda
def test_gpu_scores_equal_cpu_scores(tiny_qwen3_dir, many_texts):
    """The same activations scored on the GPU and on the CPU: float64 metrics to 1e-10,
    identical neighbour sets, and the probe (the torch solver, fitted on each device) with
    identical accuracies."""
    acts = hrsa.capture(tiny_qwen3_dir, many_texts, device="cuda", progress=False,
                        exclude_first_token=True).isel(layer=slice(1, None))
    for layer in acts.values:
        assert len(np.unique(layer, axis=0)) == len(layer)
    kw = dict(metrics=["cka", "dimension_correlation", "procrustes_alignment",
                       ("knn_overlap", {"k": (5, 10)}), "cka_debiased", "rsa"],
              progress=False)
    gpu = hrsa.compare(acts, _noisy(acts), device="cuda", **kw)
    cpu = hrsa.compare(acts, _noisy(acts), device="cpu", **kw)
    assert gpu.attrs["metric_device"].startswith("cuda") and cpu.attrs["metric_device"] == "cpu"
    for name in ("cka", "dimension_correlation", "procrustes_alignment", "cka_debiased", "rsa"):
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=0, atol=1e-10, err_msg=name)
    # the same neighbour sets; the mean over rows may differ in the last bit
    np.testing.assert_allclose(gpu["knn_overlap"], cpu["knn_overlap"], rtol=0, atol=1e-12)
    pooled = hrsa.capture(tiny_qwen3_dir, many_texts, pooling="mean", device="cuda",
                          progress=False)
    labels = [i % 2 for i in range(len(many_texts))]
    probe = [hrsa.compare(pooled, _noisy(pooled), labels=labels, metrics=["cka"],
                          device=device, progress=False) for device in ("cuda", "cpu")]
    np.testing.assert_array_equal(probe[0]["probe_direct"], probe[1]["probe_direct"])


@cuda
def test_gpu_breaks_knn_ties_as_the_cpu_does():
    """Rows with exact copies (ties at cosine 1, which torch.topk orders differently on the
    two devices): the same neighbour lists, lower row index first among ties."""
    rng = np.random.default_rng(3)
    X = torch.from_numpy(rng.standard_normal((50, 32)).astype(np.float32)[rng.integers(0, 50, 3000)])
    metric = hrsa.metrics.get("knn_overlap", k=(5, 10, 50))
    np.testing.assert_array_equal(metric.prepare(X.cuda()).idx.cpu(), metric.prepare(X).idx)


@cuda
def test_gpu_bootstrap_equals_cpu_bootstrap(tiny_qwen3_dir, many_texts):
    acts = hrsa.capture(tiny_qwen3_dir, many_texts, device="cuda", progress=False)
    kw = dict(metrics=["cka", "procrustes_alignment"], bootstrap=20, progress=False)
    gpu = hrsa.compare(acts, _noisy(acts), device="cuda", **kw)
    cpu = hrsa.compare(acts, _noisy(acts), device="cpu", **kw)
    for name in ("cka_ci_low", "cka_ci_high", "procrustes_alignment_se"):
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=0, atol=1e-9, err_msg=name)


def test_gpu_batches_keep_a_token_budget():
    """On a GPU, length-sorted texts are batched up to 65,536 padded tokens (at most 512
    texts); every text once, in order; a text over the budget alone. CPU: 32 per batch."""
    from hrsa.batches import GPU_BATCH_MAX, GPU_BATCH_TOKENS, length_batches
    rng = np.random.default_rng(0)
    lengths = np.sort(np.concatenate([rng.integers(1, 40, 3000), [70_000],
                                      rng.integers(100, 2000, 300)]))
    order = np.arange(len(lengths))
    batches = length_batches(lengths, order, None, torch.device("cuda"))
    np.testing.assert_array_equal(np.concatenate(batches), order)
    for b in batches:
        assert len(b) <= GPU_BATCH_MAX
        assert len(b) == 1 or len(b) * lengths[b[-1]] <= GPU_BATCH_TOKENS
    assert [len(b) for b in batches if lengths[b[-1]] == 70_000] == [1]
    assert max(len(b) for b in batches) == GPU_BATCH_MAX  # short texts fill the cap
    cpu = length_batches(lengths, order, None, torch.device("cpu"))
    assert [len(b) for b in cpu[:-1]] == [32] * (len(cpu) - 1)
    assert [len(b) for b in length_batches(lengths, order, 7, torch.device("cuda"))][:2] == [7, 7]


def test_knn_similarities_ignore_a_global_tf32_setting(monkeypatch):
    """k-NN's products run at "highest" float32 precision even under a global "high"
    (TF32 on CUDA), and the global setting is restored afterwards."""
    seen = []
    mm = torch.mm

    def recording_mm(*args, **kwargs):
        seen.append(torch.get_float32_matmul_precision())
        return mm(*args, **kwargs)

    monkeypatch.setattr(torch, "mm", recording_mm)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        X = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
        hrsa.metrics.get("knn_overlap", k=5).prepare(X)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    assert seen and set(seen) == {"highest"}
