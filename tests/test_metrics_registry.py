"""The registry (register / get / available) and the chance floors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ortho_group

from hrsa.metrics import Metric, available, chance, get, register
from hrsa.metrics.registry import _REGISTRY  # noqa: PLC2701  (restore after each test)

BUILTIN = ["dimension_correlation", "procrustes_alignment", "cka", "cka_debiased", "cka_rbf",
           "knn_overlap", "rsa", "procrustes", "geodesic", "linear_probe_transfer",
           "linear_predictivity"]


@pytest.fixture(autouse=True)
def _clean_registry():
    saved = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def test_available_lists_the_builtins_by_level():
    assert available() == BUILTIN
    assert available("representation") == ["dimension_correlation", "procrustes_alignment"]
    assert available("function") == ["linear_probe_transfer", "linear_predictivity"]
    with pytest.raises(ValueError, match="level"):
        available("shape")


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_declarations_are_complete_and_netcdf_safe(name):
    metric = get(name, labels=np.arange(20) % 2) if name == "linear_probe_transfer" else get(name)
    assert metric.name == name and metric.long_name and metric.level
    lo, hi = metric.range
    assert lo < hi
    for value in metric.params().values():
        assert isinstance(value, (str, int, float, list)) and not isinstance(value, bool)
    assert type(metric).__doc__ and "Cost" in type(metric).__doc__


def test_register_plain_function():
    def mean_abs_diff(X, Y):
        return float(np.abs(np.asarray(X) - np.asarray(Y)).mean())

    register(mean_abs_diff, level="representation", invariances=("translation",), range=(0, math.inf))
    metric = get("mean_abs_diff")
    assert metric.level == "representation" and metric.invariances == frozenset({"translation"})
    assert metric(np.zeros((3, 2)), np.ones((3, 2))) == 1.0
    assert isinstance(metric.prepare(np.zeros((3, 2))), np.ndarray)  # passes the input through
    with pytest.raises(ValueError, match="same number of rows"):
        metric(np.zeros((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="already registered"):
        register(mean_abs_diff, level="representation")
    register(mean_abs_diff, level="geometry", overwrite=True)
    assert get("mean_abs_diff").level == "geometry"
    with pytest.raises(ValueError, match="level is required"):
        register(lambda X, Y: 0.0, name="zero")
    with pytest.raises(ValueError, match="name must be"):
        register(lambda X, Y: 0.0, level="geometry")
    with pytest.raises(ValueError, match="invariances"):
        register(mean_abs_diff, name="m2", level="geometry", invariances=("rotation",))


class _Norms(Metric):
    """Ratio of total norms (a toy metric for the registry test)."""

    name = "norm_ratio"
    long_name = "norm ratio"
    level = "geometry"
    invariances = frozenset({"orthogonal"})
    range = (0.0, math.inf)

    def __init__(self, power: float = 1.0) -> None:
        self.power = power

    def params(self):
        return {"power": self.power}

    def prepare(self, X, name="X"):
        return np.linalg.norm(X) ** self.power

    def score(self, px, py):
        return float(px / py)


def test_register_metric_subclass_and_instance():
    register(_Norms)
    assert "norm_ratio" in available("geometry")
    assert get("norm_ratio", power=2.0)(np.ones((2, 2)), np.ones((1, 1))) == 4.0
    renamed = register(_Norms, name="norm_ratio2")
    assert renamed.name == "norm_ratio2" and issubclass(renamed, _Norms)
    with pytest.raises(ValueError, match="already registered"):
        register(_Norms)
    inst = _Norms(power=3.0)
    register(inst, overwrite=True)
    assert get("norm_ratio") is inst
    with pytest.raises(TypeError, match="configured instance"):
        get("norm_ratio", power=1.0)
    with pytest.raises(TypeError, match="declared by a Metric"):
        register(_Norms, level="function", overwrite=True)


def test_get_with_params_instances_and_unknown_names():
    m = get("knn_overlap", k=(5, 10, 50), center=True)
    assert m.dims == {"k": (5, 10, 50)} and m.params()["k"] == [5, 10, 50]
    assert "translation" in m.invariances and "translation" not in get("knn_overlap").invariances
    assert get(m) is m
    with pytest.raises(ValueError, match="unknown metric 'ckaa'.*available: dimension_correlation"):
        get("ckaa")
    with pytest.raises(TypeError):
        get("cka", nonsense=1)


def test_procrustes_alignment_chance_is_the_haar_expectation():
    # the closed form agrees with 0.73 / ln D and with a simulation of Haar rotations
    assert chance("procrustes_alignment", d=1536) == pytest.approx(0.73 / math.log(1536), rel=0.01)
    rng = np.random.default_rng(0)
    for d in (8, 64, 256):
        X = rng.normal(size=(4 * d, d))
        metric = get("procrustes_alignment")
        px = metric.prepare(X)
        sims = [metric.score(px, metric.prepare(X @ ortho_group.rvs(d, random_state=rng)))
                for _ in range({8: 2000, 64: 30, 256: 3}[d])]
        assert np.mean(sims) == pytest.approx(chance("procrustes_alignment", d=d), rel=0.01)
    with pytest.raises(ValueError, match="needs d"):
        chance("procrustes_alignment")


def test_knn_overlap_chance_matches_independent_neighbour_sets():
    n, k = 200, 10
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, 5))
    observed = np.mean([get("knn_overlap", k=k)(X, rng.normal(size=(n, 5))) for _ in range(5)])
    floor = chance("knn_overlap", n=n, k=k)
    assert observed == pytest.approx(floor, rel=0.15)
    assert floor == pytest.approx(k / (2 * (n - 1) - k), rel=0.05)  # E[I] / (2k - E[I])
    assert chance("knn_overlap", n=n) == floor  # default k = 10
    assert chance("knn_overlap", n=n - 1, k=n - 2) == pytest.approx(1.0)
    assert chance("cka") is None
