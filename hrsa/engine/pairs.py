"""Which rows and which layer pairs a comparison scores, and the grid they fill.

A comparison pairs the rows of ``xa: (layer, n, d1)`` and ``xb: (layer, n, d2)`` one to one
(the same texts, or the same token positions) and scores layer pairs ``(i, j)`` (indices
into the two layer lists) in one of three modes: "matched" (dim ``layer``), "all" (dims
``layer_a`` x ``layer_b``) or "final" (no layer dim).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from .. import massive
from ..metrics.subsample import subsample_indices
from ..schema import TOKEN_COORDS, check_activations

__all__ = ["layer_pairs", "depth", "pair_grid", "final_label", "align_rows"]

def layer_pairs(depth_a: np.ndarray, depth_b: np.ndarray, pairs: str) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` into the two layer lists.

    "matched": for each layer of the model with fewer layers, the layer of the other at the
    nearest relative depth (ties to the shallower); "all": every pair; "final": the last
    layer of each.
    """
    if pairs == "final":
        return [(len(depth_a) - 1, len(depth_b) - 1)]
    if pairs == "all":
        return [(i, j) for i in range(len(depth_a)) for j in range(len(depth_b))]
    if len(depth_a) <= len(depth_b):
        return [(i, int(np.argmin(np.abs(depth_b - d)))) for i, d in enumerate(depth_a)]
    return [(int(np.argmin(np.abs(depth_a - d))), j) for j, d in enumerate(depth_b)]


def depth(da: xr.DataArray) -> np.ndarray:
    """``(layer,)`` relative depth: coord ``depth``, else evenly spaced in [0, 1]."""
    return da.depth.values if "depth" in da.coords else np.linspace(0, 1, da.sizes["layer"])


def pair_grid(xa: xr.DataArray, xb: xr.DataArray, index_pairs: Sequence[tuple[int, int]],
              pairs: str) -> tuple[tuple[str, ...], dict, tuple[int, ...]]:
    """``(dims, coords, shape)`` of the grid that the scores of ``index_pairs`` fill in
    mode ``pairs``; position ``p`` of the grid (row-major over ``shape``) holds pair ``p``
    ("all": pair ``(i, j)`` at ``[i, j]``)."""
    if pairs == "final":
        return (), {}, ()
    if pairs == "all":
        coords = {"layer_a": xa.layer.values, "layer_b": xb.layer.values}
        if "depth" in xa.coords and "depth" in xb.coords:
            coords["depth_a"] = ("layer_a", xa.depth.values)
            coords["depth_b"] = ("layer_b", xb.depth.values)
        return ("layer_a", "layer_b"), coords, (xa.sizes["layer"], xb.sizes["layer"])
    i, j = (list(t) for t in zip(*index_pairs))
    coords = {"layer": np.arange(len(i)), "layer_a": ("layer", xa.layer.values[i]),
              "layer_b": ("layer", xb.layer.values[j])}
    if "depth" in xa.coords:
        coords["depth"] = ("layer", depth(xa)[i] if len(i) == len(set(i)) else depth(xb)[j])
    return ("layer",), coords, (len(index_pairs),)


def final_label(xa: xr.DataArray, xb: xr.DataArray) -> str:
    """Attr ``layers`` of a variable scored on the final layer pair only."""
    return f"final layer only (a: {int(xa.layer[-1])}, b: {int(xb.layer[-1])})"


def align_rows(xa: xr.DataArray, xb: xr.DataArray, max_tokens: int | None, seed: int,
               exclude_massive: float | None = None) -> tuple[xr.DataArray, xr.DataArray]:
    """Check both have the same rows (the same token positions at token level); with
    ``exclude_massive``, drop the rows massive at that ratio in either
    (:mod:`hrsa.massive`); subsample both with the same seed where there are more than
    ``max_tokens`` token rows."""
    for da, which in ((xa, "a"), (xb, "b")):
        check_activations(da, which)
    if xa.dims[1] != xb.dims[1]:
        raise ValueError(f"activations a are per {xa.dims[1]} and b per {xb.dims[1]}: "
                         "compare token-level with token-level, pooled with pooled")
    hash_a, hash_b = xa.attrs.get("text_hash"), xb.attrs.get("text_hash")
    if hash_a and hash_b and hash_a != hash_b:
        raise ValueError(f"a and b were captured on different texts (text_hash {hash_a} and "
                         f"{hash_b}): their rows are not the same inputs")
    row_dim = xa.dims[1]
    if xa.sizes[row_dim] != xb.sizes[row_dim]:
        hint = (special_token_hint(xa, xb) or " The two tokenizers split the texts "
                "differently; compare pooled text vectors instead with pooling='mean'."
                if row_dim == "token" else "")
        raise ValueError(f"a has {xa.sizes[row_dim]} {row_dim} rows and b has "
                         f"{xb.sizes[row_dim]}.{hint}")
    for coord in TOKEN_COORDS:
        if coord in xa.coords and coord in xb.coords and \
                not np.array_equal(xa[coord].values, xb[coord].values):
            raise ValueError(f"a and b disagree on the {coord!r} of their token rows: the two "
                             "tokenizers split the texts differently, so rows are not the same "
                             "positions. Compare pooled text vectors with pooling='mean'.")
    if exclude_massive is not None:
        drop = massive.massive_rows(xa, exclude_massive) | massive.massive_rows(
            xb, exclude_massive)
        xa, xb = (massive.exclude(da, exclude_massive, drop) for da in (xa, xb))
    keep = None
    if row_dim == "token" and max_tokens is not None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        keep = subsample_indices(xa.sizes[row_dim], max_tokens, seed)
    if keep is not None:
        xa, xb = xa.isel({row_dim: keep}), xb.isel({row_dim: keep})
    return xa, xb


def special_token_hint(xa: xr.DataArray, xb: xr.DataArray) -> str:
    """A hint when one tokenizer puts exactly one more token into every text (a BOS or
    CLS token the other does not add), else ""."""
    if "text" not in xa.coords or "text" not in xb.coords:
        return ""
    n = int(max(xa.text.max(), xb.text.max())) + 1
    extra = np.bincount(xa.text.values, minlength=n) - np.bincount(xb.text.values, minlength=n)
    if abs(int(extra.sum())) != n or len(set(extra.tolist())) != 1:
        return ""
    which = "a" if extra[0] > 0 else "b"
    return (f" {which}'s tokenizer adds one special token (a BOS or CLS token) to every text "
            "that the other does not: capture both with add_special_tokens=False (the "
            "paper's protocol) or exclude_special_tokens=True.")
