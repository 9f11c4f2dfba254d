"""Data-parallel capture under torch.distributed: 2 CPU processes (gloo, launched with
torchrun) give exactly the single-process results: captures, compare (token level with
labels, pooled all pairs), trajectory, streaming and the CLI; a world size larger than
the number of texts fails on every rank and writes nothing.

Run as a script under torchrun, this file is the worker: it computes :func:`results`
and saves each under ``rank{r}_{name}.nc``; the tests compute the same in one process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
import transformers
import xarray as xr

import hrsa
from hrsa import cli, distributed
from hrsa.streaming import compare_streaming
from hrsa.threads import limit_threads

N_TEXTS = 40
CAPTURE = {"batch_size": 4, "progress": False}


def results(a: str, b: str, texts: list[str], labels: list[str]) -> dict:
    """Every result checked, computed the same way in one process and under torchrun."""
    token, mean = distributed.capture_views(a, texts, (None, "mean"), max_tokens=200,
                                            seed=3, **CAPTURE)
    return {
        "capture_token": token,
        "capture_mean": mean,
        "compare_token": hrsa.compare(a, b, texts, labels=labels, max_tokens=200,
                                      probe={"classifier": "ridge"}, **CAPTURE),
        "compare_pooled": hrsa.compare(a, b, texts, pooling="mean", pairs="all",
                                       metrics=["cka", "dimension_correlation"], **CAPTURE),
        "trajectory": hrsa.trajectory(b, [a, b], texts, max_tokens=200,
                                      metrics=["cka"], **CAPTURE),
        "streaming": compare_streaming(a, b, texts, chunk_texts=6, **CAPTURE),
        # one chunk of 40 texts for 2 ranks: the ranks stream chunks of 20 instead
        "streaming_one_chunk": compare_streaming(a, b, texts, chunk_texts=100,
                                                 batch_size=1, progress=False),
    }


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", *args], capture_output=True, text=True, timeout=300, env=_env())


@pytest.fixture(scope="module")
def setup(tmp_path_factory, minilm_dir, tiny_qwen3_dir) -> dict:
    """Two tiny decoders sharing MiniLM's tokenizer (3 and 2 blocks), 40 labelled texts."""
    from conftest import save_tiny_model

    config = transformers.Qwen3Config(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, pad_token_id=0)
    folder = tmp_path_factory.mktemp("distributed")
    b = save_tiny_model(config, minilm_dir, folder / "qwen3_2", seed=1)
    texts, labels = hrsa.probes.load("wordnet_nouns", limit=N_TEXTS)
    (folder / "texts.txt").write_text("\n".join(texts) + "\n")
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "texts.json").write_text(json.dumps([texts, labels]))
    return {"a": tiny_qwen3_dir, "b": b, "texts": texts, "labels": labels, "folder": folder}


@pytest.fixture(scope="module")
def two_ranks(setup) -> Path:
    """The worker's outputs, from 2 ranks."""
    out = setup["folder"] / "ranks"
    out.mkdir()
    run = _torchrun(__file__, setup["a"], setup["b"], str(setup["folder"] / "texts.json"),
                    str(out))
    assert run.returncode == 0, run.stderr[:5000]
    return out


@pytest.fixture(scope="module")
def one_process(setup) -> dict:
    with limit_threads(1):  # the workers' setting (OMP_NUM_THREADS=1)
        return results(setup["a"], setup["b"], setup["texts"], setup["labels"])


def _load(path: Path) -> xr.Dataset | xr.DataArray:
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    return ds["activations"] if "activations" in ds else ds


def _roundtrip(obj: xr.Dataset | xr.DataArray, path: Path) -> xr.Dataset | xr.DataArray:
    obj.to_netcdf(path)
    return _load(path)


@pytest.mark.parametrize("name", ["capture_token", "capture_mean", "compare_token",
                                  "compare_pooled", "trajectory", "streaming"])
def test_two_ranks_equal_one_process(name, two_ranks, one_process, tmp_path):
    expected = _roundtrip(one_process[name], tmp_path / "expected.nc")
    for rank in (0, 1):
        got = _load(two_ranks / f"rank{rank}_{name}.nc")
        if name == "streaming":  # float64 sums added in another order
            xr.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
            assert got.attrs == expected.attrs
        else:  # the same batches: bitwise the same activations and scores
            xr.testing.assert_identical(got, expected)


