r"""Function-level metrics: does a linear readout work in both spaces?

* ``linear_probe_transfer``: fit a linear classifier on ``X``, freeze it, and evaluate it on ``X``
  and on ``Y`` (the paper's cross-model probe). Needs ``d1 == d2``.
* ``linear_predictivity``: cross-validated ridge-regression ``R^2`` from ``X`` to ``Y``
  (asymmetric; ``d1 != d2`` allowed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import KFold, train_test_split

from .base import Metric
from ._classifiers import LogisticProbe, RidgeProbe
from ._util import (as_matrix, centered, centred_input, check_not_constant, check_pair,
                    rank_tolerance, warn)

if TYPE_CHECKING:
    from .weights import TextResampling

__all__ = ["LinearProbeTransfer", "LinearPredictivity", "METRICS", "SPLITS"]

SPLITS = ("train", "dev", "test")  # the probe's splits, coord ``split`` of its variables


@dataclass
class _ProbePrep:
    """Features ``F: (n, d)`` float64 after this representation's own
    normalisation/standardisation (a tensor on the input's device for ``solver="torch"``, a
    numpy array for ``"sklearn"``), the classifier fitted on its train split, and its
    accuracy on its own splits."""

    F: torch.Tensor | np.ndarray
    classifier: Any
    self_acc: dict[str, float]

    @property
    def shape(self) -> tuple[int, int]:
        return self.F.shape


class LinearProbeTransfer(Metric):
    r"""Cross-model linear probe: fit on ``X``, freeze, evaluate on ``X`` and on ``Y``.

    ``labels: (n,)`` are split once, seeded and stratified (sklearn ``train_test_split``), into
    train/dev/test by ``splits``. ``prepare(X)``: optionally L2-normalise rows (``normalize``),
    standardise by the mean and standard deviation of X's own train rows (``standardize``, as
    sklearn's ``StandardScaler``; per representation, so ``Y`` is standardised by its own
    statistics), then fit a logistic regression with sklearn's ``LogisticRegression(C=C)``
    objective or ``RidgeClassifier(alpha=1/C)`` on the train rows.

    ``solver="torch"`` (default) fits in torch in float64 on the input's device (a GPU when
    compare runs there): logistic regression by L-BFGS to ``max|gradient| <= 1e-6``, which
    reaches the objective's optimum (``hrsa.metrics._classifiers``); ``solver="sklearn"``
    fits scikit-learn's estimators on the CPU (lbfgs stopping at its default ``tol=1e-4``,
    about 0.5-1% above the optimum: the paper's analysis code). The ridge classifier is the
    same closed form in both.

    ``score(px, py)`` returns accuracies of px's frozen classifier: ``self_{split}`` on X's
    features, ``direct_{split}`` on Y's, and ``similarity = direct_test``. Needs ``d1 == d2``.

    A constant representation raises ``ValueError`` (a probe on it would only learn the majority
    class). Range [0, 1]. Invariances: translation and isotropic scaling when ``standardize`` and not
    ``normalize``; isotropic scaling only when ``normalize``; none when neither. Not invariant to
    rotations (the readout is tied to the coordinates).
    Cost: prepare = one classifier fit on ``0.8 n`` rows (logistic regression is far slower
    than the ridge classifier); score O(n d).
    """

    SOLVERS = ("torch", "sklearn")

    name = "linear_probe_transfer"
    long_name = "cross-model linear-probe accuracy"
    level = "function"
    same_dim = True
    needs_labels = True
    range = (0.0, 1.0)

    def __init__(self, labels: Any, classifier: str = "logistic", C: float = 1.0,
                 splits: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                 normalize: bool = False, standardize: bool = True,
                 solver: str = "torch") -> None:
        y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if y.ndim != 1:
            raise ValueError(f"labels must be 1-D (n,), got shape {y.shape}")
        classes, codes = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(f"labels has a single class {classes.tolist()}; a probe needs >= 2")
        if classifier not in ("logistic", "ridge"):
            raise ValueError(f"classifier must be 'logistic' or 'ridge', got {classifier!r}")
        if solver not in self.SOLVERS:
            raise ValueError(f"solver must be one of {self.SOLVERS}, got {solver!r}")
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C!r}")
        splits = tuple(float(s) for s in splits)
        if len(splits) != 3 or min(splits) <= 0 or abs(sum(splits) - 1) > 1e-9:
            raise ValueError(f"splits must be three positive fractions summing to 1, got {splits}")
        self.labels, self.classifier, self.C = y, classifier, float(C)
        self.classes, self.codes, self.solver = classes, torch.from_numpy(codes), solver
        self.splits, self.seed = splits, int(seed)
        self.normalize, self.standardize = bool(normalize), bool(standardize)
        self.index = self._split(y)
        if self.normalize:
            self.invariances = frozenset({"isotropic_scaling"})
        elif self.standardize:
            self.invariances = frozenset({"translation", "isotropic_scaling"})
        else:
            self.invariances = frozenset()

    def _split(self, y: np.ndarray) -> dict[str, np.ndarray]:
        idx = np.arange(y.size)
        train, dev, test = self.splits
        try:
            tr, rest = train_test_split(idx, train_size=train, stratify=y, random_state=self.seed)
            dv, te = train_test_split(rest, train_size=dev / (dev + test), stratify=y[rest],
                                      random_state=self.seed)
        except ValueError as err:
            counts = dict(zip(*np.unique(y, return_counts=True)))
            raise ValueError(f"labels cannot be split {self.splits} with stratification "
                             f"(class counts {counts}): {err}") from err
        return {"train": np.sort(tr), "dev": np.sort(dv), "test": np.sort(te)}

    def params(self) -> dict[str, Any]:
        digest = hashlib.sha1(np.ascontiguousarray(self.labels).astype(str).tobytes()).hexdigest()
        return {"classifier": self.classifier, "C": self.C, "splits": list(self.splits),
                "seed": self.seed, "normalize": int(self.normalize),
                "standardize": int(self.standardize), "solver": self.solver,
                "n_labels": int(self.labels.size),
                "labels_sha1": digest}

    def prepare(self, X: Any, name: str = "X") -> _ProbePrep:
        X = as_matrix(X, name)
        if X.shape[0] != self.labels.size:
            raise ValueError(f"{name} has {X.shape[0]} rows but labels has {self.labels.size} "
                             "entries; they must match")
        check_not_constant(centered(X), X, name)
        F = self._features(X)
        train = self.index["train"]
        if self.solver == "sklearn":
            F = F.cpu().numpy()
            clf = (LogisticRegression(C=self.C, max_iter=1000) if self.classifier == "logistic"
                   else RidgeClassifier(alpha=1.0 / self.C))
            clf.fit(F[train], self.labels[train])
        else:
            clf = (LogisticProbe(self.classes, C=self.C) if self.classifier == "logistic"
                   else RidgeProbe(self.classes, alpha=1.0 / self.C))
            rows = torch.from_numpy(train).to(F.device)
            clf.fit(F[rows], self.codes.to(F.device)[rows])
        acc = {s: float(clf.score(F[self.index[s]], self.labels[self.index[s]])) for s in SPLITS}
        return _ProbePrep(F, clf, acc)

    def _features(self, X: torch.Tensor) -> torch.Tensor:
        """``(n, d)`` float64 probe features of ``X`` on its device: rows L2-normalised
        (``normalize``; a zero row stays zero), then ``(F - mean) / std`` with both taken
        over the train rows (``standardize``; std 1 for a column that is constant there, by
        sklearn's ``StandardScaler`` rule)."""
        F = X.to(torch.float64)
        if self.normalize:
            norms = torch.linalg.vector_norm(F, dim=1, keepdim=True)
            F = F / torch.where(norms == 0, 1.0, norms)
        if self.standardize:
            train = F[torch.from_numpy(self.index["train"]).to(F.device)]
            n, eps = train.shape[0], torch.finfo(torch.float64).eps
            mean, var = train.mean(dim=0), train.var(dim=0, correction=0)
            std = var.sqrt()
            constant = (var <= n * eps * var + (n * mean * eps) ** 2) | (std < 10 * eps)
            F = (F - mean) / torch.where(constant, 1.0, std)
        return F

    def strata(self) -> np.ndarray:
        """``(n,)``: ``"{split}/{label}"`` of each row, the strata of a bootstrap that keeps
        the size and class balance of every split."""
        out = np.empty(self.labels.size, dtype=object)
        for s in SPLITS:
            out[self.index[s]] = [f"{s}/{y}" for y in self.labels[self.index[s]]]
        return out.astype(str)

    def score_resampled(self, prep_x: _ProbePrep, prep_y: _ProbePrep,
                        resampling: TextResampling) -> list[dict[str, float]]:
        """Accuracies of the frozen probe (fitted once on the full train split) in every
        replicate: ``sum_i w_bi c_i / sum_i w_bi`` over each split's rows, ``c_i`` whether
        row ``i`` is classified correctly on X (self) or Y (direct). The interval is
        conditional on the fitted probe; resample rows within split and class
        (:func:`hrsa.uncertainty.stratified_resampling`) so that no split is left empty."""
        check_pair(prep_x, prep_y, same_d=True, why="linear_probe_transfer (direct transfer)")
        W = resampling.counts[:, resampling.units]  # (B, n)
        correct = {readout: prep_x.classifier.predict(_like(p.F, prep_x.F)) == self.labels
                   for readout, p in (("self", prep_x), ("direct", prep_y))}
        acc = {}
        for readout, c in correct.items():
            for s in SPLITS:
                rows = self.index[s]
                with np.errstate(invalid="ignore", divide="ignore"):
                    acc[f"{readout}_{s}"] = W[:, rows] @ c[rows] / W[:, rows].sum(axis=1)
        return [{**{k: float(v[b]) for k, v in acc.items()},
                 "similarity": float(acc["direct_test"][b])} for b in range(W.shape[0])]

    def score(self, prep_x: _ProbePrep, prep_y: _ProbePrep) -> dict[str, float]:
        check_pair(prep_x, prep_y, same_d=True, why="linear_probe_transfer (direct transfer)")
        F_y = _like(prep_y.F, prep_x.F)
        out = {f"self_{s}": prep_x.self_acc[s] for s in SPLITS}
        for s in SPLITS:
            rows = self.index[s]
            out[f"direct_{s}"] = float(prep_x.classifier.score(F_y[rows], self.labels[rows]))
        out["similarity"] = out["direct_test"]
        return out


def _like(F: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """``F`` as the kind of array ``ref`` is (a tensor on ``ref``'s device, or numpy), for
    a classifier fitted on ``ref``'s features."""
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(F).to(ref.device)
    return F.cpu().numpy() if isinstance(F, torch.Tensor) else F


@dataclass
class _RidgePrep:
    """Per fold: test rows, ``A = (X_te - mean_tr) V diag(s / (s^2 + alpha))`` and ``U`` from the
    thin SVD ``X_tr - mean_tr = U diag(s) V^T``, so the ridge prediction of any ``Y`` is
    ``A U^T (Y_tr - mean_tr(Y)) + mean_tr(Y)``. Also the centred ``Xc`` (as a target)."""

    folds: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    Xc: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.Xc.shape)


class LinearPredictivity(Metric):
    r"""Cross-validated ridge ``R^2`` predicting ``Y: (n, d2)`` from ``X: (n, d1)``.

    ``KFold(n_splits, shuffle=True, random_state=seed)``; in each fold ridge regression with
    intercept and penalty ``alpha`` is fitted on the train rows (closed form through the SVD of
    the centred train rows, prepared once per representation) and predicts the test rows. The
    out-of-fold predictions ``Y^`` are pooled and ``R^2_j = 1 - sum_i (Y_ij - Y^_ij)^2 /
    sum_i (Y_ij - mean_j)^2`` per output feature (= sklearn ``cross_val_predict`` + ``r2_score``).
    ``weighting="uniform"`` (default): mean of ``R^2_j`` over features (features constant in Y are
    left out with a warning); ``"variance"``: ``1 - sum SSE / sum SST`` (variance-weighted).

    Asymmetric: ``score(px, py)`` predicts Y from X. Range (-inf, 1]. Invariant to translation and
    feature permutation; also to orthogonal maps with ``weighting="variance"`` (the ridge penalty
    is rotation invariant in X, and the pooled R^2 in Y). Not to isotropic scaling of X (it
    changes the effective penalty). Cost: prepare O(n_splits n d1 min(n, d1)) time and
    O(n_splits n min(n, d1)) memory; score O(n_splits n min(n, d1) d2).
    """

    name = "linear_predictivity"
    long_name = "ridge R^2 (X predicts Y)"
    level = "function"
    range = (-float("inf"), 1.0)

    def __init__(self, alpha: float = 1.0, n_splits: int = 5, seed: int = 0,
                 weighting: str = "uniform") -> None:
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        if not (isinstance(n_splits, (int, np.integer)) and n_splits >= 2):
            raise ValueError(f"n_splits must be an int >= 2, got {n_splits!r}")
        if weighting not in ("uniform", "variance"):
            raise ValueError(f"weighting must be 'uniform' or 'variance', got {weighting!r}")
        self.alpha, self.n_splits, self.seed, self.weighting = float(alpha), int(n_splits), int(seed), weighting
        self.invariances = frozenset({"translation", "permutation"}
                                     | ({"orthogonal"} if weighting == "variance" else set()))

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "n_splits": self.n_splits, "seed": self.seed,
                "weighting": self.weighting}

    def prepare(self, X: Any, name: str = "X") -> _RidgePrep:
        Xc = centred_input(X, name, min_rows=self.n_splits)
        folds = []
        kf = KFold(self.n_splits, shuffle=True, random_state=self.seed)
        for tr, te in kf.split(np.zeros(Xc.shape[0])):
            tr_t, te_t = torch.as_tensor(tr, device=Xc.device), torch.as_tensor(te, device=Xc.device)
            mu = Xc[tr_t].mean(dim=0)
            U, s, Vh = torch.linalg.svd(Xc[tr_t] - mu, full_matrices=False)
            shrink = torch.where(s > rank_tolerance(float(s[0]), max(Xc.shape), s.dtype),
                                 s / (s.square() + self.alpha), 0.0)
            folds.append((tr_t, te_t, ((Xc[te_t] - mu) @ Vh.T) * shrink, U))
        return _RidgePrep(folds, Xc)

    def score(self, prep_x: _RidgePrep, prep_y: _RidgePrep) -> float:
        check_pair(prep_x, prep_y)
        Y = prep_y.Xc.to(prep_x.Xc.device)
        pred = torch.empty_like(Y)
        for tr, te, A, U in prep_x.folds:
            mu = Y[tr].mean(dim=0)
            pred[te] = A @ (U.T @ (Y[tr] - mu)) + mu
        sse = (Y - pred).square().sum(dim=0)
        sst = (Y - Y.mean(dim=0)).square().sum(dim=0)
        if self.weighting == "variance":
            return float(1 - sse.sum() / sst.sum())
        varying = sst > 1e-24 * sst.max()
        if not bool(varying.all()):
            warn(f"linear_predictivity: {int((~varying).sum())} of {varying.numel()} features of Y "
                 "are constant and were left out of the mean R^2")
        return float((1 - sse[varying] / sst[varying]).mean())


METRICS = (LinearProbeTransfer, LinearPredictivity)
