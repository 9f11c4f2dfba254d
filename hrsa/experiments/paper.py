"""Reproduce the HRSA paper's comparisons: its model pairs, its protocol (the "paper"
preset), one netCDF per pair and a summary table in the layout of the paper's tables.

The paper: Chan et al., "Do Reasoning Models Enhance Embedding Models?", arXiv 2601.21192
(2026). Run on a GPU in bf16 (the default dtype on CUDA)::

    hrsa reproduce --texts my_cot_traces.txt --out paper_runs/
    hrsa reproduce --texts ag_news --labels-from-texts --pair rlvr-1.5b --out paper_runs/
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from ..compare import compare
from ..engine.pairs import layer_pairs

# (name, training that separates b from a, model a, model b), by hub id.
PAPER_PAIRS: tuple[tuple[str, str, str, str], ...] = (
    ("sft-math-1.5b", "SFT",
     "Qwen/Qwen2.5-Math-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ("rlvr-prolonged-1.5b", "RLVR (prolonged)",
     "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "nvidia/Nemotron-Research-Reasoning-Qwen-1.5B"),
    ("rlvr-simplerl-1.5b", "RLVR",
     "Qwen/Qwen2.5-1.5B", "hkust-nlp/Qwen-2.5-1.5B-SimpleRL-Zoo"),
    ("emb-qwen3-0.6b", "RLVR, then contrastive (-Emb)",
     "lucaswychan/Qwen3-0.6B-Base-Reasoning-Embedding",
     "lucaswychan/Qwen3-0.6B-Reasoning-Embedding"),
)


def reproduce(
    pairs: Sequence[tuple[str, str, str, str]] | None,
    texts: Sequence[str],
    out_dir: str | Path,
    *,
    labels: Sequence | None = None,
    progress: bool = True,
    **compare_options: Any,
) -> str:
    """Run ``compare(a, b, texts, preset="paper")`` for each pair, write
    ``{out_dir}/{name}.nc`` and ``{out_dir}/summary.md``; return the summary table.

    Args:
        pairs: ``(name, training, model_a, model_b)`` tuples; None: :data:`PAPER_PAIRS`.
        texts: the texts (the paper: verified chain-of-thought math traces, MMLU-Pro).
        labels: probe labels for the function level (the paper: AG News topics).
        **compare_options: passed to :func:`hrsa.compare` (``device``, ``dtype``,
            ``max_tokens``, ...); explicit options override the paper preset.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, training, model_a, model_b in (PAPER_PAIRS if pairs is None else pairs):
        ds = compare(model_a, model_b, texts, labels=labels, preset="paper",
                     progress=progress, **compare_options)
        ds.attrs["pair"], ds.attrs["training"] = name, training
        ds.to_netcdf(out / f"{name}.nc")
        rows.append(summary_row(ds))
    table = summary_table(rows)
    (out / "summary.md").write_text(table + "\n")
    return table


def summary_row(ds: xr.Dataset) -> dict[str, Any]:
    """The paper's table entries for one comparison: H_inv on the final layer, k-NN overlap
    averaged over layers (k = 5, 10, 50), and linear CKA, dimension correlation and probe
    accuracies averaged over matched layers (the diagonal of an all-pairs grid)."""
    row: dict[str, Any] = {"pair": ds.attrs.get("pair", ""),
                           "training": ds.attrs.get("training", ""),
                           "a": ds.attrs["model_a"], "b": ds.attrs["model_b"]}
    if "procrustes_alignment" in ds:
        row["H_inv (final)"] = _final(ds["procrustes_alignment"])
    for name, label in (("cka", "CKA"), ("dimension_correlation", "dim. corr.")):
        if name in ds:
            row[f"{label} (mean)"] = float(_matched(ds[name]).mean())
    if "knn_overlap" in ds:
        knn = _matched(ds["knn_overlap"])
        for k in knn.k.values:
            row[f"kNN k={int(k)}"] = float(knn.sel(k=k).mean())
    for name in ("probe_self", "probe_direct"):
        if name in ds:
            row[f"{name} test"] = float(_final(ds[name].sel(split="test")))
    return row


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table (3 decimals)."""
    if not rows:
        raise ValueError("no rows to tabulate: give at least one pair")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _matched(da: xr.DataArray) -> xr.DataArray:
    """Matched layers of an all-pairs grid (nearest relative depth); as is otherwise."""
    if "layer_a" not in da.dims:
        return da
    pairs = layer_pairs(da.depth_a.values, da.depth_b.values, "matched")
    return xr.concat([da.isel(layer_a=i, layer_b=j, drop=True) for i, j in pairs], "layer")


def _final(da: xr.DataArray) -> float:
    """The final layer pair's value (the variable itself when computed there only)."""
    for dim in ("layer", "layer_a", "layer_b"):
        if dim in da.dims:
            da = da.isel({dim: -1})
    return float(da)
