import torch

from hrsa import pooling


def _batch():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    return hidden, right


def test_mean_matches_loop_and_ignores_nan_padding():
    hidden, mask = _batch()
    hidden[0, 3:] = float("nan")  # padding may hold anything
    pooled = pooling.mean(hidden, mask)
    for b in range(3):
        n = int(mask[b].sum())
        torch.testing.assert_close(pooled[b], hidden[b, :n].mean(0))
    assert torch.isfinite(pooled).all()


def test_last_and_first_under_both_padding_sides():
    hidden, right = _batch()
    left = right.flip(1)
    hidden_left = torch.stack([hidden[b].roll(5 - int(right[b].sum()), 0) for b in range(3)])
    for b in range(3):
        n = int(right[b].sum())
        torch.testing.assert_close(pooling.last(hidden, right)[b], hidden[b, n - 1])
        torch.testing.assert_close(pooling.first(hidden, right)[b], hidden[b, 0])
        torch.testing.assert_close(pooling.last(hidden_left, left)[b], hidden[b, n - 1])
        torch.testing.assert_close(pooling.first(hidden_left, left)[b], hidden[b, 0])


def test_bfloat16_states_pool_to_float32():
    hidden, mask = _batch()
    assert pooling.mean(hidden.bfloat16(), mask).dtype == torch.float32


def test_unknown_pooling_names_the_argument():
    import pytest

    with pytest.raises(ValueError, match="pooling"):
        pooling.get("max")
    assert pooling.get("cls") is pooling.first
