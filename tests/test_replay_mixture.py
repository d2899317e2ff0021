"""TrendMixture gate, MixtureSampler fractions and routing, split_counts."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from imwm.replay import (
    CuriousSampler, ExploreExploitSampler, MixtureSampler, TrendMixture, UniformSliceSampler,
    split_counts,
)

CAP, T = 200, 4


def explore_exploit(cap=CAP, t=T):
    return (ExploreExploitSampler(cap, mode="explore", slice_len=t),
            ExploreExploitSampler(cap, mode="exploit", slice_len=t))


def filled_buffer(sampler, n=150, batch_slices=16, seed=0):
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(CAP), sampler=sampler,
                                batch_size=batch_slices * T,
                                generator=torch.Generator().manual_seed(seed))
    ids = torch.arange(n) // 25  # 6 episodes of 25
    rb.extend(TensorDict({"traj_ids": ids, "t": torch.arange(n)}, [n]))
    return rb


# ---------------------------------------------------------------- trend gate
def test_gate_rises_on_accelerating_reward_then_falls_when_flat():
    tm = TrendMixture(*explore_exploit())
    assert tm.gate == 0.5
    gates = [tm.update_reward(torch.full((8,), 1.0 + 0.002 * t ** 2)) for t in range(200)]
    assert max(gates) > 0.9 and all(0.05 <= g <= 0.95 for g in gates)
    peak = tm.gate
    level = 1.0 + 0.002 * 199 ** 2
    flat = [tm.update_reward(torch.tensor([level])) for _ in range(600)]
    assert flat[-1] < peak - 0.3, "gate must fall once the reward stops rising"
    assert abs(flat[-1] - 0.5) < 0.05   # no trend: neutral
    assert all(0.05 <= g <= 0.95 for g in flat)


def test_gate_on_flat_reward_from_start_stays_neutral_and_falling_reward_explores():
    tm = TrendMixture(*explore_exploit())
    for _ in range(100):
        tm.update_reward(3.0)
    assert tm.gate == pytest.approx(0.5)
    for t in range(100):
        tm.update_reward(3.0 - 0.02 * t)
    assert 0.05 <= tm.gate < 0.1  # falling reward: towards explore, within the clamp


def test_gate_formula_hand_computed():
    tm = TrendMixture(*explore_exploit(), fast=0.5, slow=0.25, k=2.0, eps=1e-6,
                      gate_min=0.0, gate_max=1.0)
    tm.update_reward(torch.tensor([1.0, 3.0]))  # mean 2: both EMAs start at 2
    g = tm.update_reward(4.0)                    # fast 3, slow 2.5 -> trend 0.2 / 2.5
    trend = (3.0 - 2.5) / (2.5 + 1e-6)
    assert g == pytest.approx(1 / (1 + torch.exp(torch.tensor(-2.0 * trend)).item()))
    # a non-finite reward adds no point to the stream (see test_nonfinite_stats)
    assert tm.update_reward(float("nan")) == g and tm.nonfinite_skipped == 1


def test_trend_mixture_batch_share_follows_gate():
    tm = TrendMixture(*explore_exploit())
    rb = filled_buffer(tm)
    for t in range(60):
        tm.update_reward(0.01 * t ** 2)
    assert tm.gate == 0.95
    n_exploit = 0
    for _ in range(50):
        rb.sample()
        n_exploit += tm.last_counts["exploit"]
    assert n_exploit / (50 * 16) == pytest.approx(0.95, abs=0.03)


@pytest.mark.parametrize("kwargs, msg", [
    ({"fast": 0.0}, "fast"), ({"slow": 0.5}, "slow"), ({"k": -1.0}, "k must"),
    ({"gate_min": 0.6, "gate_max": 0.4}, "gate_min <= gate_max"),
    ({"gate_init": 0.99}, "gate_init"), ({"eps": 0.0}, "eps"),
])
def test_trend_bad_input(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        TrendMixture(*explore_exploit(), **kwargs)


# ---------------------------------------------------------------- mixture
def test_split_counts_unbiased_and_exact_total():
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([split_counts(16, [0.3, 0.3, 0.4], g) for _ in range(4000)]).double()
    assert (draws.sum(1) == 16).all()
    assert torch.allclose(draws.mean(0), torch.tensor([4.8, 4.8, 6.4], dtype=torch.float64),
                          atol=0.06)
    # every count is floor or ceil of its expectation
    assert ((draws[:, 0] == 4) | (draws[:, 0] == 5)).all()


def test_fracs_honoured_within_sampling_noise():
    mix = MixtureSampler({"curious": CuriousSampler(CAP, slice_len=T),
                          "uniform": UniformSliceSampler(CAP, slice_len=T)},
                         {"curious": 0.25, "uniform": 0.75})
    rb = filled_buffer(mix, batch_slices=10)
    n_curious = 0
    for _ in range(50):  # real batches: the slices of each child are where the counts say
        _, info = rb.sample(return_info=True)
        k = mix.last_counts["curious"]
        assert k in (2, 3) and mix.last_counts["uniform"] == 10 - k
        n_curious += k
        assert info["index"][0].numel() == 10 * T
    # many draws of the split alone (same generator): E = 2.5 per batch, Bernoulli(0.5) rounding,
    # sd of the mean over 4000 batches ~ 0.008
    for _ in range(3950):
        n_curious += mix._counts(10)["curious"]
    assert n_curious / 4000 == pytest.approx(2.5, abs=0.04)


def test_zero_fraction_drops_child():
    curious = CuriousSampler(CAP, slice_len=T)
    uniform = UniformSliceSampler(CAP, slice_len=T)
    mix = MixtureSampler({"curious": curious, "uniform": uniform},
                         {"curious": 1.0, "uniform": 0.0})
    assert list(mix.children) == ["curious"]
    rb = filled_buffer(mix)
    rb.sample()
    assert uniform._num_valid == 0 and not uniform._filled.any()


@pytest.mark.parametrize("fracs, msg", [
    ({"curious": 0.6, "uniform": 0.6}, "sum to 1"),
    ({"curious": 0.5, "greedy": 0.5}, "unknown sampler 'greedy'"),
    ({"curious": 1.2, "uniform": -0.2}, ">= 0"),
])
def test_bad_fracs(fracs, msg):
    samplers = {"curious": CuriousSampler(CAP, slice_len=T),
                "uniform": UniformSliceSampler(CAP, slice_len=T)}
    with pytest.raises(ValueError, match=msg):
        MixtureSampler(samplers, fracs)


def test_mixture_needs_explore_and_exploit_for_trend_and_same_slice_len():
    with pytest.raises(ValueError, match="needs an 'explore'"):
        MixtureSampler({"uniform": UniformSliceSampler(CAP, slice_len=T)}, {"uniform": 1.0},
                       trend={"k": 5.0})
    with pytest.raises(ValueError, match="share one slice_len"):
        MixtureSampler({"curious": CuriousSampler(CAP, slice_len=T),
                        "uniform": UniformSliceSampler(CAP, slice_len=T + 1)},
                       {"curious": 0.5, "uniform": 0.5})


def test_signals_routed_to_the_children_that_read_them_and_visits_counted_everywhere():
    curious = CuriousSampler(CAP, slice_len=T, c=0.0)
    explore, exploit = explore_exploit()
    uniform = UniformSliceSampler(CAP, slice_len=T)
    mix = MixtureSampler({"curious": curious, "explore": explore, "exploit": exploit,
                          "uniform": uniform},
                         {"curious": 0.25, "explore": 0.25, "exploit": 0.25, "uniform": 0.25},
                         trend={"gate_init": 0.5})
    rb = filled_buffer(mix, batch_slices=8)
    _, info = rb.sample(return_info=True)
    starts = info["index"][0].view(8, T)[:, 0]
    # every sampled start was counted once per occurrence in every counting child
    expect = torch.bincount(starts, minlength=CAP).int()
    for child in (curious, explore, exploit, uniform):
        assert torch.equal(child._visits, expect)
    loss, kl = torch.rand(8) + 0.1, torch.rand(8) + 0.1
    mix.update_signals(starts, TensorDict({"model_loss": loss, "kl": kl,
                                           "entropy": torch.zeros(8)}, [8]))
    uniq = torch.unique(starts)
    assert torch.isfinite(curious.priorities(uniq)).all()
    # (duplicate starts: one of their values wins; check the unique ones)
    first = {int(s): i for i, s in reversed(list(enumerate(starts.tolist())))}
    last = {int(s): i for i, s in enumerate(starts.tolist())}
    for s in uniq.tolist():
        got = float(explore.priorities(torch.tensor([s])))
        assert any(got == pytest.approx(float(kl[i])) for i in (first[s], last[s]))
        got_x = float(exploit.priorities(torch.tensor([s])))
        assert any(got_x == pytest.approx(1 / (float(kl[i]) + 1e-6)) for i in (first[s], last[s]))
    with pytest.raises(ValueError, match="ambiguous"):
        mix.update_priority(starts, loss)
    with pytest.raises(KeyError, match="'kl'"):
        mix.update_signals(starts, {"model_loss": loss})


def test_single_signal_mixture_accepts_update_priority():
    a, b = CuriousSampler(CAP, slice_len=T), UniformSliceSampler(CAP, slice_len=T)
    mix = MixtureSampler({"curious": a, "uniform": b}, {"curious": 0.5, "uniform": 0.5})
    rb = filled_buffer(mix, batch_slices=4)
    _, info = rb.sample(return_info=True)
    rb.update_priority(info["index"], torch.ones(4))  # TorchRL's own call path
    starts = info["index"][0].view(4, T)[:, 0]
    assert torch.isfinite(a.priorities(starts)).all()
