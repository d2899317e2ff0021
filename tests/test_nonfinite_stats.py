"""Running statistics ignore non-finite inputs (intrinsic rewards, return normaliser, replay priorities).

For every statistic: a batch with NaN/inf entries moves the state exactly as its finite part alone
would, a batch without a finite entry leaves the state unchanged, outputs stay finite, and bad
constructor arguments (NaN, inf where a finite value is needed, negative scales) are refused.
"""

import math
import warnings

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from imwm.intrinsic import AdaptiveIntrinsicReward, DisagreementIntrinsicReward, LexaStyleIntrinsicReward
from imwm.intrinsic.base import ema_update, masked_mean
from imwm.objectives.returns import ReturnNormalizer
from imwm.replay import CuriousSampler, ExploreExploitSampler, MixtureSampler, TrendMixture, UniformSliceSampler
from imwm.replay.sum_tree import PriorityTree, SumTree

NAN, INF = float("nan"), float("inf")


# ============================================================== helpers
def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_same_state(a, b, exact=False):
    assert set(a) == set(b)
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], msg=lambda m, k=k: f"{k}: {m}")


def _corrupt(x, where, values, generator):
    """Copy of ``x`` with ``values`` (cycled) written at the boolean positions ``where``."""
    x = x.clone()
    idx = where.nonzero(as_tuple=True)
    fill = torch.tensor(values, dtype=x.dtype)[torch.randint(len(values), (idx[0].numel(),), generator=generator)]
    x[idx] = fill
    return x


# ============================================================== intrinsic: shared helpers
def test_masked_mean_and_ema_update_hand_values():
    x = torch.tensor([1.0, NAN, 3.0, INF, -INF, 8.0])
    valid = torch.isfinite(x)
    mean, any_valid = masked_mean(x, valid)
    assert mean.item() == 4.0 and any_valid.item()
    mean, any_valid = masked_mean(x, torch.zeros_like(valid))
    assert mean.item() == 0.0 and not any_valid.item()
    buf = torch.tensor(2.0)
    ema_update(buf, torch.tensor(NAN), 0.5, torch.tensor(True), torch.tensor(False))  # not read
    assert buf.item() == 2.0
    ema_update(buf, torch.tensor(4.0), 0.5, torch.tensor(True), torch.tensor(True))
    assert buf.item() == 3.0
    ema_update(buf, torch.tensor(7.0), 0.5, torch.tensor(False))  # first update: takes the value
    assert buf.item() == 7.0


# ============================================================== AdaptiveIntrinsicReward
def _adaptive_td(reward, u):
    return TensorDict({"reward": reward, "uncertainty": u}, reward.shape[:-1])


