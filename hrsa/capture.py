"""Capture the hidden states of every layer in one forward pass per batch.

Forward hooks on the block stack see each layer's states as the model computes them;
each is reduced on the device (pooled, or the kept token rows gathered) before it moves
to the CPU, so no batch ever holds all layers' full ``(B, T, D)`` tensors at once.

Layer index = transformers' ``output_hidden_states`` index: 0 is the embedding output
(the input of block 0), ``i`` the output of block ``i`` and ``L`` the model's
``last_hidden_state`` (after the final norm where the model has one).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from . import batches as batches_mod
from . import massive as massive_mod
from . import pooling as pooling_mod
from . import store as store_mod
from .models import Encoder, find_blocks, load
from .schema import activations as _to_dataarray
from .schema import text_hash  # noqa: F401  (hrsa.capture.text_hash, the public name)

DEFAULT_TEMPLATE = "Instruct: {instruction}\nQuery: {text}"


def capture(
    model: Any,
    texts: Sequence[str],
    *,
    pooling: str | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    instruction: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    attention: str = "auto",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
    gguf_file: str | None = None,
    add_special_tokens: bool = True,
    exclude_special_tokens: bool = False,
    exclude_first_token: bool = False,
    exclude_massive: float | None = None,
    max_tokens: int | None = None,
    seed: int = 0,
    progress: bool = True,
    store: str | os.PathLike | None = None,
    overwrite: bool = False,
    chunk_rows: int | None = None,
) -> xr.DataArray:
    """Hidden states of every layer of ``model`` on ``texts``.

    Args:
        model: hub id or folder, ``.gguf`` file, ``(PreTrainedModel, tokenizer)``,
            ``SentenceTransformer`` or :class:`~hrsa.models.Encoder` (see
            :func:`hrsa.models.load`).
        texts: the N input texts.
        pooling: "mean", "last", "first"/"cls", or None for token level (every real token).
        layers: layer indices to keep (0 = embeddings .. L); default all L + 1.
        batch_size: texts per forward; texts are sorted by length to cut padding. None
            (default): 32 on the CPU; on a GPU, as many texts as fit 65,536 padded tokens
            (at most 512 texts), since small batches leave a GPU launch-bound.
        max_length: truncate to this many tokens; default the model's own limit.
        instruction: when given, each text becomes ``template.format(instruction=, text=)``.
        template: the query template; must contain ``{text}`` (and ``{instruction}``).
        attention: "auto" (native), "causal" or "bidirectional"; verified by a probe.
        device, dtype, revision: see :func:`hrsa.models.load`.
        device_map, max_memory, offload_folder: big-model loading through accelerate
            (``device_map="auto"`` or a dict with "cpu"/"disk"/GPU devices); see
            :func:`hrsa.models.load`.
        gguf_file: a GGUF file inside the hub repo or folder ``model`` (see
            :func:`hrsa.models.load`).
        add_special_tokens: let the tokenizer add its special tokens ([CLS]/[SEP], a
            decoder's BOS); False feeds the texts' own tokens only (the paper's protocol).
        exclude_special_tokens: token level: drop special tokens ([CLS], BOS, ...).
        exclude_first_token: token level: drop each text's first token (decoder LLMs put
            massive activations there that dominate norms and linear CKA).
        exclude_massive: token level: a ratio ``r``: drop every token row whose norm
            exceeds ``r`` x its layer's median row norm at any layer
            (:func:`hrsa.massive.massive_activations`); the count dropped is recorded in
            attrs ``n_massive_excluded``. Not with ``store``.
        max_tokens: token level: keep a uniform random subsample of this many rows.
        seed: seed of that subsample.
        progress: show a tqdm bar over batches.
        store: a path (e.g. ``"acts.zarr"``): write the rows batch by batch into a new zarr
            store there instead of memory (memory: one batch plus one chunk), and return it
            opened lazily, dask-backed; see :mod:`hrsa.store`. Needs ``pip install
            "hrsa[scale]"``. The path is checked before the model is loaded; a failed or
            interrupted capture leaves nothing there.
        overwrite: with ``store``: replace an existing zarr store at that path (an
            existing path raises ``FileExistsError`` otherwise).
        chunk_rows: with ``store``: rows per zarr chunk (each chunk one layer x
            ``chunk_rows`` x all features); default about 16 MiB per chunk.

    Returns:
        Pooled: ``(layer, sample, feature)``. Token level: ``(layer, token, feature)`` with
        coords ``text`` (source text index), ``position`` and ``token_id`` along ``token``,
        rows in text order then position order. Coords ``layer`` and ``depth`` = layer / L.
        float32 whatever the model dtype; attrs record the provenance (netCDF-safe). With
        ``store``, the same DataArray (equal values, coords and attrs), its data a dask
        array reading the store.
    """
    return capture_views(
        model, texts, (pooling,), layers=layers, batch_size=batch_size,
        max_length=max_length, instruction=instruction, template=template,
        attention=attention, device=device, dtype=dtype, revision=revision,
        device_map=device_map, max_memory=max_memory, offload_folder=offload_folder,
        gguf_file=gguf_file, add_special_tokens=add_special_tokens,
        exclude_special_tokens=exclude_special_tokens,
        exclude_first_token=exclude_first_token, exclude_massive=exclude_massive,
        max_tokens=max_tokens, seed=seed, progress=progress, store_path=store,
        overwrite=overwrite, chunk_rows=chunk_rows,
    )[0]


def capture_views(
    model: Any,
    texts: Sequence[str],
    views: Sequence[str | None],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    instruction: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    attention: str = "auto",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
    gguf_file: str | None = None,
    add_special_tokens: bool = True,
    exclude_special_tokens: bool = False,
    exclude_first_token: bool = False,
    exclude_massive: float | None = None,
    max_tokens: int | None = None,
    seed: int = 0,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    store_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    chunk_rows: int | None = None,
) -> list[xr.DataArray]:
    """Several views of one forward pass: one DataArray per entry of ``views`` (each a
    pooling name, or None for token level), as :func:`capture` would return it.

    ``hrsa.compare`` uses this to take token rows and mean-pooled text vectors (for the
    probe) from the same pass. ``shard=(rank, world_size)`` runs only batches ``rank,
    rank + world_size, ...`` of the length-sorted batches (rows, token subsample and
    coords are those of all ``texts``); the rows of the other batches' texts stay zero,
    so the ranks' arrays sum to the full capture (:mod:`hrsa.distributed`).
    ``store_path``, ``overwrite``, ``chunk_rows``: :func:`capture`'s ``store=``,
    ``overwrite=``, ``chunk_rows=`` (one view, no ``shard``). Other arguments: see
    :func:`capture`.
    """
    texts = validate_texts(texts)
    poolers = {view: pooling_mod.get(view) for view in views if view is not None}
    if None not in views and (max_tokens is not None or exclude_special_tokens
                              or exclude_first_token or exclude_massive is not None):
        raise ValueError(
            "max_tokens, exclude_special_tokens, exclude_first_token and exclude_massive "
            f"apply at token level only (pooling=None), not with pooling={views[0]!r}"
        )
    if exclude_massive is not None:
        massive_mod.check_ratio(exclude_massive)
        if store_path is not None or shard is not None:
            raise ValueError("exclude_massive needs every row's norm before any is kept; it "
                             "is not available with store= or a shard (use hrsa.massive_activations "
                             "on the result)")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if store_path is not None:  # before the (long) model load
        if len(views) != 1 or shard is not None:
            raise ValueError("store= writes one view of a whole capture (one pooling, no "
                             f"shard); got views {list(views)} and shard {shard}")
        store_path = store_mod.check_target(store_path, overwrite)
    elif chunk_rows is not None:
        raise ValueError("chunk_rows applies with store= only")
    inputs = apply_template(texts, instruction, template)
    encoder = load(model, device=device, dtype=dtype, revision=revision, attention=attention,
                   device_map=device_map, max_memory=max_memory,
                   offload_folder=offload_folder, gguf_file=gguf_file)
    n_blocks = encoder.num_layers
    layers = _validate_layers(layers, n_blocks, encoder.name)
    max_length = max_length or encoder.max_length

    tokens = encoder.tokenizer(
        [encoder.prefix + text for text in inputs], truncation=True, max_length=max_length,
        return_special_tokens_mask=True, add_special_tokens=add_special_tokens,
    )
    batches_mod.check_nonempty(tokens, add_special_tokens, encoder.name)
    keep = None if None not in views else batches_mod.token_rows(
        tokens, exclude_special_tokens, exclude_first_token, max_tokens, seed, encoder.name)
    hidden_size = encoder.model.config.get_text_config().hidden_size
    n_rows = {view: len(texts) if view else sum(len(k) for k in keep) for view in views}

    def dataarray(data: Any, view: str | None) -> xr.DataArray:
        return _to_dataarray(data, encoder, layers, n_blocks, tokens, keep, view, texts,
                             max_length=max_length, template=template,
                             instruction=instruction,
                             add_special_tokens=add_special_tokens,
                             exclude_special_tokens=exclude_special_tokens,
                             exclude_first_token=exclude_first_token, max_tokens=max_tokens,
                             seed=seed)

    writer = None
    if store_path is None:
        # zeroed only for a shard (the other batches' rows must read 0); otherwise every row is
        # written below, and a memset of the whole output would cost ~1-2% of the capture
        alloc = torch.zeros if shard is not None else torch.empty
        outs = {view: alloc(len(layers), n_rows[view], hidden_size, dtype=torch.float32)
                for view in views}
    else:  # a lazy template with the coords and attrs; rows go to disk batch by batch
        shape = (len(layers), n_rows[views[0]], hidden_size)
        writer = store_mod.StoreWriter(store_path, dataarray(store_mod.placeholder(shape),
                                                             views[0]),
                                       chunk_rows=chunk_rows, overwrite=overwrite)

    lengths = np.array([len(ids) for ids in tokens["input_ids"]])
    order = np.argsort(lengths, kind="stable")
    offsets = None if keep is None else np.concatenate([[0], np.cumsum([len(k) for k in keep])])
    batches = batches_mod.length_batches(lengths[order], order, batch_size, encoder.device)
    if shard is not None:
        batches = batches[shard[0]::shard[1]]
    with writer or contextlib.nullcontext():
        for batch in tqdm(batches, desc=f"capture {encoder.name}", disable=not progress,
                          unit="batch"):
            inputs_b, mask = batches_mod.pad(encoder, tokens, batch)
            sample_dest = torch.as_tensor(batch)
            if keep is not None:
                flat_b, token_dest = batches_mod.token_index(encoder, keep, offsets, batch, mask)
            if writer is not None:  # gather this batch's rows in order; written below
                dest = (sample_dest if keep is None else token_dest).cpu().numpy()
                outs = {views[0]: torch.empty(len(layers), len(dest), hidden_size,
                                              dtype=torch.float32)}
                sample_dest = token_dest = torch.arange(len(dest))

            def store(slot: int, states: torch.Tensor) -> None:
                # under a device map each block's states stay on that block's device
                here = states.device
                for view, out in outs.items():
                    if view is None:
                        rows = states.reshape(-1, states.shape[-1]).index_select(
                            0, flat_b.to(here))
                        out[slot].index_copy_(0, token_dest, rows.to("cpu", torch.float32))
                    else:
                        pooled = poolers[view](states, mask.to(here))
                        out[slot].index_copy_(0, sample_dest, pooled.cpu())

            _forward_layers(encoder, inputs_b, layers, n_blocks, store)
            if writer is not None:
                writer.write(outs[views[0]].numpy(), dest)

    if writer is not None:
        return [store_mod.open_activations(store_path)]
    arrays = [dataarray(outs[view], view) for view in views]
    if exclude_massive is not None:  # views: the token rows first
        arrays[0] = massive_mod.exclude(arrays[0], exclude_massive)
    return arrays


def validate_texts(texts: Any) -> list[str]:
    """``texts`` as a non-empty list of strings, or a TypeError/ValueError naming it."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts is empty: give at least one text")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"texts must all be strings; texts[{bad[0]}] is {type(texts[bad[0]]).__name__} "
            f"({len(bad)} non-string entries)"
        )
    return list(texts)


