"""Pooling of token states under an attention mask.

Every function takes ``hidden: (B, T, D)`` and ``mask: (B, T)`` (1 or True for real
tokens, either padding side) and returns ``(B, D)`` in float32, whatever the model dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Pooler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_t m_t h_t / sum_t m_t. Padding is excluded with ``torch.where``, so a NaN or
    inf in a padded row cannot leak into the mean (``NaN * 0`` is NaN)."""
    keep = mask.bool().unsqueeze(-1)
    total = torch.where(keep, hidden.float(), 0.0).sum(dim=1)
    return total / keep.sum(dim=1).clamp_min(1)


def last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state of the last real token of each row (left or right padding)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    index = torch.where(mask.bool(), positions, -1).amax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index].float()


def first(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state of the first real token of each row ([CLS] for BERT-style models)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    index = torch.where(mask.bool(), positions, mask.shape[1]).amin(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index].float()


POOLERS: dict[str, Pooler] = {"mean": mean, "last": last, "first": first, "cls": first}


def get(name: str) -> Pooler:
    """The pooler called ``name`` ("mean", "last", "first" or its alias "cls")."""
    try:
        return POOLERS[name]
    except KeyError:
        raise ValueError(
            f"pooling must be one of {sorted(POOLERS)} or None (token level), got {name!r}"
        ) from None
