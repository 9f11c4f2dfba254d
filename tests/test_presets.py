"""The paper preset, chance floors in results and plots, and the reproduction script on
tiny config-built Qwen2/Qwen3 stand-ins saved to disk."""

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import transformers  # noqa: E402

import hrsa  # noqa: E402
from hrsa import presets  # noqa: E402
from hrsa.experiments.paper import PAPER_PAIRS, reproduce  # noqa: E402


def test_paper_preset_resolves_to_the_published_protocol():
    opts = presets.resolve("paper")
    assert opts["pooling"] is None
    assert opts["attention"] == "bidirectional"
    assert opts["pairs"] == "all"
    assert opts["max_tokens"] == 50_000 and opts["seed"] == 42
    assert ("knn_overlap", {"k": (5, 10, 50), "center": False}) in opts["metrics"]
    assert {name for name, _ in opts["metrics"]} == {
        "dimension_correlation", "procrustes_alignment", "cka", "knn_overlap"}
    assert set(opts["final_layer_only"]) == {"procrustes_alignment", "probe"}
    assert opts["probe"] == {"classifier": "logistic", "C": 1.0, "splits": (0.8, 0.1, 0.1),
                             "normalize": True, "standardize": True, "seed": 42,
                             "solver": "sklearn"}
    assert presets.resolve("default")["probe"]["solver"] == "torch"


def test_explicit_arguments_win_over_the_preset():
    opts = presets.resolve("paper", pairs="matched", seed=3, probe={"C": 10.0},
                           max_tokens=presets.UNSET)
    assert opts["pairs"] == "matched" and opts["seed"] == 3
    assert opts["max_tokens"] == 50_000
    assert opts["probe"]["C"] == 10.0 and opts["probe"]["normalize"] is True
    assert presets.resolve("default")["pairs"] == "matched"
    with pytest.raises(ValueError, match="preset"):
        presets.resolve("nature")


def _tiny(config_cls, out, minilm_dir, seed):
    from conftest import save_tiny_model

    config = config_cls(vocab_size=30522, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                        pad_token_id=0)
    return save_tiny_model(config, minilm_dir, out, seed=seed)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("stand_ins")
    return {
        "qwen2": [_tiny(transformers.Qwen2Config, root / f"q2_{s}", minilm_dir, s) for s in (0, 1)],
        "qwen3": [_tiny(transformers.Qwen3Config, root / f"q3_{s}", minilm_dir, s) for s in (0, 1)],
    }


@pytest.fixture(scope="module")
def task():
    return hrsa.probes.load("wordnet_nouns", limit=80)


def test_compare_with_the_paper_preset(stand_ins, task):
    texts, labels = task
    a, b = stand_ins["qwen3"]
    ds = hrsa.compare(a, b, texts, labels=labels, preset="paper", progress=False)
    assert ds.attrs["preset"] == "paper" and ds.attrs["seed"] == 42
    assert ds.attrs["attention_a"] == ds.attrs["attention_b"] == "bidirectional"
    assert ds.cka.dims == ("layer_a", "layer_b")
    assert ds.knn_overlap.dims == ("layer_a", "layer_b", "k")
    assert ds.procrustes_alignment.dims == ()
    assert ds.procrustes_alignment.attrs["layers"].startswith("final layer only")
    assert ds.probe_direct.dims == ("split",)
    assert json.loads(ds.attrs["probe"])["normalize"] is True
    # chance floors recorded where known
    assert ds.procrustes_alignment.attrs["chance"] == pytest.approx(
        hrsa.metrics.chance("procrustes_alignment", d=32))
    n = ds.attrs["n_rows"]
    assert ds.knn_overlap.attrs["chance"] == pytest.approx(
        [hrsa.metrics.chance("knn_overlap", n=n, k=k) for k in (5, 10, 50)])
    assert "chance" not in ds.cka.attrs

    explicit = hrsa.compare(a, b, texts, preset="paper", pairs="matched", seed=1,
                            attention="causal", progress=False)
    assert explicit.cka.dims == ("layer",) and explicit.attrs["seed"] == 1
    assert explicit.attrs["attention_a"] == "causal"


def test_plots_draw_chance_floors_and_final_layer_points(stand_ins, task):
    texts, labels = task
    a, b = stand_ins["qwen2"]
    ds = hrsa.compare(a, b, texts, labels=labels, progress=False)
    fig = hrsa.plot.profile(ds)
    dashed = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 4  # H_inv and k-NN overlap at k = 5, 10, 50
    final = hrsa.compare(a, b, texts, labels=labels, preset="paper", progress=False)
    assert len(hrsa.plot.report(final).axes) >= 3  # two heatmaps (+ colorbars) and the bars
    matched = hrsa.compare(a, b, texts, labels=labels, preset="paper", pairs="matched",
                           progress=False)
    labels_drawn = [ln.get_label() for ax in hrsa.plot.profile(matched).axes
                    for ln in ax.get_lines()]
    assert "procrustes_alignment (final layer)" in labels_drawn


def test_reproduce_runs_offline_on_stand_ins(stand_ins, task, tmp_path):
    texts, labels = task
    pairs = [("tiny-sft", "SFT", *stand_ins["qwen2"]), ("tiny-rlvr", "RLVR", *stand_ins["qwen3"])]
    table = reproduce(pairs, texts, tmp_path, labels=labels, progress=False)
    assert (tmp_path / "tiny-sft.nc").exists() and (tmp_path / "tiny-rlvr.nc").exists()
    assert (tmp_path / "summary.md").read_text().strip() == table
    header = table.splitlines()[0]
    for column in ("H_inv (final)", "CKA (mean)", "kNN k=5", "kNN k=50", "probe_direct test"):
        assert column in header
    assert len(table.splitlines()) == 4
    values = [float(v) for v in table.splitlines()[2].split("|")[5:-1] if v.strip()]
    assert all(0 <= v <= 1 for v in values) and not any(np.isnan(values))


def test_paper_pairs_are_hub_ids():
    assert len(PAPER_PAIRS) == 4
    for name, training, a, b in PAPER_PAIRS:
        assert a.count("/") == 1 and b.count("/") == 1, (a, b)