def apply_template(texts: list[str], instruction: str | None, template: str) -> list[str]:
    """Each text as ``template.format(instruction=instruction, text=text)`` when an
    instruction is given, else unchanged."""
    if "{text}" not in template:
        raise ValueError(f"template must contain '{{text}}', got {template!r}")
    if instruction is None:
        return texts
    if "{instruction}" not in template:
        raise ValueError(f"template must contain '{{instruction}}' when instruction is "
                         f"given, got {template!r}")
    return [template.format(instruction=instruction, text=text) for text in texts]


def _validate_layers(layers, n_blocks: int, name: str) -> list[int]:
    if layers is None:
        return list(range(n_blocks + 1))
    layers = [int(layer) for layer in layers]
    bad = [layer for layer in layers if not 0 <= layer <= n_blocks]
    if bad or not layers:
        raise ValueError(f"layers must be a non-empty subset of 0..{n_blocks} for model "
                         f"{name!r} ({n_blocks} blocks); got {bad or layers}")
    return sorted(set(layers))


def _forward_layers(encoder: Encoder, inputs: dict, layers: list[int], n_blocks: int,
                    store) -> None:
    """Run one forward; call ``store(slot, states (B, T, D))`` for each layer kept, from
    inside the hooks, so each layer is reduced as soon as it is computed.

    Hooks are removed whether or not the forward raises.
    """
    blocks = find_blocks(encoder.model)
    slots = {layer: slot for slot, layer in enumerate(layers)}
    handles = []

    def store_output(layer):
        def hook(module, args, output):
            store(slots[layer], output[0] if isinstance(output, (tuple, list)) else output)
        return hook

    def store_input(module, args, kwargs):
        store(slots[0], args[0] if args else kwargs["hidden_states"])

    try:
        if 0 in slots:
            handles.append(blocks[0].register_forward_pre_hook(store_input, with_kwargs=True))
        for layer in layers:
            if 0 < layer < n_blocks:
                handles.append(blocks[layer - 1].register_forward_hook(store_output(layer)))
        with torch.inference_mode():
            output = encoder.model(**inputs, **_static_kwargs(encoder), **encoder.forward_kwargs)
    finally:
        for handle in handles:
            handle.remove()
    if n_blocks in slots:
        store(slots[n_blocks], output.last_hidden_state)


def _static_kwargs(encoder: Encoder) -> dict:
    params = inspect.signature(encoder.model.forward).parameters
    return {"use_cache": False} if "use_cache" in params else {}