def test_adaptive_hand_computed_first_call_with_nan():
    t = AdaptiveIntrinsicReward(beta_max=10.0, epsilon=1e-6)
    reward = torch.tensor([[1.0], [3.0], [NAN], [5.0]])
    u = torch.tensor([[2.0], [4.0], [1.0], [INF]])
    out = t(_adaptive_td(reward, u))
    # valid steps: 0 and 1 -> mean r 2, mean |r| 2, mean u 3; mix 0 -> bonus n = u / 3 = 2/3, 4/3
    assert t.num_updates.item() == 1
    assert t.reward_ema.item() == 2.0 and t.reward_abs_ema.item() == 2.0
    assert t.uncertainty_ema.item() == 3.0
    assert t.bonus_abs_ema.item() == pytest.approx(1.0, rel=1e-5)
    assert t.scale.item() == pytest.approx(2.0, rel=1e-5)  # min(10, max(2, 1) / 1)
    r_int = out["intrinsic_reward"]
    torch.testing.assert_close(r_int[:2], torch.tensor([[4.0 / 3.0], [8.0 / 3.0]]), rtol=1e-5, atol=1e-6)
    assert r_int[2].item() == 0.0 and r_int[3].item() == 0.0  # invalid steps: no bonus
    assert torch.isfinite(r_int).all()
    assert torch.isnan(out["total_reward"][2]).all()  # the extrinsic NaN is not hidden
    assert out["total_reward"][3].item() == 5.0
    assert t.metrics()["intrinsic/nonfinite"].item() == 2


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("bad", [[NAN], [INF], [-INF], [NAN, INF, -INF]])
def test_adaptive_nonfinite_entries_give_the_state_of_the_finite_part(center, bad):
    g = torch.Generator().manual_seed(0)
    clean = AdaptiveIntrinsicReward(beta_max=5.0, rho=0.3, trend_decay=0.5, center=center)
    dirty = AdaptiveIntrinsicReward(beta_max=5.0, rho=0.3, trend_decay=0.5, center=center)
    for step in range(12):
        n = 16
        reward = (0.1 * step ** 2 + torch.randn(n, 1, generator=g))
        u = torch.rand(n, 1, generator=g) * 3 + 0.1
        hit_r = torch.rand(n, 1, generator=g) < 0.2
        hit_u = torch.rand(n, 1, generator=g) < 0.2
        hit_r[0] = hit_u[0] = False  # at least one valid step per batch
        keep = ~(hit_r | hit_u)[:, 0]
        out_clean = clean(_adaptive_td(reward[keep], u[keep]))
        out_dirty = dirty(_adaptive_td(_corrupt(reward, hit_r, bad, g), _corrupt(u, hit_u, bad, g)))
        _assert_same_state(_state(dirty), _state(clean))
        r_int = out_dirty["intrinsic_reward"]
        torch.testing.assert_close(r_int[keep], out_clean["intrinsic_reward"])
        assert (r_int[~keep] == 0).all() and torch.isfinite(r_int).all()
    assert dirty.num_updates.item() == 12


def test_adaptive_all_nonfinite_batch_changes_nothing_even_first():
    t = AdaptiveIntrinsicReward()
    before = _state(t)
    out = t(_adaptive_td(torch.full((5, 1), NAN), torch.rand(5, 1)))
    _assert_same_state(_state(t), before, exact=True)
    assert (out["intrinsic_reward"] == 0).all()
    assert t.num_updates.item() == 0 and not t.initialized.item()
    # the first valid call still initialises the EMAs: same as a fresh transform
    fresh = AdaptiveIntrinsicReward()
    td = _adaptive_td(torch.tensor([[1.0], [2.0]]), torch.tensor([[0.5], [1.5]]))
    torch.testing.assert_close(t(td.clone())["intrinsic_reward"], fresh(td.clone())["intrinsic_reward"])
    _assert_same_state(_state(t), _state(fresh), exact=True)
    for _ in range(3):
        t(_adaptive_td(torch.rand(4, 1), torch.rand(4, 1)))
    before = _state(t)
    out = t(_adaptive_td(torch.rand(4, 1), torch.full((4, 1), INF)))
    _assert_same_state(_state(t), before, exact=True)
    assert (out["intrinsic_reward"] == 0).all()


def test_adaptive_gradient_stays_finite_with_a_nan_uncertainty():
    t = AdaptiveIntrinsicReward(beta_max=1.0)
    t(_adaptive_td(torch.rand(4, 1), torch.rand(4, 1) + 0.5))
    t(_adaptive_td(torch.rand(4, 1), torch.rand(4, 1) + 0.5))  # mix > 0: the exploit term is used too
    u = torch.tensor([[0.5], [NAN], [1.5], [1.0]], requires_grad=True)
    out = t(_adaptive_td(torch.rand(4, 1), u))
    out["intrinsic_reward"].sum().backward()
    assert torch.isfinite(u.grad).all() and u.grad[1].item() == 0.0
    assert u.grad[0].item() != 0.0


# ============================================================== LexaStyleIntrinsicReward
def _lexa_td(reward, std):
    return TensorDict({"reward": reward, "decoded": {"image_std": std}}, reward.shape[:-1])


