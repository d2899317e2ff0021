"""DisagreementIntrinsicReward (Plan2Explore) and the vectorised EnsembleMLP."""

import pytest
import torch
from tensordict import TensorDict
from torch.nn import functional as F

from imwm.intrinsic import DisagreementIntrinsicReward, EnsembleMLP


def test_ensemble_matches_per_member_loop():
    ens = EnsembleMLP(5, 3, ensemble_size=4, hidden=7, layers=2)
    x = torch.randn(2, 6, 5)
    out = ens(x)
    assert out.shape == (4, 2, 6, 3)
    for k in range(4):
        h = x
        for i, (w, b) in enumerate(zip(ens.weights, ens.biases)):
            h = F.linear(h, w[k].T, b[k, 0])
            if i < 2:
                h = F.silu(F.layer_norm(h, h.shape[-1:]))
        assert torch.allclose(out[k], h, atol=1e-5)
    assert not torch.allclose(out[0], out[1])  # members differ by init


def test_reward_is_ensemble_std_and_aligned_with_transitions():
    t = DisagreementIntrinsicReward(feat_dim=4, action_dim=2, target_dim=3, ensemble_size=3, hidden=8)
    traj = TensorDict(
        {"feat": torch.randn(5, 4, 4), "action": torch.randn(5, 4, 2), "reward": torch.zeros(5, 4, 1)}, [5, 4]
    )
    out = t(traj)
    r = out["intrinsic_reward"]
    assert r.shape == (5, 4, 1)
    assert torch.all(r[:, 0] == 0)
    pred = t.ensemble(torch.cat([traj["feat"][:, :-1], traj["action"][:, :-1]], -1))
    expected = pred.std(0, correction=0).mean(-1, keepdim=True)
    assert torch.allclose(r[:, 1:], expected.detach(), atol=1e-6)
    assert torch.allclose(out["total_reward"], r)
    assert not r.requires_grad


def test_identical_members_give_zero_disagreement():
    t = DisagreementIntrinsicReward(feat_dim=4, action_dim=2, target_dim=3, ensemble_size=3, hidden=8, scale=2.0)
    with torch.no_grad():
        for p in t.ensemble.parameters():
            p.copy_(p[:1].expand_as(p))
    traj = TensorDict({"feat": torch.randn(2, 3, 4), "action": torch.randn(2, 3, 2), "reward": torch.ones(2, 3, 1)}, [2, 3])
    out = t(traj)
    assert torch.allclose(out["intrinsic_reward"], torch.zeros(2, 3, 1), atol=1e-6)


def test_negative_scale_penalises_the_same_spread():
    torch.manual_seed(0)
    bonus = DisagreementIntrinsicReward(feat_dim=4, action_dim=2, target_dim=3, ensemble_size=3, hidden=8, scale=2.0)
    penalty = DisagreementIntrinsicReward(feat_dim=4, action_dim=2, target_dim=3, ensemble_size=3, hidden=8, scale=-0.5)
    penalty.ensemble.load_state_dict(bonus.ensemble.state_dict())
    traj = TensorDict({"feat": torch.randn(2, 5, 4), "action": torch.randn(2, 5, 2), "reward": torch.ones(2, 5, 1)}, [2, 5])
    r_bonus, r_penalty = bonus(traj.clone())["intrinsic_reward"], penalty(traj.clone())["intrinsic_reward"]
    assert (r_bonus[:, 1:] > 0).all()
    assert torch.allclose(r_penalty, -0.25 * r_bonus, atol=1e-7)
    # the logged disagreement is the spread itself, whatever the sign of the coefficient
    assert torch.allclose(penalty.metrics()["intrinsic/disagreement"], bonus.metrics()["intrinsic/disagreement"])
    assert penalty.metrics()["intrinsic/disagreement"] > 0


