"""Big-model loading through accelerate's device maps: a tiny Qwen3 split across the CPU
and disk offload captures exactly what the single-device model captures."""

import numpy as np
import pytest

import hrsa

pytest.importorskip("accelerate")

SPLIT = {"embed_tokens": "cpu", "rotary_emb": "cpu", "layers.0": "cpu", "layers.1": "disk",
         "layers.2": "cpu", "norm": "cpu"}


@pytest.mark.parametrize("pooling", [None, "mean"])
def test_device_map_with_disk_offload_equals_single_device(tiny_qwen3_dir, texts, tmp_path,
                                                           pooling):
    plain = hrsa.capture(tiny_qwen3_dir, texts, pooling=pooling, device="cpu",
                         progress=False)
    split = hrsa.capture(tiny_qwen3_dir, texts, pooling=pooling, device_map=SPLIT,
                         offload_folder=str(tmp_path), progress=False)
    np.testing.assert_allclose(split.values, plain.values, atol=1e-6)
    assert split.attrs["attention"] == plain.attrs["attention"]


def test_device_map_auto_on_cpu(tiny_qwen3_dir, texts):
    plain = hrsa.capture(tiny_qwen3_dir, texts, pooling="mean", device="cpu", progress=False)
    auto = hrsa.capture(tiny_qwen3_dir, texts, pooling="mean", device_map="auto",
                        progress=False)
    np.testing.assert_allclose(auto.values, plain.values, atol=1e-6)


def test_a_device_map_that_omits_layers_is_a_clear_error(tiny_qwen3_dir):
    partial = {k: v for k, v in SPLIT.items() if k not in ("layers.1", "norm")}
    with pytest.raises(ValueError, match=r"places no device for .*layers\.1"):
        hrsa.capture(tiny_qwen3_dir, ["a text"], device_map=partial, progress=False)
    with pytest.raises(ValueError, match="device_map"):
        hrsa.capture(tiny_qwen3_dir, ["a text"], device_map=SPLIT, device="cpu",
                     progress=False)
    with pytest.raises(ValueError, match="need device_map"):
        hrsa.capture(tiny_qwen3_dir, ["a text"], offload_folder="/tmp/x", progress=False)
