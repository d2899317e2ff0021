import pytest
import torch
from tensordict import TensorDict

from imwm.agent import Actor, Critic
from imwm.nn import symlog, symlog_bins
from imwm.objectives import ActorLoss, CriticLoss, imagined_weight, lambda_return

F, A, N, H = 6, 3, 5, 4


def _traj(ret_minus_value=1.0, action_index=0):
    feat = torch.randn(N, H + 1, F)
    action = torch.zeros(N, H + 1, A)
    action[..., action_index] = 1.0
    value = torch.randn(N, H + 1, 1)
    return TensorDict(
        {
            "feat": feat,
            "action": action,
            "value": value,
            "return": value + ret_minus_value,
            "weight": torch.ones(N, H + 1, 1),
        },
        [N, H + 1],
    )


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_actor_loss_gradient_sign(sign):
    actor = Actor(F, A, mlp_units=16, mlp_layers=1)
    loss = ActorLoss(actor, entropy_coef=0.0)
    traj = _traj(ret_minus_value=0.5 * sign, action_index=1)
    before = actor(traj["feat"])[..., 1].mean()
    opt = torch.optim.SGD(actor.parameters(), lr=0.1)
    loss(traj)["loss_actor"].backward()
    opt.step()
    after = actor(traj["feat"])[..., 1].mean()
    # positive advantage raises log pi of the taken action, negative lowers it
    assert (after - before) * sign > 1e-4


def test_actor_loss_hand_computed():
    actor = Actor(F, A, mlp_units=16, mlp_layers=1)
    loss = ActorLoss(actor, entropy_coef=0.1, retnorm_decay=0.0)
    traj = _traj(ret_minus_value=2.0, action_index=2)
    traj["weight"] = torch.rand(N, H + 1, 1)
    # returns spread wider than 1 so that the percentile scale is active
    traj["return"] = traj["value"] + torch.linspace(-10, 10, N * (H + 1)).reshape(N, H + 1, 1)
    out = loss(traj)
    logp = actor(traj["feat"][:, :-1])
    ret = traj["return"][:, :-1]
    scale = torch.quantile(ret.flatten(), 0.95) - torch.quantile(ret.flatten(), 0.05)
    adv = (ret - traj["value"][:, :-1]) / scale
    ent = -(logp.exp() * logp).sum(-1, keepdim=True)
    expect = (traj["weight"][:, :-1] * (-adv * logp[..., 2:3] - 0.1 * ent)).mean()
    torch.testing.assert_close(out["loss_actor"], expect)
    torch.testing.assert_close(out["return_scale"], scale)
    assert out["return_scale"].shape == () and not out["return_scale"].requires_grad


def test_actor_loss_uses_recorded_log_probs_and_detaches_features():
    actor = Actor(F, A, mlp_units=16, mlp_layers=1)
    loss = ActorLoss(actor)
    traj = _traj()
    world = torch.nn.Linear(F, F)  # stands for the world model that produced the features
    traj["feat"] = world(traj["feat"])
    loss(traj)["loss_actor"].backward()
    assert world.weight.grad is None  # neither the REINFORCE nor the entropy term reach it
    assert all(p.grad is not None for p in actor.parameters())
    # recorded log-probs (computed on detached features during imagination) give the same loss
    traj2 = _traj()
    loss_a = ActorLoss(actor, retnorm_decay=0.0)(traj2)["loss_actor"]
    traj2["action_log_probs"] = actor(traj2["feat"].detach())
    loss_b = ActorLoss(actor, retnorm_decay=0.0)(traj2)["loss_actor"]
    torch.testing.assert_close(loss_a, loss_b)


def test_actor_loss_missing_key_is_named():
    loss = ActorLoss(Actor(F, A, mlp_units=8, mlp_layers=1))
    traj = _traj().exclude("return")
    with pytest.raises(KeyError, match="return"):
        loss(traj)
    with pytest.raises(ValueError, match="entropy_coef"):
        ActorLoss(Actor(F, A, mlp_units=8, mlp_layers=1), entropy_coef=-1.0)


def _critic_traj():
    return TensorDict(
        {
            "feat": torch.randn(N, H + 1, F),
            "total_reward": torch.randn(N, H + 1, 1),
            "continue": torch.rand(N, H + 1, 1),
        },
        [N, H + 1],
    )


def test_critic_targets_keys_and_values():
    critic = Critic(F, mlp_units=16, mlp_layers=1)
    torch.nn.init.normal_(critic.net.net[-1].weight)  # non-zero values so the returns are non-trivial
    loss = CriticLoss(critic, gamma=0.9, lmbda=0.8)
    traj = loss.targets(_critic_traj())
    value = critic.mean(critic(traj["feat"]))
    torch.testing.assert_close(traj["value"], value.detach())
    assert traj["value_logits"].requires_grad and not traj["value"].requires_grad
    expect = lambda_return(traj["total_reward"], value, traj["continue"], gamma=0.9, lmbda=0.8)
    torch.testing.assert_close(traj["return"][:, :-1], expect.detach())
    torch.testing.assert_close(traj["return"][:, -1], value[:, -1].detach())
    torch.testing.assert_close(traj["weight"], imagined_weight(traj["continue"], gamma=0.9))