def test_training_uses_action_that_led_to_the_target():
    # target[t] = 2 * action[t] (replay layout: action[t] led to o_t). Learnable only with the right pairing.
    torch.manual_seed(0)
    t = DisagreementIntrinsicReward(feat_dim=3, action_dim=2, target_dim=2, ensemble_size=3, hidden=32, lr=3e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(150):
        action = torch.randn(8, 6, 2, generator=g)
        wm = TensorDict(
            {"feat": torch.randn(8, 6, 3, generator=g), "action": action, "posterior": {"stoch": 2.0 * action},
             "is_first": torch.zeros(8, 6, 1, dtype=torch.bool)},
            [8, 6],
        )
        losses.append(t.world_model_update(wm)["ensemble_loss"].item())
    assert losses[-1] < 0.05 * losses[0]


def test_disagreement_shrinks_on_seen_inputs_and_stays_high_on_novel_ones():
    torch.manual_seed(0)
    t = DisagreementIntrinsicReward(feat_dim=4, action_dim=2, target_dim=3, ensemble_size=5, hidden=32, lr=3e-3)
    g = torch.Generator().manual_seed(2)
    proj = torch.randn(4, 3, generator=g)
    probe_seen = torch.randn(256, 4, generator=g)
    probe_novel = 6.0 + torch.randn(256, 4, generator=g)
    no_action = torch.zeros(256, 2)
    before = t.disagreement(probe_seen, no_action).mean()
    for _ in range(150):
        feat = torch.randn(8, 6, 4, generator=g)
        # the next latent is a function of the current features: stoch[t + 1] = tanh(feat[t] @ proj)
        stoch = torch.tanh(feat @ proj).roll(1, 1)
        t.world_model_update(TensorDict({"feat": feat, "action": torch.zeros(8, 6, 2), "posterior": {"stoch": stoch}}, [8, 6]))
    seen = t.disagreement(probe_seen, no_action).mean()
    novel = t.disagreement(probe_novel, no_action).mean()
    assert seen < 0.25 * before
    assert novel > 1.8 * seen


def test_is_first_steps_are_masked():
    t = DisagreementIntrinsicReward(feat_dim=2, action_dim=1, target_dim=2, ensemble_size=2, hidden=4, lr=1e-12)
    base = {"feat": torch.randn(2, 4, 2), "action": torch.randn(2, 4, 1)}
    is_first = torch.zeros(2, 4, 1, dtype=torch.bool)
    is_first[0, 2] = True
    stoch_a = torch.randn(2, 4, 2)
    stoch_b = stoch_a.clone()
    stoch_b[0, 2] = 1e3  # garbage at the masked step only
    la = t.world_model_update(TensorDict({**base, "posterior": {"stoch": stoch_a}, "is_first": is_first}, [2, 4]))
    lb = t.world_model_update(TensorDict({**base, "posterior": {"stoch": stoch_b}, "is_first": is_first}, [2, 4]))
    assert la["ensemble_loss"].item() == pytest.approx(lb["ensemble_loss"].item(), rel=1e-4)


def test_ensemble_state_and_optimizer_state_are_saveable():
    t = DisagreementIntrinsicReward(feat_dim=2, action_dim=1, target_dim=2, ensemble_size=2, hidden=4)
    wm = TensorDict({"feat": torch.randn(2, 3, 2), "action": torch.randn(2, 3, 1), "posterior": {"stoch": torch.randn(2, 3, 2)}}, [2, 3])
    t.world_model_update(wm)
    sd, osd = t.state_dict(), t.optimizer_state_dict()
    fresh = DisagreementIntrinsicReward(feat_dim=2, action_dim=1, target_dim=2, ensemble_size=2, hidden=4)
    fresh.load_state_dict(sd)
    fresh.load_optimizer_state_dict(osd)
    x = torch.randn(3, 2)
    a = torch.randn(3, 1)
    assert torch.equal(fresh.disagreement(x, a), t.disagreement(x, a))
    assert set(t.metrics()) >= {"intrinsic/mean", "intrinsic/scale", "intrinsic/ensemble_loss"}


def test_bad_inputs():
    with pytest.raises(ValueError, match="ensemble_size"):
        DisagreementIntrinsicReward(feat_dim=2, action_dim=1, target_dim=2, ensemble_size=1)
    with pytest.raises(ValueError, match="scale"):
        DisagreementIntrinsicReward(feat_dim=2, action_dim=1, target_dim=2, scale=float("nan"))
    with pytest.raises(ValueError, match="lr"):
        DisagreementIntrinsicReward(feat_dim=2, action_dim=1, target_dim=2, lr=0.0)
    t = DisagreementIntrinsicReward(feat_dim=2, action_dim=1, target_dim=2)
    with pytest.raises(KeyError, match="stoch"):
        t.world_model_update(TensorDict({"feat": torch.randn(2, 3, 2), "action": torch.randn(2, 3, 1)}, [2, 3]))
    with pytest.raises(ValueError, match="target_dim"):
        t.world_model_update(
            TensorDict({"feat": torch.randn(2, 3, 2), "action": torch.randn(2, 3, 1),
                        "posterior": {"stoch": torch.randn(2, 3, 5)}}, [2, 3])
        )
    with pytest.raises(ValueError, match="in_dim|expects"):
        t.disagreement(torch.randn(3, 5), torch.randn(3, 1))
