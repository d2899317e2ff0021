"""LexaStyleIntrinsicReward: trend weight on hand values, clipping, stop-gradient, statistics."""

import pytest
import torch
from tensordict import TensorDict

from imwm.intrinsic import LexaStyleIntrinsicReward


def _td(reward, std):
    reward = torch.as_tensor(reward, dtype=torch.float32)
    std = torch.as_tensor(std, dtype=torch.float32).expand_as(reward).clone()
    return TensorDict({"reward": reward, "decoded": {"image_std": std}}, reward.shape[:-1])


def test_trend_weight_on_hand_values():
    t = LexaStyleIntrinsicReward(decay=0.5, visual_scale=2.0)
    assert t.needs_decoder_std
    r = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    out = t(_td(r, 0.5))
    # first call: mu = 1.5, spread = mean |r - 1.5| = 1.0, z = r - 1.5, w = clip(1 - z, 0, 1)
    assert t.reward_ema.item() == pytest.approx(1.5)
    assert t.reward_spread.item() == pytest.approx(1.0)
    w = torch.tensor([[1.0], [1.0], [0.5], [0.0]])
    assert torch.allclose(out["intrinsic_reward"], 2.0 * w * 0.5, atol=1e-6)
    assert torch.allclose(out["total_reward"], r + out["intrinsic_reward"])
    assert t.metrics()["intrinsic/trend_weight"].item() == pytest.approx(0.625)
    # second call: EMA with decay 0.5: mu = 0.5 * 1.5 + 0.5 * 3.5 = 2.5; spread = 0.5 * 1 + 0.5 * 1 = 1
    r2 = torch.tensor([[3.0], [4.0], [3.0], [4.0]])
    out = t(_td(r2, 1.0))
    assert t.reward_ema.item() == pytest.approx(2.5)
    assert t.reward_spread.item() == pytest.approx(1.0)
    assert torch.allclose(out["intrinsic_reward"], 2.0 * (1 - (r2 - 2.5)).clamp(0, 1), atol=1e-6)


def test_unclipped_weights():
    t = LexaStyleIntrinsicReward(decay=0.5, clip_weights=False)
    out = t(_td(torch.tensor([[0.0], [1.0], [2.0], [3.0]]), 1.0))
    assert torch.allclose(out["intrinsic_reward"], torch.tensor([[2.5], [1.5], [0.5], [-0.5]]), atol=1e-6)


@pytest.mark.parametrize("stop_grad", [True, False])
def test_stop_grad_weights(stop_grad):
    t = LexaStyleIntrinsicReward(decay=0.5, clip_weights=False, stop_grad_weights=stop_grad)
    reward = torch.tensor([[0.0], [1.0], [2.0], [3.0]], requires_grad=True)
    std = torch.full((4, 1), 0.5, requires_grad=True)
    out = t(TensorDict({"reward": reward, "decoded": {"image_std": std}}, [4]))
    out["intrinsic_reward"].sum().backward()
    assert std.grad.abs().sum() > 0  # the curiosity signal always keeps its gradient
    if stop_grad:
        assert reward.grad is None or reward.grad.abs().sum() == 0
    else:
        # d/dr [visual_scale * (1 - (r - mu)/sigma) * s] = -s / sigma = -0.5 per step
        assert torch.allclose(reward.grad, torch.full((4, 1), -0.5))


def test_rewards_above_trend_reduce_curiosity_over_a_stream():
    t = LexaStyleIntrinsicReward()
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        t(_td(2.0 * torch.randn(8, 1, generator=g), 1.0))
    t.eval()
    low = t(_td(torch.full((8, 1), -5.0), 1.0))["intrinsic_reward"]
    high = t(_td(torch.full((8, 1), 5.0), 1.0))["intrinsic_reward"]
    assert torch.all(low == 1.0) and torch.all(high == 0.0)


def test_min_spread_keeps_reward_head_noise_from_switching_curiosity_off():
    # Before any reward is found the predicted reward is ~0 with noise ~1e-3: curiosity must stay on.
    g = torch.Generator().manual_seed(0)
    floored, unfloored = LexaStyleIntrinsicReward(), LexaStyleIntrinsicReward(min_spread=1e-8)
    for _ in range(20):
        r = 1e-3 * torch.randn(64, 1, generator=g)
        w_floored = floored(_td(r, 1.0))["intrinsic_reward"]
        w_unfloored = unfloored(_td(r, 1.0))["intrinsic_reward"]
    assert w_floored.min().item() > 0.99
    assert (w_unfloored == 0).float().mean().item() > 0.1  # the scale-free z-score: noise decides
    with pytest.raises(ValueError, match="min_spread"):
        LexaStyleIntrinsicReward(min_spread=0.0)


def test_state_dict_round_trip_and_metrics():
    t = LexaStyleIntrinsicReward()
    for i in range(5):
        t(_td(torch.full((2, 3, 1), float(i)), 0.3))
    fresh = LexaStyleIntrinsicReward()
    fresh.load_state_dict(t.state_dict())
    assert fresh.reward_ema.item() == t.reward_ema.item()
    assert all(v.ndim == 0 for v in t.metrics().values())
    assert {"intrinsic/mean", "intrinsic/scale", "intrinsic/trend_weight"} <= set(t.metrics())


def test_bad_inputs():
    with pytest.raises(ValueError, match="decay"):
        LexaStyleIntrinsicReward(decay=1.2)
    with pytest.raises(ValueError, match="visual_scale"):
        LexaStyleIntrinsicReward(visual_scale=-1.0)
    t = LexaStyleIntrinsicReward()
    with pytest.raises(KeyError, match="image_std"):
        t(TensorDict({"reward": torch.ones(2, 1)}, [2]))
    with pytest.raises(ValueError, match="image_std"):
        t(TensorDict({"reward": torch.ones(2, 1), "decoded": {"image_std": torch.ones(2, 3)}}, [2]))
