"""The recipe of the realignment study: the drifts that make the variants, and the training and
evaluation sizes (:data:`DEFAULT`, :data:`FAST`).

See :mod:`hrsa.experiments.realignment` for the study.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


__all__ = ["BASE_NAME", "LEVEL_VARIABLES", "Drift", "Recipe", "DEFAULT", "FAST"]


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
