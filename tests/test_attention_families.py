"""Causal and bidirectional attention for every common decoder family, built from configs
(without an explicit head_dim where the config allows), saved and loaded back through
``from_pretrained``, under sdpa and eager attention, padded on either side."""

import numpy as np
import pytest
import torch
import transformers

import hrsa
from conftest import save_tiny_model

SIZE = dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
MOE = dict(num_experts_per_tok=2)
FAMILIES = {
    "llama": lambda: transformers.LlamaConfig(**SIZE),
    "mistral": lambda: transformers.MistralConfig(**SIZE),
    "qwen2": lambda: transformers.Qwen2Config(**SIZE),
    "qwen3": lambda: transformers.Qwen3Config(**SIZE),
    "gemma2": lambda: transformers.Gemma2Config(**SIZE),
    "gemma3": lambda: transformers.Gemma3TextConfig(**SIZE),
    "phi3": lambda: transformers.Phi3Config(**SIZE),
    "olmo2": lambda: transformers.Olmo2Config(**SIZE),
    "mixtral": lambda: transformers.MixtralConfig(**SIZE, **MOE, num_local_experts=4),
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(
        **SIZE, **MOE, num_experts=4, moe_intermediate_size=32,
        shared_expert_intermediate_size=32),
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(**SIZE, **MOE, num_experts=4,
                                                     moe_intermediate_size=32),
    "olmoe": lambda: transformers.OlmoeConfig(**SIZE, **MOE, num_experts=4),
}
A, B = "the cat sat on the mat", "the cat sat on the dog"  # differ in the last word only
TEXTS = ["the cat sat on the mat", "a much longer text about the weather in the mountains "
         "and the rivers that run down from them", "hi"]


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory, minilm_dir):
    saved: dict[str, str] = {}

    def folder(family: str) -> str:
        if family not in saved:
            saved[family] = save_tiny_model(FAMILIES[family](), minilm_dir,
                                            tmp_path_factory.mktemp(family))
        return saved[family]
    return folder


def first_token_moves(acts) -> bool:
    """Whether the first token's last-layer row differs between texts A and B."""
    first = acts.isel(layer=-1, token=acts.position.values == 0).values
    return bool(np.abs(first[0] - first[1]).max() > 1e-4 * np.abs(first).max())


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_causal_attends_back_bidirectional_both_ways_padding_moves_nothing(
        family_dir, family, impl):
    if family == "gemma2" and impl == "sdpa":
        pytest.skip("transformers runs Gemma 2 with eager attention only")
    path = family_dir(family)
    model = transformers.AutoModel.from_pretrained(path, attn_implementation=impl).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    assert model.config._attn_implementation == impl
    for attention, moves in (("causal", False), ("bidirectional", True)):
        acts = hrsa.capture((model, tok), [A, B], attention=attention, progress=False)
        assert acts.attrs["attention"] == attention
        assert first_token_moves(acts) == moves, (family, impl, attention)
        for side in ("left", "right"):
            tok.padding_side = side
            batched = hrsa.capture((model, tok), TEXTS, attention=attention,
                                   batch_size=3, progress=False)
            single = hrsa.capture((model, tok), TEXTS, attention=attention,
                                  batch_size=1, progress=False)
            np.testing.assert_allclose(batched.values, single.values, atol=1e-5,
                                       err_msg=f"{family} {impl} {attention} {side}")
        tok.padding_side = "right"


def test_the_probe_is_not_fooled_by_low_ids_that_share_one_embedding(family_dir):
    # real vocabularies keep unused special tokens at low ids, often with one shared
    # embedding; a probe on fixed low ids then sees no change under any attention
    model = transformers.AutoModel.from_pretrained(family_dir("llama")).eval()
    tok = transformers.AutoTokenizer.from_pretrained(family_dir("llama"))
    with torch.no_grad():
        model.embed_tokens.weight[:1000] = model.embed_tokens.weight[0].clone()
    ids = torch.tensor([[11, 12, 13, 14, 15], [11, 12, 13, 14, 16]])
    with torch.no_grad():
        fixed = model(input_ids=ids, is_causal=False).last_hidden_state[:, 0]
    assert torch.equal(fixed[0], fixed[1])  # what the fixed-id probe saw
    acts = hrsa.capture((model, tok), [A, B], attention="bidirectional", progress=False)
    assert acts.attrs["attention"] == "bidirectional" and first_token_moves(acts)


def test_load_takes_each_familys_default_attention(family_dir):
    for family in ("gemma2", "qwen3"):  # Gemma 2 has no sdpa: eager, not a load error
        encoder = hrsa.load(family_dir(family), device="cpu", attention="bidirectional")
        expected = "eager" if family == "gemma2" else "sdpa"
        assert encoder.model.config._attn_implementation == expected


def test_probe_ids_are_ordinary_tokens_whose_embeddings_differ(family_dir):
    model = transformers.AutoModel.from_pretrained(family_dir("qwen3")).eval()
    tok = transformers.AutoTokenizer.from_pretrained(family_dir("qwen3"))
    ids = hrsa.attention.probe_ids(model, tok, "qwen3")
    assert ids.shape[0] == 2 and (ids[0, :-1] == ids[1, :-1]).all()
    assert ids[0, -1] != ids[1, -1] and not set(ids.flatten().tolist()) & set(
        tok.all_special_ids)
    table = model.get_input_embeddings().weight
    assert not torch.equal(table[ids[0, -1]], table[ids[1, -1]])