def test_streaming_with_fewer_chunks_than_ranks(two_ranks, one_process, tmp_path):
    expected = _roundtrip(one_process["streaming_one_chunk"], tmp_path / "expected.nc")
    assert expected.attrs["n_rows"] > 500
    for rank in (0, 1):
        got = _load(two_ranks / f"rank{rank}_streaming_one_chunk.nc")
        xr.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_token_subsample_and_coords(two_ranks, one_process):
    token = _load(two_ranks / "rank1_capture_token.nc")
    assert token.sizes["token"] == 200 and token.attrs["max_tokens"] == 200
    assert token.attrs["n_texts"] == N_TEXTS and token.text.values.max() == N_TEXTS - 1
    # the rows of both ranks' batches are present (no zero rows left from the shards)
    assert (np.abs(token.values).sum(axis=(0, 2)) > 0).all()


def test_a_non_gloo_default_group_gets_a_gloo_group(two_ranks, one_process):
    got = _load(two_ranks / "rank1_capture_mean_subgroup.nc")
    np.testing.assert_array_equal(got.values, one_process["capture_mean"].values)


def test_too_many_ranks_fail_on_every_rank(two_ranks):
    for rank in (0, 1):
        messages = json.loads((two_ranks / f"rank{rank}_errors.json").read_text())
        assert messages["compare"] == messages["streaming"] == (
            "world size 2 is larger than the number of texts (1): every rank needs at least "
            "one text; run at most 1 processes or give more texts")


def _cli_args(setup, texts: str, out: Path) -> list[str]:
    return ["compare", setup["a"], setup["b"], "--texts", texts, "--labels",
            str(setup["folder"] / "labels.txt"), "--max-tokens", "200", "--batch-size", "4",
            "--metrics", "cka", "dimension_correlation", "--quiet", "--out",
            str(out / "report.nc")]


def test_cli_rank_zero_writes_one_report_equal_to_one_process(setup, tmp_path):
    (tmp_path / "ranks").mkdir()
    (tmp_path / "one").mkdir()
    texts = str(setup["folder"] / "texts.txt")
    run = _torchrun("-m", "hrsa.cli", *_cli_args(setup, texts, tmp_path / "ranks"),
                    "--plot", str(tmp_path / "ranks" / "report.png"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "ranks").iterdir()) == ["report.nc",
                                                                      "report.png"]
    assert run.stdout.count("wrote ") == 2 and run.stdout.count("representation") == 1
    with limit_threads(1):
        assert cli.main(_cli_args(setup, texts, tmp_path / "one")) == 0
    xr.testing.assert_identical(_load(tmp_path / "ranks" / "report.nc"),
                                _load(tmp_path / "one" / "report.nc"))


def test_cli_with_more_ranks_than_texts_writes_nothing(setup, tmp_path):
    one = tmp_path / "one.txt"
    one.write_text(setup["texts"][0] + "\n")
    (tmp_path / "out").mkdir()
    run = _torchrun("-m", "hrsa.cli", "compare", setup["a"], setup["b"], "--texts", str(one),
                    "--quiet", "--out", str(tmp_path / "out" / "report.nc"))
    assert run.returncode != 0
    assert run.stderr.count("hrsa compare: error: world size 2 is larger than the number "
                            "of texts (1)") == 2  # one line from each rank
    assert list((tmp_path / "out").iterdir()) == []


def _worker(a: str, b: str, texts_json: str, out: str) -> None:
    """Under torchrun: save :func:`results`, the too-many-ranks errors and a capture
    through the gloo group made for a (pretend) nccl default group."""
    out = Path(out)
    texts, labels = json.loads(Path(texts_json).read_text())
    rank, world = distributed.rank_and_world()
    assert (rank, world) == (dist.get_rank(), 2) and dist.get_backend() == "gloo"
    for name, obj in results(a, b, texts, labels).items():
        obj.to_netcdf(out / f"rank{rank}_{name}.nc")
    errors = {}
    for name, call in (("compare", lambda: hrsa.compare(a, b, texts[:1], **CAPTURE)),
                       ("streaming", lambda: compare_streaming(a, b, texts[:1], **CAPTURE))):
        try:
            call()
        except ValueError as err:
            errors[name] = str(err)
    (out / f"rank{rank}_errors.json").write_text(json.dumps(errors))
    dist.get_backend = lambda group=None: "nccl"
    group = distributed.process_group()
    assert group is not dist.group.WORLD and distributed.process_group() is group
    mean, = distributed.capture_views(a, texts, ("mean",), **CAPTURE)
    mean.to_netcdf(out / f"rank{rank}_capture_mean_subgroup.nc")


if __name__ == "__main__":
    _worker(*sys.argv[1:])