def test_lexa_hand_computed_with_nan():
    t = LexaStyleIntrinsicReward(decay=0.5, visual_scale=2.0, min_spread=1.0)
    reward = torch.tensor([[0.0], [2.0], [NAN], [1.0]])
    std = torch.tensor([[1.0], [3.0], [1.0], [INF]])
    out = t(_lexa_td(reward, std))
    # valid steps 0, 1: mu = 1, sigma = mean(|0 - 1|, |2 - 1|) = 1; w = 1 - (r - 1) -> 2 (clip 1), 0
    assert t.reward_ema.item() == 1.0 and t.reward_spread.item() == 1.0
    assert out["intrinsic_reward"].flatten().tolist() == [2.0, 0.0, 0.0, 0.0]
    assert t.last_weight_mean.item() == 0.5 and t.last_visual_mean.item() == 2.0
    # second call: EMA with decay 0.5 over the finite rewards only
    t(_lexa_td(torch.tensor([[3.0], [-INF], [5.0]]), torch.ones(3, 1)))
    assert t.reward_ema.item() == 0.5 * 1.0 + 0.5 * 4.0


@pytest.mark.parametrize("center", [False, True])
def test_lexa_nonfinite_entries_give_the_state_of_the_finite_part(center):
    g = torch.Generator().manual_seed(1)
    clean = LexaStyleIntrinsicReward(decay=0.7, center=center, min_spread=0.1)
    dirty = LexaStyleIntrinsicReward(decay=0.7, center=center, min_spread=0.1)
    for _ in range(10):
        n = 12
        reward, std = torch.randn(n, 1, generator=g), torch.rand(n, 1, generator=g)
        hit_r = torch.rand(n, 1, generator=g) < 0.25
        hit_s = torch.rand(n, 1, generator=g) < 0.25
        hit_r[0] = hit_s[0] = False
        keep = ~(hit_r | hit_s)[:, 0]
        out_clean = clean(_lexa_td(reward[keep], std[keep]))
        out_dirty = dirty(_lexa_td(_corrupt(reward, hit_r, [NAN, INF, -INF], g),
                                   _corrupt(std, hit_s, [NAN, INF], g)))
        _assert_same_state(_state(dirty), _state(clean))
        r_int = out_dirty["intrinsic_reward"]
        torch.testing.assert_close(r_int[keep], out_clean["intrinsic_reward"])
        assert (r_int[~keep] == 0).all()


def test_lexa_all_nonfinite_batch_changes_nothing():
    t = LexaStyleIntrinsicReward(center=True)
    before = _state(t)
    t(_lexa_td(torch.full((3, 1), NAN), torch.ones(3, 1)))
    _assert_same_state(_state(t), before, exact=True)
    assert not t.initialized.item()
    t(_lexa_td(torch.tensor([[1.0], [3.0]]), torch.ones(2, 1)))
    assert t.reward_ema.item() == 2.0  # the first valid call initialises
    before = _state(t)
    out = t(_lexa_td(torch.ones(3, 1), torch.full((3, 1), NAN)))
    _assert_same_state(_state(t), before, exact=True)
    assert (out["intrinsic_reward"] == 0).all()


# ============================================================== DisagreementIntrinsicReward
def _disagreement(seed=0, **kw):
    torch.manual_seed(seed)
    return DisagreementIntrinsicReward(feat_dim=3, action_dim=2, target_dim=4, hidden=8, ensemble_size=3, **kw)


def test_disagreement_reward_zero_on_nonfinite_features_and_same_state():
    clean, dirty = _disagreement(center=True), _disagreement(center=True)
    g = torch.Generator().manual_seed(2)
    feat, action = torch.randn(3, 5, 3, generator=g), torch.randn(3, 5, 2, generator=g)
    traj = TensorDict({"feat": feat, "action": action, "reward": torch.zeros(3, 5, 1)}, [3, 5])
    out_clean = clean(traj[:2].clone())
    bad = traj.clone()
    bad["feat"][2, 1, 0] = NAN  # row 2: the spread after step 1 is NaN
    bad["action"][2, 3, 1] = INF
    out_dirty = dirty(bad)
    r_int = out_dirty["intrinsic_reward"]
    assert torch.isfinite(r_int).all()
    assert r_int[2, 2].item() == 0.0 and r_int[2, 4].item() == 0.0
    assert r_int[2, 1].item() != 0.0 and r_int[2, 3].item() != 0.0  # from finite feat/action
    # centred by different baselines (the dirty one also saw row 2's valid steps): compare raw
    torch.testing.assert_close(r_int[:2] + dirty.baseline, out_clean["intrinsic_reward"] + clean.baseline)
    # the statistics (centring baseline, logged means) saw the valid steps only: rows 0-1 plus the
    # valid steps of row 2 -> compare against the masked mean directly
    valid = torch.ones(3, 5, 1, dtype=torch.bool)
    valid[2, 2] = valid[2, 4] = False
    raw = 1.0 * dirty.disagreement(feat[..., :-1, :], action[..., :-1, :])
    raw = torch.cat([torch.zeros_like(raw[..., :1, :]), raw], -2)
    expect = torch.where(valid, raw, 0.0).sum() / valid.sum()
    torch.testing.assert_close(dirty.baseline, expect)
    assert dirty.nonfinite_count.item() == 2


