"""AdaptiveIntrinsicReward: formulas on hand-computed values, the explore/exploit switch, state."""

import pytest
import torch
from tensordict import TensorDict

from imwm.intrinsic import AdaptiveIntrinsicReward


def _td(reward, uncertainty):
    reward = torch.as_tensor(reward, dtype=torch.float32)
    uncertainty = torch.as_tensor(uncertainty, dtype=torch.float32).expand_as(reward)
    return TensorDict({"reward": reward, "uncertainty": uncertainty.clone()}, reward.shape[:-1])


def _stream(t, values, u=1.0):
    for m in values:
        t(_td(torch.full((4, 5, 1), float(m)), u))
    return t


def test_first_call_scale_is_capped_relative_to_extrinsic_magnitude():
    # Explore mode (mix starts at 0): n = u / mean(u) = 1, so the bonus is 1 on the first call.
    t = AdaptiveIntrinsicReward(beta_max=10.0, rho=0.1, epsilon=1e-6)
    out = t(_td(torch.zeros(2, 3, 1), 100.0))
    assert t.scale.item() == pytest.approx(1.0, rel=1e-5)  # reward 0 -> magnitude floored at 1: min(10, 1/1)
    assert torch.allclose(out["intrinsic_reward"], torch.full((2, 3, 1), 1.0), atol=1e-5)
    assert torch.allclose(out["total_reward"], out["reward"] + out["intrinsic_reward"])
    t = AdaptiveIntrinsicReward(beta_max=10.0)
    t(_td(torch.full((2, 3, 1), 5.0), 0.5))
    assert t.scale.item() == pytest.approx(5.0, rel=1e-5)  # min(10, |r| 5 / bonus 1)
    # beta_max caps the coefficient.
    t = AdaptiveIntrinsicReward(beta_max=0.1)
    out = t(_td(torch.full((2, 3, 1), 5.0), 0.5))
    assert t.scale.item() == pytest.approx(0.1)
    assert torch.allclose(out["intrinsic_reward"], torch.full((2, 3, 1), 0.1), atol=1e-6)


def test_scale_adapts_at_rate_rho():
    t = AdaptiveIntrinsicReward(beta_max=1.0, rho=0.5, trend_decay=0.0, reward_floor=0.0)
    t(_td(torch.full((1, 2, 1), 0.5), 4.0))  # bonus 1 -> beta = min(1, 0.5 / 1) = 0.5
    assert t.scale.item() == pytest.approx(0.5, rel=1e-5)
    t(_td(torch.full((1, 2, 1), 0.25), 8.0))  # target min(1, 0.25 / 1) = 0.25 -> 0.5 + 0.5 * (0.25 - 0.5)
    assert t.scale.item() == pytest.approx(0.375, rel=1e-5)


def test_clipping():
    out = AdaptiveIntrinsicReward(beta_max=1.0, clip_max=0.3)(_td(torch.full((2, 1), 3.0), 2.0))
    assert torch.allclose(out["intrinsic_reward"], torch.full((2, 1), 0.3))  # 1.0 * 1 -> 0.3
    out = AdaptiveIntrinsicReward(beta_max=0.1, clip_min=0.5)(_td(torch.full((2, 1), 3.0), 2.0))
    assert torch.allclose(out["intrinsic_reward"], torch.full((2, 1), 0.5))  # 0.1 * 1 -> 0.5


def test_uncertainty_is_unit_free_and_the_switch_is_at_one_half():
    # The same states measured in units 100x larger get the same reward (n = u / running mean of u).
    g = torch.Generator().manual_seed(0)
    u = 0.1 + torch.rand(4, 5, 1, generator=g)
    small, large = AdaptiveIntrinsicReward(), AdaptiveIntrinsicReward()
    r_small = small(_td(torch.zeros(4, 5, 1), u))["intrinsic_reward"]
    r_large = large(_td(torch.zeros(4, 5, 1), 100.0 * u))["intrinsic_reward"]
    assert torch.allclose(r_small, r_large, rtol=1e-4)
    # Below w = 1/2 the more uncertain state pays more, above it the less uncertain one, for any units.
    for w, more_uncertain_pays in ((0.4, True), (0.6, False)):
        for units in (1.0, 50.0):
            t = AdaptiveIntrinsicReward().eval()
            t.mix.fill_(w)
            t.uncertainty_ema.fill_(units)
            r = t(_td(torch.zeros(2, 1), torch.tensor([[0.5], [2.0]]) * units))["intrinsic_reward"]
            assert (r[1] > r[0]).item() == more_uncertain_pays, (w, units)


def test_second_difference_on_hand_values():
    # trend_decay 0: the EMA is the stream itself; m = 0, 1, 3 -> v = 0, 1, 2 -> a = 1.
    t = AdaptiveIntrinsicReward(rho=0.1, trend_decay=0.0)
    _stream(t, [0.0, 1.0])
    assert t.mix.item() == 0.0  # no second difference yet
    _stream(t, [3.0])
    assert t.velocity.item() == pytest.approx(2.0)
    assert t.accel_ema.item() == pytest.approx(1.0)
    assert t.mix.item() == pytest.approx(0.1 * 1.0 / (1.0 + 1e-6))  # w = 0 + rho * (1 - 0)


