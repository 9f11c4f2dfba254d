"""Running hrsa across the ranks of a ``torch.distributed`` process group (data parallel).

Under ``torchrun`` or ``accelerate launch``, :func:`hrsa.compare`, :func:`hrsa.trajectory`,
:func:`hrsa.streaming.compare_streaming` and the ``hrsa`` command split the forward passes
over the ranks and every rank returns the same result as a single process would:

* capture: the texts are tokenized, length-sorted and batched on every rank exactly as in
  one process (so the token rows, the seeded ``max_tokens`` subsample and the coords are
  those of all the texts); rank ``r`` of ``W`` runs batches ``r, r + W, r + 2W, ...`` and
  writes its rows into a zero-filled array of the full shape, and the arrays are summed
  with ``all_reduce`` (a gather: each row is non-zero on exactly one rank, so the sum is
  exact). Each text meets the same batch as in one process, so the activations are
  bitwise those of a single process on the same device and threads. Every rank then holds
  the full activations and scores them, and returns the same Dataset.
* streaming: chunks of ``chunk_texts`` texts are dealt round robin (rank ``r`` takes chunks
  ``r, r + W, ...``; with fewer chunks than ranks, chunks shrink to ``len(texts) // W``
  texts); each rank accumulates :class:`~hrsa.metrics.moments.CrossMoments` over its chunks and
  the sums ``n, sum X, sum Y, X^T X, Y^T Y, X^T Y`` are added with ``all_reduce``.

The process group: one initialised by the caller (any backend) is used as it is. If none
is, and the environment says ``WORLD_SIZE`` > 1 (torchrun and accelerate launch set
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), hrsa
initialises the default group itself with the gloo backend and, when CUDA is available,
makes GPU ``LOCAL_RANK`` (modulo the visible GPUs) the rank's current device, so that the
default ``device`` ("cuda") is a different GPU on each rank. hrsa's collectives move CPU
tensors only (captures are copied to the CPU in float32, moments are float64 on the CPU),
so they run on gloo: on the default group when its backend includes gloo, else on a gloo
group over the same ranks, created once.

A world size larger than the number of texts raises a ``ValueError`` on every rank before
anything is captured.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import xarray as xr

from . import capture as capture_mod

if TYPE_CHECKING:
    from .metrics.moments import CrossMoments


def process_group() -> dist.ProcessGroup | None:
    """The gloo group that hrsa's collectives run on, or None for a single process (no
    ``torch.distributed``, or a world size of 1).

    Initialises the default group from torchrun's environment (``WORLD_SIZE`` > 1) when
    it is not initialised yet; see the module docstring.
    """
    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) < 2:
            return None
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0"))
                                  % torch.cuda.device_count())
        dist.init_process_group("gloo")
    if dist.get_world_size() < 2:
        return None
    if "gloo" in dist.get_backend():  # "gloo", or e.g. "cpu:gloo,cuda:nccl"
        return dist.group.WORLD
    return _gloo_group(dist.group.WORLD)


@functools.cache
def _gloo_group(default_group: dist.ProcessGroup) -> dist.ProcessGroup:
    """A gloo group over all the ranks of ``default_group`` (created once per group)."""
    return dist.new_group(backend="gloo")


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` for a single process."""
    group = process_group()
    if group is None:
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes files and prints)."""
    return rank_and_world()[0] == 0


def capture_views(model: Any, texts: Sequence[str], views: Sequence[str | None],
                  **options: Any) -> list[xr.DataArray]:
    """:func:`hrsa.capture.capture_views` split over the ranks of the process group.

    Each rank runs its share of the batches and the ranks' arrays are summed, so every
    rank gets the same DataArrays, ``(layer, sample|token, feature)``, equal to a single
    process's (coords and attrs included). A single process: plain ``capture_views``.
    Progress bars show on rank 0 only.

    Args:
        model, texts, views, **options: as :func:`hrsa.capture.capture_views`.

    Raises:
        ValueError: the world size is larger than the number of texts (on every rank,
            before anything is captured).
    """
    group = process_group()
    if group is None:
        return capture_mod.capture_views(model, texts, views, **options)
    texts = capture_mod.validate_texts(texts)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    _check_world_size(len(texts), world)
    options["progress"] = options.get("progress", True) and rank == 0
    acts = capture_mod.capture_views(model, texts, views, shard=(rank, world), **options)
    for da in acts:
        for layer in da.values:  # (rows, feature) views into the DataArray, summed in place
            dist.all_reduce(torch.from_numpy(layer), group=group)
    return acts


def text_chunks(texts: list[str], chunk_texts: int) -> list[list[str]]:
    """This rank's chunks of ``texts`` for streaming: consecutive chunks of
    ``chunk_texts`` texts, rank ``r`` of ``W`` taking chunks ``r, r + W, ...``; with fewer
    chunks than ranks, chunks of ``len(texts) // W`` texts, so every rank has one. A
    single process gets every chunk.

    Raises:
        ValueError: the world size is larger than the number of texts.
    """
    rank, world = rank_and_world()
    _check_world_size(len(texts), world)
    if math.ceil(len(texts) / chunk_texts) < world:
        chunk_texts = len(texts) // world
    chunks = [texts[i:i + chunk_texts] for i in range(0, len(texts), chunk_texts)]
    return chunks[rank::world]


def all_reduce_moments(moments: Sequence[CrossMoments]) -> None:
    """Sum each :class:`~hrsa.metrics.moments.CrossMoments` (``n``, ``sx``, ``sy``, ``xx``,
    ``yy``, ``xy``) over the ranks, in place; nothing for a single process. Every rank
    must pass moments of the same shapes, in the same order."""
    group = process_group()
    if group is None:
        return
    for m in moments:
        n = torch.tensor([m.n], dtype=torch.int64)
        dist.all_reduce(n, group=group)
        m.n = int(n)
        for total in (m.sx, m.sy, m.xx, m.yy, m.xy):
            dist.all_reduce(total, group=group)


def _check_world_size(n_texts: int, world: int) -> None:
    if world > n_texts:
        raise ValueError(f"world size {world} is larger than the number of texts "
                         f"({n_texts}): every rank needs at least one text; run at most "
                         f"{n_texts} processes or give more texts")