def test_disagreement_world_model_update_masks_nonfinite_transitions():
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 6, 3, generator=g)
    action = torch.randn(2, 6, 2, generator=g)
    stoch = torch.randn(2, 6, 4, generator=g)
    clean, dirty = _disagreement(seed=5), _disagreement(seed=5)
    wm = TensorDict({"feat": feat, "action": action, "posterior": {"stoch": stoch}}, [2, 6])
    bad = wm.clone()
    bad["feat"][1] = NAN  # the whole second sequence: every transition of it is invalid
    bad["posterior", "stoch"][0, 3, 2] = INF  # and the transition 2 -> 3 of the first one
    wm_clean = wm[:1].clone()
    is_first = torch.zeros(1, 6, 1, dtype=torch.bool)
    is_first[0, 3] = True  # masks the same transition as the inf target
    wm_clean["is_first"] = is_first
    for _ in range(3):
        loss_clean = clean.world_model_update(wm_clean)["ensemble_loss"]
        loss_dirty = dirty.world_model_update(bad)["ensemble_loss"]
        torch.testing.assert_close(loss_dirty, loss_clean)
    for p_dirty, p_clean in zip(dirty.ensemble.parameters(), clean.ensemble.parameters()):
        torch.testing.assert_close(p_dirty, p_clean)
    # a batch without a valid transition: loss 0 -> last_loss kept, weights stay finite
    last = dirty.last_loss.clone()
    all_bad = wm.clone()
    all_bad["feat"][:] = NAN
    assert dirty.world_model_update(all_bad)["ensemble_loss"].item() == last.item()
    assert all(torch.isfinite(p).all() for p in dirty.ensemble.parameters())


# ============================================================== intrinsic constructor arguments
@pytest.mark.parametrize("kwargs, name", [
    ({"clip_min": NAN}, "clip_min"), ({"clip_max": NAN}, "clip_max"), ({"clip_max": INF}, "clip_max"),
    ({"clip_min": -INF}, "clip_min"), ({"epsilon": INF}, "epsilon"), ({"epsilon": NAN}, "epsilon"),
    ({"epsilon": -1e-6}, "epsilon"), ({"beta_max": INF}, "beta_max"), ({"beta_max": NAN}, "beta_max"),
    ({"beta_max": -1.0}, "beta_max"), ({"rho": NAN}, "rho"), ({"trend_decay": NAN}, "trend_decay"),
    ({"reward_floor": NAN}, "reward_floor"), ({"reward_floor": INF}, "reward_floor"),
    ({"center_decay": NAN}, "center_decay"),
])
def test_adaptive_bad_arguments_name_argument_and_value(kwargs, name):
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=rf"{name}.*{value}"):
        AdaptiveIntrinsicReward(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"min_spread": INF}, "min_spread"), ({"min_spread": NAN}, "min_spread"), ({"min_spread": -1.0}, "min_spread"),
    ({"visual_scale": NAN}, "visual_scale"), ({"visual_scale": INF}, "visual_scale"),
    ({"visual_scale": -0.5}, "visual_scale"), ({"decay": NAN}, "decay"),
])
def test_lexa_bad_arguments_name_argument_and_value(kwargs, name):
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=rf"{name}.*{value}"):
        LexaStyleIntrinsicReward(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"lr": INF}, "lr"), ({"lr": NAN}, "lr"), ({"lr": -1e-3}, "lr"), ({"scale": NAN}, "scale"),
    ({"scale": INF}, "scale"), ({"scale": -INF}, "scale"), ({"grad_clip": NAN}, "grad_clip"),
])
def test_disagreement_bad_arguments_name_argument_and_value(kwargs, name):
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=rf"{name}.*{value}"):
        DisagreementIntrinsicReward(feat_dim=2, action_dim=1, target_dim=2, **kwargs)


