"""The attention mode of a model: probed on every load, switched where asked.

The probe feeds two sequences of ordinary tokens of the model's own tokenizer that differ
in their last token only (two tokens whose input embeddings differ), and reads the first
token's last-layer state: it changes under bidirectional attention and cannot under causal
attention. The same pair is then run padded on the tokenizer's padding side (with
mask-derived positions for left padding): the real tokens' states must not move, so a mode
that ignores the padding mask is caught on load rather than scored.

Decoders are switched with transformers' ``is_causal`` forward argument, which every
decoder family of transformers >= 5 honours (``merge_with_config_defaults`` sets
``config.is_causal`` for the call, so the mask builders return a bidirectional padding
mask and the attention kernels run without a causal mask). Nothing in the model is patched.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

ATTENTION_MODES = ("auto", "causal", "bidirectional")

# An ordinary sentence, and words to put in place of its last token; any tokenizer splits
# them into tokens of its main vocabulary (never fixed ids: low ids are often unused
# special tokens that share one embedding).
PROBE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank"
SWAP_WORDS = (" cat", " house", " seven", " blue", " tree", " water", " king", " 42", "!")
# The switch hrsa applies, recorded in the activations' attrs (``attention_switch``).
SWITCH_NATIVE = "native"
SWITCH_FORWARD_ARG = "forward argument is_causal={value}"


class AttentionError(ValueError):
    """A model cannot run (or be verified) in the attention mode asked for."""


def verify(model: torch.nn.Module, tokenizer: Any, wanted: str,
           name: str) -> tuple[str, dict, str]:
    """Probe ``model``'s native mode and switch it to ``wanted`` where needed.

    Args:
        model: a transformers base model (no LM head), in eval mode.
        tokenizer: its tokenizer.
        wanted: "auto" (keep the native mode), "causal" or "bidirectional".
        name: the model's name, for messages.

    Returns:
        ``(mode, forward_kwargs, switch)``: the verified mode, the keyword arguments every
        forward needs for it, and how the mode was reached (``"native"`` or the forward
        argument used).

    Raises:
        AttentionError: the model cannot run in ``wanted`` (naming the model, its family
            and what was tried), or padding changes the real tokens' states.
    """
    if wanted not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {wanted!r}")
    ids = probe_ids(model, tokenizer, name)
    native = probe(model, tokenizer, ids, {}, name)
    if wanted in ("auto", native):
        return native, {}, SWITCH_NATIVE
    kwargs = {"is_causal": wanted == "causal"}
    family = getattr(model.config, "model_type", "?")
    tried = f"the forward argument is_causal={kwargs['is_causal']}"
    if not _accepts(model, "is_causal"):
        raise AttentionError(
            f"model {name!r} ({type(model).__name__}, family {family!r}) is natively "
            f"{native} and cannot be run with attention={wanted!r}: its forward takes no "
            "is_causal argument")
    got = probe(model, tokenizer, ids, kwargs, name)
    if got != wanted:
        raise AttentionError(
            f"model {name!r} ({type(model).__name__}, family {family!r}) is natively "
            f"{native} and cannot be run with attention={wanted!r}: with {tried} it still "
            f"attends {got}")
    return wanted, kwargs, SWITCH_FORWARD_ARG.format(value=kwargs["is_causal"])


def probe_ids(model: torch.nn.Module, tokenizer: Any, name: str) -> torch.Tensor:
    """``(2, T)`` token ids: :data:`PROBE_TEXT` without special tokens, and the same with
    its last token replaced by the first token of a :data:`SWAP_WORDS` word whose input
    embedding differs from it (else by the token whose embedding differs most)."""
    ids = list(tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"])
    if len(ids) < 3:
        raise AttentionError(f"model {name!r}: its tokenizer splits the probe text "
                             f"{PROBE_TEXT!r} into {len(ids)} tokens; at least 3 are needed")
    table = model.get_input_embeddings().weight
    last = table[ids[-1]].float()
    scale = last.abs().max().clamp_min(1e-12)
    for word in SWAP_WORDS:
        swap = tokenizer(word, add_special_tokens=False)["input_ids"]
        if swap and swap[0] != ids[-1] and swap[0] < table.shape[0] and \
                (table[swap[0]].float() - last).abs().max() > 1e-3 * scale:
            return torch.tensor([ids, ids[:-1] + [swap[0]]])
    # a tokenizer that maps the probe words to one token (e.g. all unknown): the token
    # whose embedding lies farthest from the last one
    farthest = int((table.float() - last).abs().amax(dim=1).argmax())
    if (table[farthest].float() - last).abs().max() <= 1e-3 * scale:
        raise AttentionError(f"model {name!r}: every input embedding equals the probe "
                             "text's last token's, so attention cannot be probed")
    return torch.tensor([ids, ids[:-1] + [farthest]])


@torch.no_grad()
def probe(model: torch.nn.Module, tokenizer: Any, ids: torch.Tensor, forward_kwargs: dict,
          name: str) -> str:
    """'bidirectional' if the first token's last-layer state depends on the last token,
    else 'causal'; raises if padding the pair (on the tokenizer's side) moves any real
    token's state by more than the dtype's tolerance.

    ``ids: (2, T)`` from :func:`probe_ids`.
    """
    device = model.get_input_embeddings().weight.device
    device = torch.device("cpu") if device.type == "meta" else device
    ids = ids.to(device)
    states = _last_layer(model, ids, torch.ones_like(ids), None, forward_kwargs)
    first = states[:, 0]
    scale = states.abs().amax().clamp_min(1e-6)
    tol = _tolerance(next(model.parameters()).dtype)
    mode = "bidirectional" if (first[0] - first[1]).abs().max() > tol * scale else "causal"

    pad = 2
    left = getattr(tokenizer, "padding_side", "right") == "left"
    pad_ids = torch.full((2, pad), tokenizer.pad_token_id or 0, dtype=ids.dtype, device=device)
    padded = torch.cat([pad_ids, ids] if left else [ids, pad_ids], dim=1)
    mask = torch.ones_like(padded)
    if left:
        mask[:, :pad] = 0
    else:
        mask[:, -pad:] = 0
    positions = (mask.cumsum(-1) - 1).clamp_min(0) if left else None
    real = _last_layer(model, padded, mask, positions, forward_kwargs)
    real = real[:, pad:] if left else real[:, :-pad]
    moved = float((real - states).abs().max() / scale)
    if moved > 10 * tol:
        side = "left" if left else "right"
        raise AttentionError(
            f"model {name!r} ({type(model).__name__}) under {mode} attention: {side} "
            f"padding moves the real tokens' states by {moved:.2g} of their scale, so the "
            "padding mask is not honoured in this mode")
    return mode


def _last_layer(model, ids, mask, positions, forward_kwargs: dict) -> torch.Tensor:
    inputs = {"input_ids": ids, "attention_mask": mask}
    if positions is not None:
        inputs["position_ids"] = positions
    if "use_cache" in inspect.signature(model.forward).parameters:
        inputs["use_cache"] = False
    return model(**inputs, **forward_kwargs).last_hidden_state.float()


def _tolerance(dtype: torch.dtype) -> float:
    """Relative change that counts as a real dependence: above float32 reduction-order
    noise, and above bfloat16/float16 rounding for half-precision models."""
    return 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4


def _accepts(model: torch.nn.Module, argument: str) -> bool:
    """Whether ``model.forward`` takes ``argument`` (by name or through ``**kwargs``)."""
    return any(p.kind is inspect.Parameter.VAR_KEYWORD or p.name == argument
               for p in inspect.signature(model.forward).parameters.values())