def test_accelerating_stream_exploits_flat_stream_explores():
    n = 300
    accel = _stream(AdaptiveIntrinsicReward(), [1e-4 * i**2 for i in range(n)])
    flat = _stream(AdaptiveIntrinsicReward(), [0.7] * n)
    saturating = _stream(AdaptiveIntrinsicReward(), [1.0 - 0.97**i for i in range(n)])  # stagnates
    ramp = _stream(AdaptiveIntrinsicReward(), [0.01 * i for i in range(40)])  # the lagging EMA accelerates
    g = torch.Generator().manual_seed(0)
    noisy = _stream(AdaptiveIntrinsicReward(), (0.5 + 0.1 * torch.randn(n, generator=g)).tolist())
    assert accel.mix.item() > 0.95
    assert flat.mix.item() == 0.0
    assert saturating.mix.item() < 0.01
    assert ramp.mix.item() > 0.9
    assert noisy.mix.item() < 0.1
    # The bonus follows: with u = 0.5, exploit (1/u = 2) pays more than explore (u = 0.5).
    u = torch.full((4, 5, 1), 0.5)
    for t in (accel, flat):
        t.eval()
    r_acc = accel(_td(torch.zeros(4, 5, 1), u))["intrinsic_reward"].mean() / accel.scale
    r_flat = flat(_td(torch.zeros(4, 5, 1), u))["intrinsic_reward"].mean() / flat.scale
    assert r_flat.item() == pytest.approx(0.5, rel=1e-5)
    assert r_acc.item() > 1.9


def test_bonus_formula_with_fixed_statistics_and_eval_freezes_them():
    t = AdaptiveIntrinsicReward(epsilon=1e-6).eval()
    t.mix.fill_(0.25)
    t.scale.fill_(0.1)
    t.uncertainty_ema.fill_(2.0)
    u = torch.tensor([[0.5], [2.0], [0.0]])
    out = t(_td(torch.ones(3, 1), u))
    n = u / (2.0 + 1e-6)
    expected = (0.1 * (0.75 * n + 0.25 / (n + 1e-6))).clamp(-10, 10)
    assert torch.allclose(out["intrinsic_reward"], expected)
    before = {k: v.clone() for k, v in t.state_dict().items()}
    t(_td(torch.full((3, 1), 9.0), u))
    for k, v in t.state_dict().items():
        if k != "last_intrinsic_mean":
            assert torch.equal(v, before[k]), k


def test_statistics_are_buffers_and_round_trip_through_state_dict():
    t = _stream(AdaptiveIntrinsicReward(), [0.01 * i**2 for i in range(10)])
    sd = t.state_dict()
    for key in ("scale", "mix", "reward_ema", "velocity", "accel_ema", "accel_abs_ema", "uncertainty_ema",
                "num_updates"):
        assert key in sd
    fresh = AdaptiveIntrinsicReward()
    fresh.load_state_dict(sd)
    td = _td(torch.full((4, 5, 1), 3.0), torch.rand(4, 5, 1))
    assert torch.equal(fresh(td.clone())["intrinsic_reward"], t(td.clone())["intrinsic_reward"])


def test_gradient_flows_through_uncertainty_not_statistics():
    t = AdaptiveIntrinsicReward(beta_max=1.0)
    u = torch.rand(3, 4, 1, requires_grad=True)
    out = t(TensorDict({"reward": torch.ones(3, 4, 1), "uncertainty": u}, [3, 4]))
    out["intrinsic_reward"].sum().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0
    assert not any(b.requires_grad for b in t.buffers())


def test_uncertainty_fn_is_used_when_key_missing():
    state = TensorDict({"std": torch.full((2, 3, 4), 0.5)}, [2, 3])
    t = AdaptiveIntrinsicReward(beta_max=1.0, uncertainty_fn=lambda s: s["std"].mean(-1, keepdim=True)).eval()
    t.scale.fill_(1.0)
    t.uncertainty_ema.fill_(1.0)
    out = t(TensorDict({"reward": torch.ones(2, 3, 1), "state": state}, [2, 3]))
    assert torch.allclose(out["intrinsic_reward"], torch.full((2, 3, 1), 0.5), atol=1e-5)


def test_metrics_are_zero_dim_tensors():
    t = _stream(AdaptiveIntrinsicReward(), [0.0, 1.0, 3.0])
    m = t.metrics()
    assert {"intrinsic/mean", "intrinsic/scale", "intrinsic/mix"} <= set(m)
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in m.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta_max": -0.1}, "beta_max"),
        ({"clip_min": 1.0, "clip_max": 0.0}, "clip_min"),
        ({"rho": 1.5}, "rho"),
        ({"rho": -0.1}, "rho"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"trend_decay": 1.0}, "trend_decay"),
        ({"reward_floor": -1.0}, "reward_floor"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveIntrinsicReward(**kwargs)


def test_bad_inputs_name_the_key():
    t = AdaptiveIntrinsicReward()
    with pytest.raises(KeyError, match="uncertainty"):
        t(TensorDict({"reward": torch.ones(2, 1)}, [2]))
    with pytest.raises(KeyError, match="reward"):
        t(TensorDict({"uncertainty": torch.ones(2, 1)}, [2]))
    with pytest.raises(ValueError, match="singleton"):
        t(TensorDict({"reward": torch.ones(2, 3), "uncertainty": torch.ones(2, 3)}, [2]))
    with pytest.raises(ValueError, match="uncertainty shape"):
        t(TensorDict({"reward": torch.ones(2, 1), "uncertainty": torch.ones(2, 4)}, [2]))
