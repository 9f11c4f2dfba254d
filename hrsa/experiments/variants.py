"""Reproducible variants of a model, for controls and demos: a perturbed copy (every
weight plus seeded Gaussian noise) and a re-initialised copy (same architecture, fresh
random weights)."""

from __future__ import annotations

import copy

import torch
from transformers import PreTrainedModel


def perturbed_copy(model: PreTrainedModel, scale: float, seed: int = 0) -> PreTrainedModel:
    """A deep copy of ``model`` with ``W + scale * std(W) * eps``, ``eps ~ N(0, 1)``
    seeded, added to every floating-point parameter ``W`` with more than one entry
    (LayerNorm gains and biases of size 1 are left alone)."""
    if scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    clone = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in clone.parameters():
            if param.is_floating_point() and param.numel() > 1:
                noise = torch.randn(param.shape, generator=generator).to(param)
                param.add_(noise * (scale * param.float().std()).to(param.dtype))
    return clone.eval()


def reinitialized_copy(model: PreTrainedModel, seed: int = 0) -> PreTrainedModel:
    """The same architecture and config with freshly initialised weights (seeded)."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        clone = type(model)(copy.deepcopy(model.config))
    return clone.to(device=model.device, dtype=model.dtype).eval()
