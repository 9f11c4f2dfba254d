"""``check_metric`` passes on every built-in metric and catches a broken one."""

from __future__ import annotations

import numpy as np
import pytest

from hrsa.metrics import Metric, available, get, register
from hrsa.metrics.checks import check_metric
from hrsa.metrics.registry import _REGISTRY

LABELS = np.arange(48) % 3  # the default data's clusters
VARIANTS = [("knn_overlap", {"k": (5, 10)}), ("knn_overlap", {"center": True}),
            ("procrustes", {"output": "distance"}), ("rsa", {"distance": "euclidean"}),
            ("linear_probe_transfer", {"labels": LABELS, "classifier": "ridge"}),
            ("linear_probe_transfer", {"labels": LABELS, "solver": "sklearn",
                                       "normalize": True})]


def _params(name: str) -> dict:
    return {"labels": LABELS} if name == "linear_probe_transfer" else {}


@pytest.mark.parametrize("name", available())
def test_every_built_in_metric_conforms(name):
    check_metric(get(name, **_params(name)))


@pytest.mark.parametrize("name,params", VARIANTS, ids=[f"{n}-{i}" for i, (n, _) in
                                                       enumerate(VARIANTS)])
def test_configured_built_ins_conform(name, params):
    check_metric(get(name, **params))


class _MeanGap(Metric):
    name = "mean_gap_check"
    level = "geometry"
    range = (0.0, 1.0)

    def score(self, prep_x, prep_y) -> float:
        return float(np.tanh(abs(np.asarray(prep_x).mean() - np.asarray(prep_y).mean())))


@pytest.mark.parametrize("broken,message", [
    (type("FalseInvariance", (_MeanGap,), {"invariances": frozenset({"translation"})}),
     "declares 'translation' invariance"),
    (type("OutOfRange", (_MeanGap,), {"range": (2.0, 3.0)}), "outside the range"),
    (type("NotAFloat", (_MeanGap,), {"score": lambda self, x, y: 1}), "float or a dict"),
    (type("BadBatch", (_MeanGap,), {"score_all": lambda self, px, py: np.zeros((2, 2))}),
     "score_all"),
    (type("NoWidthCheck", (_MeanGap,), {"same_dim": True}), "same_dim"),
    (type("BadMoments", (_MeanGap,), {"score_moments": lambda self, moments: -1.0}),
     "score_moments"),
])
def test_a_broken_metric_fails_with_a_message(broken, message):
    with pytest.raises(AssertionError, match=message):
        check_metric(broken())


def test_register_checks_the_optional_capabilities():
    class WrongArity(_MeanGap):
        name = "wrong_arity_check"

        def score_resampled(self, prep_x, prep_y):  # lacks resampling
            return []

    with pytest.raises(TypeError, match="score_resampled must take the arguments"):
        register(WrongArity)
    assert "wrong_arity_check" not in _REGISTRY