# ============================================================== ReturnNormalizer
def test_return_normalizer_ignores_nonfinite_returns():
    returns = torch.linspace(0.0, 100.0, 101)
    clean, dirty = ReturnNormalizer(decay=0.5), ReturnNormalizer(decay=0.5)
    g = torch.Generator().manual_seed(4)
    for step in range(4):
        finite = returns * (step + 1)
        noisy = torch.cat([finite, torch.tensor([NAN, INF, -INF, NAN])])[torch.randperm(105, generator=g)]
        clean.update(finite.unsqueeze(-1))
        dirty.update(noisy.unsqueeze(-1))
        assert torch.equal(dirty.low, clean.low) and torch.equal(dirty.high, clean.high)
    # hand-computed: percentiles 5/95 of k * [0..100] are 5k / 95k; EMA with rate 0.5 from 0
    low = 0.0
    for k in range(1, 5):
        low = 0.5 * low + 0.5 * 5.0 * k
    assert dirty.low.item() == pytest.approx(low)
    before = (dirty.low.clone(), dirty.high.clone())
    dirty.update(torch.tensor([[NAN], [INF], [-INF]]))  # no finite return: unchanged
    assert torch.equal(dirty.low, before[0]) and torch.equal(dirty.high, before[1])
    assert torch.isfinite(dirty.scale()) and dirty.scale().item() > 1.0


@pytest.mark.parametrize("kwargs, name", [
    ({"min_scale": NAN}, "min_scale"), ({"min_scale": INF}, "min_scale"), ({"min_scale": 0.0}, "min_scale"),
    ({"decay": NAN}, "decay"), ({"perc_low": NAN}, "perc_low"), ({"perc_high": NAN}, "perc_high"),
])
def test_return_normalizer_bad_arguments(kwargs, name):
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=rf"{name}.*{value}"):
        ReturnNormalizer(**kwargs)


# ============================================================== sum trees
def test_priority_tree_set_all_refuses_negative_inf_and_nan():
    tree = PriorityTree(4)
    tree.set_all(torch.tensor([1.0, INF, 0.0, 2.0]))
    assert tree.num_inf == 1 and float(tree.finite_total()) == 3.0
    for bad in ([1.0, -INF, 0.0, 2.0], [1.0, NAN, 0.0, 2.0], [1.0, -0.5, 0.0, 2.0]):
        with pytest.raises(ValueError, match=r"set_all: priority must be >= 0 or \+inf"):
            tree.set_all(torch.tensor(bad))
        # nothing written: -inf was not taken for +inf
        assert tree.num_inf == 1 and float(tree.finite_total()) == 3.0
        assert tree[torch.arange(4)].tolist() == [1.0, INF, 0.0, 2.0]
    with pytest.raises(ValueError, match="expected 4 priorities"):
        tree.set_all(torch.ones(3))
    with pytest.raises(ValueError, match=r"update: priority must be >= 0"):
        tree.update(torch.tensor([0]), torch.tensor([-INF]))
    with pytest.raises(ValueError, match=r"SumTree.update: value must be finite and >= 0"):
        SumTree(4).update(torch.tensor([0]), torch.tensor([INF]))
    with pytest.raises(ValueError, match=r"SumTree.set_leaves: values must be finite and >= 0"):
        SumTree(2).set_leaves(torch.tensor([1.0, -INF]))