def test_critic_loss_is_weighted_two_hot_cross_entropy():
    critic = Critic(F, mlp_units=16, mlp_layers=1)
    loss = CriticLoss(critic, slow_critic_scale=0.0)
    traj = loss.targets(_critic_traj())
    traj["return"] = torch.full((N, H + 1, 1), 3.0)
    out = loss(traj)
    # hand-made two-hot of symlog(3) on the 255 bins in [-20, 20]
    bins = symlog_bins(255)
    s = symlog(torch.tensor(3.0))
    k = int((bins <= s).sum()) - 1
    upper = (s - bins[k]) / (bins[k + 1] - bins[k])
    target = torch.zeros(255)
    target[k], target[k + 1] = 1 - upper, upper
    logp = torch.log_softmax(traj["value_logits"][:, :-1], -1)
    expect = (traj["weight"][:, :-1].squeeze(-1) * -(logp * target).sum(-1)).mean()
    torch.testing.assert_close(out["loss_critic"], expect)
    # zero-initialised output: uniform logits, loss = log(255) per weighted step
    torch.testing.assert_close(expect, traj["weight"][:, :-1].mean() * torch.log(torch.tensor(255.0)))


def test_critic_learns_a_constant_return():
    critic = Critic(F, mlp_units=32, mlp_layers=1)
    loss = CriticLoss(critic, slow_critic_scale=0.0)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    traj = _critic_traj()
    for _ in range(200):
        t = loss.targets(traj.clone())
        t["return"] = torch.full((N, H + 1, 1), 7.0)
        t["weight"] = torch.ones(N, H + 1, 1)
        opt.zero_grad()
        loss(t)["loss_critic"].backward()
        opt.step()
    pred = critic.mean(critic(traj["feat"]))
    assert torch.allclose(pred, torch.full_like(pred, 7.0), atol=0.3), pred.mean()


def test_slow_critic_ema_and_regulariser():
    critic = Critic(F, mlp_units=8, mlp_layers=1)
    loss = CriticLoss(critic, slow_critic_fraction=0.02)
    slow_before = [p.clone() for p in loss.slow_critic.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(slow_before, critic.parameters()))  # starts as a copy
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(1.0)
    loss.update_slow_critic()
    for old, new, fast in zip(slow_before, loss.slow_critic.parameters(), critic.parameters()):
        torch.testing.assert_close(new, 0.98 * old + 0.02 * fast)
        assert not new.requires_grad
    # the regulariser adds a second, non-negative cross entropy towards the slow critic's mean
    traj = loss.targets(_critic_traj())
    with_reg = loss(traj)
    loss.slow_critic_scale = 0.0
    without = loss(traj)
    assert with_reg["loss_critic"] > without["loss_critic"]
    assert with_reg["critic_slow_reg"] > 0
    # gradient only to the online critic
    with_reg["loss_critic"].backward()
    assert all(p.grad is None for p in loss.slow_critic.parameters())
    assert all(p.grad is not None for p in critic.parameters())


def test_critic_loss_bad_input():
    critic = Critic(F, mlp_units=8, mlp_layers=1)
    with pytest.raises(ValueError, match="slow_critic_fraction"):
        CriticLoss(critic, slow_critic_fraction=0.0)
    with pytest.raises(ValueError, match="gamma"):
        CriticLoss(critic, gamma=2.0)
    with pytest.raises(KeyError, match="total_reward"):
        CriticLoss(critic).targets(_critic_traj().exclude("total_reward"))


def test_actor_and_critic_learn_a_two_armed_bandit_in_imagination():
    """Action 0 pays 1 on the next step, action 1 pays 0: the policy must come to prefer action 0."""
    torch.manual_seed(0)
    actor = Actor(F, 2, mlp_units=16, mlp_layers=1)
    critic = Critic(F, mlp_units=16, mlp_layers=1)
    actor_loss, critic_loss = ActorLoss(actor), CriticLoss(critic, gamma=0.9, lmbda=0.95)
    opt = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=3e-3)
    feat = torch.randn(64, H + 1, F)
    for _ in range(150):
        log_probs = actor(feat)
        action = Actor.sample(log_probs)
        reward = torch.zeros(64, H + 1, 1)
        reward[:, 1:] = action[:, :-1, :1]  # paid on arrival at the next state
        traj = TensorDict({"feat": feat, "action": action, "action_log_probs": log_probs,
                           "total_reward": reward, "continue": torch.ones(64, H + 1, 1)}, [64, H + 1])
        critic_loss.targets(traj)
        loss = actor_loss(traj)["loss_actor"] + critic_loss(traj)["loss_critic"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        critic_loss.update_slow_critic()
    p0 = actor(feat).exp()[..., 0].mean()
    assert p0 > 0.9, p0
    # the critic's values approach the discounted return of always paying 1 (bounded by 1/(1-0.9))
    assert critic.mean(critic(feat)).mean() > 1.0


def test_actor_samples_follow_the_policy_probabilities():
    """20,000 one-hot samples of a fixed 4-action policy: counts within a chi-square bound (3 dof,
    p = 0.001: 16.27), every sample one-hot."""
    torch.manual_seed(1)
    probs = torch.tensor([0.6, 0.25, 0.1, 0.05])
    log_probs = probs.log().expand(20_000, 4)
    actions = Actor.sample(log_probs)
    assert actions.shape == (20_000, 4) and torch.equal(actions.sum(-1), torch.ones(20_000))
    counts = actions.sum(0)
    expected = probs * 20_000
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 16.27, (counts, chi2)
