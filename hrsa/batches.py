"""Tokenized texts into the rows a capture keeps and the batches it runs.

Texts are sorted by token length so each batch pads little; a batch is padded on the
tokenizer's padding side, and its kept token rows are found once for all its layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .models import Encoder

# automatic batches: texts per forward on the CPU, and on a GPU the padded-token budget
# (a Qwen3-0.6B forward in batches of 32 texts ran launch-bound on an H100, at a few
# percent of its matrix rate) with a cap on texts per batch
CPU_BATCH = 32
GPU_BATCH_TOKENS, GPU_BATCH_MAX = 65_536, 512


def length_batches(lengths: Sequence[int], order: np.ndarray, batch_size: int | None,
                   device: torch.device) -> list[np.ndarray]:
    """Split text indices ``order`` (sorted by their token ``lengths``, ascending) into
    batches: ``batch_size`` texts each when given; else 32 on the CPU, and on a GPU as many
    texts as keep ``texts x longest <= 65,536`` padded tokens (at most 512)."""
    if batch_size is not None or torch.device(device).type != "cuda":
        size = batch_size or CPU_BATCH
        return [order[i:i + size] for i in range(0, len(order), size)]
    batches, start = [], 0
    for stop in range(1, len(order) + 1):
        if stop - start > 1 and ((stop - start) * lengths[stop - 1] > GPU_BATCH_TOKENS
                                 or stop - start > GPU_BATCH_MAX):
            batches.append(order[start:stop - 1])
            start = stop - 1
    batches.append(order[start:])
    return batches


def check_nonempty(tokens, add_special_tokens: bool, name: str) -> None:
    """Raise for texts that tokenize to no token at all (an empty text without special
    tokens): their pooled vectors and rows would be zeros scored as data."""
    empty = [i for i, ids in enumerate(tokens["input_ids"]) if len(ids) == 0]
    if empty:
        how = "" if add_special_tokens else " with add_special_tokens=False"
        raise ValueError(f"model {name!r}: {len(empty)} texts tokenize to no token{how} "
                         f"(texts[{empty[0]}] is empty or whitespace); drop them first")


def token_rows(tokens, exclude_special: bool, exclude_first: bool,
                max_tokens: int | None, seed: int, name: str) -> list[np.ndarray]:
    """Per text, the positions of the kept token rows (ascending)."""
    keep = []
    for ids, special in zip(tokens["input_ids"], tokens["special_tokens_mask"]):
        mask = np.ones(len(ids), dtype=bool)
        if exclude_special:
            mask &= ~np.asarray(special, dtype=bool)
        if exclude_first:
            mask[:1] = False
        keep.append(np.flatnonzero(mask))
    total = sum(len(k) for k in keep)
    if total == 0:
        raise ValueError(f"model {name!r}: no token rows left after the exclusions")
    if max_tokens is not None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if total > max_tokens:
            chosen = np.zeros(total, dtype=bool)
            chosen[np.random.default_rng(seed).choice(total, max_tokens, replace=False)] = True
            bounds = np.cumsum([0] + [len(k) for k in keep])
            keep = [k[chosen[a:b]] for k, a, b in zip(keep, bounds[:-1], bounds[1:])]
    return keep


def pad(encoder: Encoder, tokens, batch: np.ndarray) -> tuple[dict, torch.Tensor]:
    """Pad one batch on the tokenizer's padding side; left padding gets mask-derived
    ``position_ids`` so each text's positions are the same as unpadded."""
    left = getattr(encoder.tokenizer, "padding_side", "right") == "left"
    pad_id = encoder.tokenizer.pad_token_id or 0
    width = max(len(tokens["input_ids"][i]) for i in batch)
    fields = [k for k in ("input_ids", "token_type_ids") if k in tokens]
    arrays = {k: np.full((len(batch), width), pad_id if k == "input_ids" else 0, np.int64)
              for k in fields + ["attention_mask"]}
    for row, i in enumerate(batch):
        n = len(tokens["input_ids"][i])
        cols = slice(width - n, width) if left else slice(0, n)
        for k in fields:
            arrays[k][row, cols] = tokens[k][i]
        arrays["attention_mask"][row, cols] = 1
    inputs = {k: torch.from_numpy(v).to(encoder.device) for k, v in arrays.items()}
    if left:
        inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    return inputs, inputs["attention_mask"]


def token_index(encoder: Encoder, keep, offsets, batch,
                 mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept tokens of one batch, computed once for all its layers: ``flat: (N,)`` their
    rows in the batch's states flattened to ``(B * T, D)`` (``row * T + column`` in the padded
    batch, ``mask: (B, T)``), on the mask's device, and ``dest: (N,)`` their output rows."""
    width = mask.shape[1]
    starts = (width - mask.sum(dim=1)).tolist() if (
        getattr(encoder.tokenizer, "padding_side", "right") == "left") else [0] * len(batch)
    flat = np.concatenate([keep[i] + (row * width + starts[row]) for row, i in enumerate(batch)])
    dest = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in batch])
    return (torch.as_tensor(flat, dtype=torch.long).to(mask.device),
            torch.as_tensor(dest, dtype=torch.long))