# ============================================================== samplers
def _buffer(sampler, n=40, slices=8, seed=0):
    t = sampler.slice_len
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(sampler.max_capacity),
                                sampler=sampler, batch_size=slices * t,
                                generator=torch.Generator().manual_seed(seed))
    rb.extend(TensorDict({"traj_ids": torch.arange(n) // 20, "t": torch.arange(n)}, [n]))
    return rb


def test_curious_nan_loss_is_skipped_counted_and_sampling_works():
    clean, dirty = CuriousSampler(40, slice_len=2), CuriousSampler(40, slice_len=2)
    rb_clean, rb_dirty = _buffer(clean), _buffer(dirty)
    for step in range(6):
        _, info = rb_dirty.sample(return_info=True)
        _, info_clean = rb_clean.sample(return_info=True)
        starts = info["index"][0].view(-1, 2)[:, 0]
        assert torch.equal(starts, info_clean["index"][0].view(-1, 2)[:, 0])  # same draws so far
        loss = torch.linspace(0.5, 4.0, starts.numel()) * (step + 1)
        bad = torch.zeros_like(loss, dtype=torch.bool)
        bad[step % loss.numel()] = True
        dirty.update_priority(starts, torch.where(bad, torch.tensor(NAN if step % 2 else INF), loss))
        # the twin only gets the finite part (starts drawn twice: same last-wins rule on both)
        clean.update_priority(starts[~bad], loss[~bad])
        assert torch.equal(dirty.priorities(torch.arange(40)), clean.priorities(torch.arange(40)))
        assert float(dirty._tree.finite_total()) == float(clean._tree.finite_total())
    assert dirty.nonfinite_skipped == 6 and dirty.metrics()["nonfinite_skipped"] == 6.0
    p = dirty.priorities(torch.arange(40))
    assert not torch.isnan(p).any() and math.isfinite(float(dirty._tree.finite_total()))
    assert torch.isfinite(p[dirty._has_signal]).all()  # only items without feedback stay at inf
    for _ in range(20):  # sampling still works
        rb_dirty.sample()


def test_curious_nonfinite_entropy_skips_the_item():
    s = CuriousSampler(40, slice_len=2, entropy_lambda=0.5)
    _buffer(s)
    s.update_priority(torch.tensor([0, 4, 8]), torch.tensor([2.0, 2.0, INF]), entropy=torch.tensor([1.0, NAN, INF]))
    assert s._has_signal[torch.tensor([0, 4, 8])].tolist() == [True, False, False]
    assert s._signal[0].item() == 1.5 and s.nonfinite_skipped == 2


def test_huge_finite_loss_never_becomes_an_infinite_priority():
    s = CuriousSampler(40, slice_len=2, alpha=10.0)
    _buffer(s).sample()  # validity is computed at the first sample
    s.update_priority(torch.tensor([0, 2]), torch.tensor([1e39, 1e30], dtype=torch.float64))
    p = s.priorities(torch.tensor([0, 2]))
    assert torch.isfinite(p).all() and (p > 0).all()  # float32 overflow and loss ** 10 both capped
    assert s._tree.inf_pool.leaves()[[0, 2]].tolist() == [0.0, 0.0]  # not in the inf pool
    assert torch.equal(s._tree.finite.leaves()[[0, 2]], p)
    assert math.isfinite(float(s._tree.finite_total()))


def test_explore_exploit_nan_kl_skipped():
    for mode in ("explore", "exploit"):
        s = ExploreExploitSampler(40, mode=mode, slice_len=2)
        _buffer(s)
        s.update_priority(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0, 3.0]))
        before = s.priorities(torch.arange(40))
        s.update_priority(torch.tensor([0, 1, 2]), torch.tensor([NAN, -INF, 5.0]))
        after = s.priorities(torch.arange(40))
        assert after[:2].tolist() == before[:2].tolist() and after[2] != before[2]
        assert s.nonfinite_skipped == 2 and torch.isfinite(after[:3]).all()


def test_nan_policy_raise_ignore_and_bad_value():
    s = CuriousSampler(10, slice_len=1, nan_policy="raise")
    with pytest.raises(ValueError, match="non-finite"):
        s.update_priority(torch.tensor([0]), torch.tensor([NAN]))
    s = CuriousSampler(10, slice_len=1, nan_policy="ignore")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s.update_priority(torch.tensor([0]), torch.tensor([NAN]))
    assert any("non-finite" in str(x.message) for x in w) and s.nonfinite_skipped == 1
    s = CuriousSampler(10, slice_len=1)  # default "skip": silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.update_priority(torch.tensor([0]), torch.tensor([NAN]))
    assert s.nonfinite_skipped == 1
    with pytest.raises(ValueError, match="nan_policy"):
        CuriousSampler(10, slice_len=1, nan_policy="zero")


def test_skip_counter_round_trips_through_state_dict():
    s = CuriousSampler(10, slice_len=1)
    s.update_priority(torch.tensor([0, 1]), torch.tensor([NAN, INF]))
    other = CuriousSampler(10, slice_len=1)
    other.load_state_dict(s.state_dict())
    assert other.nonfinite_skipped == 2
    state = s.state_dict()
    del state["nonfinite_skipped"]  # a state saved before the counter existed
    other.load_state_dict(state)
    assert other.nonfinite_skipped == 0


# ============================================================== TrendMixture / MixtureSampler
def _explore_exploit(cap=40, t=2):
    return (ExploreExploitSampler(cap, mode="explore", slice_len=t),
            ExploreExploitSampler(cap, mode="exploit", slice_len=t))


def test_trend_reward_stream_ignores_nonfinite_entries():
    clean, dirty = TrendMixture(*_explore_exploit()), TrendMixture(*_explore_exploit())
    for t in range(30):
        r = torch.tensor([0.01 * t ** 2, 1.0 + t])
        clean.update_reward(r)
        dirty.update_reward(torch.tensor([r[0].item(), NAN, r[1].item(), INF, -INF]))
        assert (dirty.fast_ema, dirty.slow_ema, dirty.gate, dirty.num_rewards) == (
            clean.fast_ema, clean.slow_ema, clean.gate, clean.num_rewards)
    state = (dirty.fast_ema, dirty.slow_ema, dirty.gate, dirty.num_rewards)
    assert dirty.update_reward(torch.tensor([NAN, INF])) == state[2]
    assert (dirty.fast_ema, dirty.slow_ema, dirty.gate, dirty.num_rewards) == state
    assert dirty.nonfinite_skipped == 30 * 3 + 2 and dirty.metrics()["nonfinite_skipped"] == 92
    fresh = TrendMixture(*_explore_exploit())
    fresh.load_state_dict(dirty.state_dict())
    assert fresh.nonfinite_skipped == 92


def test_mixture_feedback_with_nan_keeps_priorities_finite_and_samples():
    explore, exploit = _explore_exploit()
    curious, uniform = CuriousSampler(40, slice_len=2), UniformSliceSampler(40, slice_len=2)
    mix = MixtureSampler({"curious": curious, "explore": explore, "exploit": exploit, "uniform": uniform},
                         {"curious": 0.5, "explore": 0.2, "exploit": 0.2, "uniform": 0.1}, trend={})
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(40), sampler=mix, batch_size=16,
                                generator=torch.Generator().manual_seed(0))
    rb.extend(TensorDict({"traj_ids": torch.arange(40) // 20}, [40]))
    for step in range(10):
        _, info = rb.sample(return_info=True)
        starts = info["index"][0].view(-1, 2)[:, 0]
        n = starts.numel()
        loss = torch.rand(n) + 0.1
        loss[0] = NAN
        kl = torch.rand(n)
        kl[-1] = INF
        mix.update_signals(starts, {"model_loss": loss, "kl": kl, "entropy": torch.ones(n)})
        mix.trend.update_reward(torch.tensor([float(step), NAN]))
    for child in (curious, explore, exploit):
        p = child.priorities(torch.arange(40))
        assert torch.isfinite(p[child._has_signal]).all() and not torch.isnan(p).any()
        assert math.isfinite(float(child._tree.finite_total()))
    m = mix.metrics()
    assert m["curious/nonfinite_skipped"] == 10.0
    assert m["trend/explore/nonfinite_skipped"] == 10.0 and m["trend/nonfinite_skipped"] == 10
    assert 0.05 <= m["gate"] <= 0.95
    for _ in range(10):
        rb.sample()
