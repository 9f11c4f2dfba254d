"""Named option sets for :func:`hrsa.compare`: "default" and "paper".

A preset fills every option the caller did not pass; an explicit argument always wins.
Each choice of the "paper" preset reproduces the HRSA paper's published analysis (Chan et
al., arXiv 2601.21192, 2026, and its public analysis code); docs/presets.md lists both
presets side by side with the source of every choice.
"""

from __future__ import annotations

import copy
from typing import Any


class _Unset:
    """Marks an argument the caller left to the preset."""

    def __repr__(self) -> str:
        return "<from preset>"


UNSET: Any = _Unset()

PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        # token-level states of every layer (the method's unit), native attention
        "pooling": None,
        "attention": "auto",
        "pairs": "matched",
        "metrics": [
            ("dimension_correlation", {}),
            ("procrustes_alignment", {}),
            ("cka", {}),
            ("knn_overlap", {"k": (5, 10, 50)}),
        ],
        "max_tokens": 50_000,
        "seed": 0,
        "final_layer_only": (),
        # logistic regression (C = 1) solved to its optimum in torch, on the metric device
        "probe": {"classifier": "logistic", "C": 1.0, "splits": (0.8, 0.1, 0.1),
                  "normalize": False, "standardize": True, "solver": "torch"},
    },
    "paper": {
        # every layer, token level, before any pooling (paper, Protocol)
        "pooling": None,
        # every model, backbones included, run with bidirectional attention (analysis code)
        "attention": "bidirectional",
        # dimension correlation and CKA as layer_a x layer_b heatmaps (paper, Definitions)
        "pairs": "all",
        "metrics": [
            ("dimension_correlation", {}),
            ("procrustes_alignment", {}),
            ("cka", {}),
            # uncentred cosine neighbours, k = 5, 10, 50 (paper; analysis code)
            ("knn_overlap", {"k": (5, 10, 50), "center": False}),
        ],
        # at most 50,000 randomly subsampled tokens, seed 42 (analysis code)
        "max_tokens": 50_000,
        "seed": 42,
        # H_inv on the final layer only; the probe on the last layer (analysis code)
        "final_layer_only": ("procrustes_alignment", "probe"),
        # mean-pooled, L2-normalised, standardised vectors; scikit-learn's logistic
        # regression, C = 1; 80/10/10 stratified splits, seed 42 (analysis code)
        "probe": {"classifier": "logistic", "C": 1.0, "splits": (0.8, 0.1, 0.1),
                  "normalize": True, "standardize": True, "seed": 42, "solver": "sklearn"},
    },
}


def available() -> list[str]:
    """Names of the presets."""
    return list(PRESETS)


def resolve(preset: str, **given: Any) -> dict[str, Any]:
    """The options of ``preset`` with every argument in ``given`` that is not ``UNSET``
    taking precedence. ``probe`` dicts merge key by key (an explicit ``probe={"C": 10}``
    keeps the preset's other probe options)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {available()}, got {preset!r}")
    options = copy.deepcopy(PRESETS[preset])
    for key, value in given.items():
        if value is UNSET:
            continue
        if key == "probe" and value is not None:
            options["probe"] = {**options["probe"], **value}
        else:
            options[key] = value
    return options
