"""Streaming comparison: float64 moments accumulated batch by batch, so that token-level
comparisons over any number of texts run in memory that does not grow with the texts.

For paired rows ``X: (n, d1)`` and ``Y: (n, d2)`` (the same token positions in both
models), the sums ``n``, ``sum X``, ``sum Y``, ``X^T X``, ``Y^T Y`` and ``X^T Y`` determine
the centred products ``Cxy = X^T Y - n mx my^T`` (and ``Cxx``, ``Cyy``), and from them

* linear CKA = ``||Cxy||_F^2 / (||Cxx||_F ||Cyy||_F)`` (the feature form of HSIC),
* dimension correlation = mean over features j of ``Cxy_jj / sqrt(Cxx_jj Cyy_jj)``,
* procrustes_alignment = H_inv of the Procrustes map from the SVD of ``Cxy``,

exactly the values :func:`hrsa.compare` gives on the same rows (tested): each of these
metrics implements ``score_moments`` (:mod:`hrsa.metrics.moments`). Neighbour-based
metrics (k-NN overlap) need all rows at once and are not streamed. Memory: per matched
layer pair ``(d1^2 + d2^2 + d1 d2)`` float64 (29 layers of width 1,024: 0.7 GB), plus one
chunk of token rows.

The same moments serve activations on disk: :func:`score_chunked`
(:mod:`hrsa.engine.chunked`, re-exported here) is what :func:`hrsa.compare` runs on
dask-backed activations (:mod:`hrsa.store`), reading them one chunk of rows at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from . import distributed
from .capture import capture_views, validate_texts
from .engine.assemble import chance_floor, fits_width, provenance, to_variables
from .engine.chunked import pair_moments, score_chunked
from .engine.pairs import layer_pairs, pair_grid
from .metrics import get
from .metrics.moments import STREAMING_METRICS, CrossMoments
from .models import load
from .options import Options

__all__ = ["compare_streaming", "CrossMoments", "STREAMING_METRICS", "score_chunked",
           "pair_moments"]


def compare_streaming(
    a: Any,
    b: Any,
    texts: Sequence[str],
    *,
    metrics: Sequence[str] = STREAMING_METRICS,
    chunk_texts: int = 256,
    progress: bool = True,
    **capture_options: Any,
) -> xr.Dataset:
    """Token-level comparison of matched layers over any number of texts, in bounded memory.

    Texts are read ``chunk_texts`` at a time; both models capture the chunk's token rows
    (every real token, as :func:`hrsa.capture` with ``pooling=None``), the rows update the
    :class:`CrossMoments` of every matched layer pair, and the chunk is dropped. Every row
    is used (no ``max_tokens`` subsample). Under a process group (torchrun), each rank
    streams its share of the chunks and the moments are summed with ``all_reduce``
    (:func:`hrsa.distributed.text_chunks`); every rank returns the same Dataset.

    Args:
        a, b: models, as :func:`hrsa.capture` takes them (loaded once).
        texts: the texts; their tokenizations must agree in both models.
        metrics: a subset of :data:`STREAMING_METRICS`.
        chunk_texts: texts per chunk (memory: one chunk's token rows of every layer).
        **capture_options: as :func:`hrsa.capture` (``batch_size``, ``attention``,
            ``device``, ``dtype``, ``exclude_first_token``, ...).

    Returns:
        A Dataset like ``hrsa.compare(..., pairs="matched", max_tokens=None)`` restricted
        to ``metrics``, with attr ``streaming = 1``.
    """
    texts = validate_texts(texts)
    unknown = sorted(set(metrics) - set(STREAMING_METRICS))
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {STREAMING_METRICS}, "
                         f"got {list(metrics)}")
    if chunk_texts < 1:
        raise ValueError(f"chunk_texts must be >= 1, got {chunk_texts}")
    chunks = distributed.text_chunks(texts, chunk_texts)  # this rank's; all in one process
    load_keys = ("device", "dtype", "revision", "attention", "device_map", "max_memory",
                 "offload_folder")
    load_opts = {k: capture_options.pop(k) for k in load_keys if k in capture_options}
    encoders = [load(model, **load_opts) for model in (a, b)]
    attention = {"attention": load_opts["attention"]} if "attention" in load_opts else {}
    moments: list[CrossMoments] | None = None
    for chunk in tqdm(chunks, desc="streaming", disable=not progress, unit="chunk"):
        xa, xb = (capture_views(enc, chunk, (None,), progress=False, **attention,
                                **capture_options)[0] for enc in encoders)
        if xa.sizes["token"] != xb.sizes["token"] or \
                not np.array_equal(xa.token_id.values, xb.token_id.values):
            raise ValueError("a and b tokenize the texts differently, so token rows do not "
                             "pair; stream pooled vectors instead with hrsa.compare("
                             "pooling='mean')")
        if moments is None:
            pairs = layer_pairs(xa.depth.values, xb.depth.values, "matched")
            moments = [CrossMoments.zeros(xa.sizes["feature"], xb.sizes["feature"])
                       for _ in pairs]
            first_a, first_b = xa, xb
        for (i, j), m in zip(pairs, moments):
            m.update(torch.from_numpy(xa.values[i]), torch.from_numpy(xb.values[j]))
    distributed.all_reduce_moments(moments)
    return _dataset(moments, pairs, first_a, first_b, list(metrics), texts,
                    {**load_opts, **capture_options})


def _dataset(moments: list[CrossMoments], pairs: list[tuple[int, int]], xa: xr.DataArray,
             xb: xr.DataArray, metrics: list[str], texts: list[str],
             capture_options: dict) -> xr.Dataset:
    """The comparison Dataset of the streamed ``moments`` of the matched layer ``pairs``
    (``xa``, ``xb``: the first chunk's activations, for coords and model attrs), built by
    the engine's assembler like :func:`hrsa.compare`'s, with attrs ``streaming = 1`` and
    ``n_rows`` every row streamed."""
    metric_objs = [get(name) for name in metrics]
    opts = Options(preset="none", metrics=tuple(metric_objs), pairs="matched", pooling=None,
                   max_tokens=None, seed=0, final_layer_only=(),
                   capture_options=capture_options)
    dims, coords, shape = pair_grid(xa, xb, pairs, "matched")
    n, d_a, d_b = moments[0].n, xa.sizes["feature"], xb.sizes["feature"]
    variables = {}
    for metric in metric_objs:
        if fits_width(metric, d_a, d_b):
            variables.update(to_variables(metric, [m.score(metric.name) for m in moments],
                                          dims, coords, shape,
                                          chance=chance_floor(metric, n=n, d=d_a)))
    attrs = {**provenance(xa, xb, texts, opts, rows_scored=False), "n_rows": int(n),
             "streaming": 1}
    return xr.Dataset(variables, coords=coords, attrs=attrs)
