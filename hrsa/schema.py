"""The data model: the dims, coords and attrs of activations and comparisons, built and
checked in one place (docs/design.md, "Data model").

* Activations of one model: a DataArray ``(layer, sample|token, feature)``; coords ``layer``,
  ``depth`` (= layer / number of blocks), and at token level ``text``, ``position``,
  ``token_id`` per row; attrs: the capture's provenance (:func:`activations`).
* A comparison: a Dataset of variables over ``(layer,)`` (matched layers, coords
  ``layer_a``, ``layer_b``, ``depth``), ``(layer_a, layer_b)`` (every pair) or no layer dim
  (the final pair), optionally an extra dim (``k``, ``split``) and, for a trajectory, a
  leading ``checkpoint``. Each variable carries :func:`metric_attrs`; a **similarity** is a
  variable without a ``diagnostic`` attr, everything else (``{name}_{key}`` diagnostics,
  bootstrap and permutation companions) has one (:func:`diagnostic_attrs`,
  :func:`is_similarity`).

netCDF attrs hold str, numbers and 1-D lists only: anything nested is a JSON string.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from .metrics.base import LEVELS, Metric
from .metrics.function import SPLITS
from .version import __version__

if TYPE_CHECKING:
    from .models import Encoder

__all__ = ["LEVELS", "SPLITS", "ROW_DIMS", "TOKEN_COORDS", "LAYER_DIMS", "text_hash",
           "activations", "check_activations", "metric_attrs", "diagnostic_attrs",
           "is_similarity", "similarity_names"]

ROW_DIMS = ("sample", "token")  # pooled texts, or token positions
TOKEN_COORDS = ("text", "position", "token_id")  # per token row: source text, position, id
LAYER_DIMS = ("layer", "layer_a", "layer_b", "checkpoint")  # dims that index layers or steps


def text_hash(texts: Sequence[str]) -> str:
    """sha256 of the texts (length-prefixed, so boundaries count), hex, first 16 chars."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()[:16]


def activations(out: Any, encoder: Encoder, layers, n_blocks, tokens, keep,
                pooling, texts, **options) -> xr.DataArray:
    """The capture ``out: (layer, row, feature)`` (a torch tensor, or a lazy
    :func:`hrsa.store.placeholder`) as a DataArray with coords and provenance attrs.

    ``layers``: the captured layer indices (``depth = layer / n_blocks``); ``tokens``,
    ``keep``: the tokenization and, per text, the kept token positions (token level);
    ``options``: the capture's ``max_length``, ``template``, ``instruction``,
    ``add_special_tokens``, ``exclude_special_tokens``, ``exclude_first_token``, ``max_tokens``, ``seed``.
    """
    coords: dict[str, Any] = {
        "layer": ("layer", np.asarray(layers)),
        "depth": ("layer", np.asarray(layers) / n_blocks),
    }
    if pooling:
        dims = ("layer", "sample", "feature")
        coords["sample"] = ("sample", np.arange(len(texts)))
    else:
        dims = ("layer", "token", "feature")
        ids = tokens["input_ids"]
        coords["text"] = ("token", np.concatenate(
            [np.full(len(k), i) for i, k in enumerate(keep)]).astype(np.int64))
        coords["position"] = ("token", np.concatenate(keep).astype(np.int64))
        coords["token_id"] = ("token", np.concatenate(
            [np.asarray(ids[i], dtype=np.int64)[k] for i, k in enumerate(keep)]))
    attrs = {
        "model": encoder.name,
        "revision": encoder.revision,
        "pooling": pooling or "none",
        "attention": encoder.attention,
        "attention_switch": encoder.attention_switch,
        "dtype": str(encoder.dtype).removeprefix("torch."),
        "max_length": int(options["max_length"]),
        "template": options["template"],
        "instruction": options["instruction"] or "",
        "prefix": encoder.prefix,
        "add_special_tokens": int(options["add_special_tokens"]),
        "exclude_special_tokens": int(options["exclude_special_tokens"]),
        "exclude_first_token": int(options["exclude_first_token"]),
        "max_tokens": int(options["max_tokens"] or 0),
        "seed": int(options["seed"]),
        "n_texts": len(texts),
        "text_hash": text_hash(texts),
        "num_blocks": int(n_blocks),
        "hrsa_version": __version__,
    }
    data = out.numpy() if isinstance(out, torch.Tensor) else out
    da = xr.DataArray(data, dims=dims, coords=coords, attrs=attrs, name="activations")
    da.attrs["long_name"] = "hidden state"
    return da


def check_activations(da: xr.DataArray, which: str) -> None:
    """ValueError naming ``which`` unless ``da`` has dims ``(layer, sample|token, feature)``."""
    if da.ndim != 3 or da.dims[0] != "layer" or da.dims[1] not in ROW_DIMS \
            or da.dims[2] != "feature":
        raise ValueError(f"activations {which} must have dims (layer, sample|token, feature), "
                         f"got {da.dims}")


def metric_attrs(metric: Metric) -> dict:
    """netCDF-safe attrs of a metric's similarity variable: level, long_name, params, range,
    invariances."""
    return {
        "level": metric.level,
        "long_name": metric.long_name or metric.name,
        "metric": metric.name,
        "params": json.dumps(metric.params(), sort_keys=True, default=str),
        "range": [float(v) for v in metric.range],
        "invariances": ", ".join(sorted(metric.invariances)) or "none",
        "units": "1",
    }


def diagnostic_attrs(attrs: dict, diagnostic: str, what: str, **extra: Any) -> dict:
    """The attrs of a variable that accompanies a similarity with attrs ``attrs``: the same
    description, ``long_name`` suffixed with ``(what)``, ``extra``, and the ``diagnostic``
    marker (which makes it not a similarity)."""
    return {**attrs, "long_name": f"{attrs.get('long_name', '')} ({what})",
            "diagnostic": diagnostic, **extra}


def is_similarity(var: xr.DataArray) -> bool:
    """Whether ``var`` is a similarity (no ``diagnostic`` attr), not a companion of one."""
    return "diagnostic" not in var.attrs


def similarity_names(ds: xr.Dataset) -> list[str]:
    """The names of the similarity variables of ``ds``, in order."""
    return [name for name, var in ds.data_vars.items() if is_similarity(var)]
