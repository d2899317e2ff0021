"""The intrinsic transforms inside a real imagination step (imwm.agent.imagine) with RSSM and VTA.

The imagined trajectory comes from the real dynamics' ``img_step`` and the real actor; the
transform's output then feeds the real ActorLoss / CriticLoss, exactly the agent's steps 2-5.
"""

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from imwm.agent import Actor, Critic, imagine
from imwm.dynamics import RSSMDynamics
from imwm.intrinsic import AdaptiveIntrinsicReward, DisagreementIntrinsicReward, LexaStyleIntrinsicReward
from imwm.nn import MLP
from imwm.objectives import ActorLoss, CriticLoss
from imwm.vta import VTADynamics

A, E, B, T, H = 3, 8, 2, 4, 5


def _dynamics(name):
    if name == "rssm":
        return RSSMDynamics(deter=16, stoch=2, classes=4, hidden=8, blocks=2, action_dim=A, embed_dim=E)
    return VTADynamics(action_dim=A, embed_dim=E, abs_belief_dim=8, obs_belief_dim=8, abs_stoch_dim=4,
                       obs_stoch_dim=4, hidden=8, boundary_hidden=4)


def _transform(kind, dyn):
    if kind == "adaptive":
        return AdaptiveIntrinsicReward(beta_max=0.5)
    if kind == "lexa_style":
        return LexaStyleIntrinsicReward()
    target = "stoch" if "stoch" in dyn.initial(1).keys() else "obs_stoch"
    dim = dyn.initial(1).get(target).shape[-1]
    return DisagreementIntrinsicReward(feat_dim=dyn.feat_dim, action_dim=A, target_dim=dim, hidden=16,
                                       ensemble_size=3, target_key=("posterior", target))


@pytest.mark.parametrize("dyn_name", ["rssm", "vta"])
@pytest.mark.parametrize("kind", ["adaptive", "lexa_style", "disagreement"])
def test_transform_in_imagination_feeds_actor_and_critic(dyn_name, kind):
    dyn = _dynamics(dyn_name)
    actor = Actor(dyn.feat_dim, A, mlp_units=16, mlp_layers=1)
    critic = Critic(dyn.feat_dim, mlp_units=16, mlp_layers=1, num_bins=15)
    reward_head = Critic(dyn.feat_dim, mlp_units=16, mlp_layers=1, num_bins=15)  # a two-hot head with .mean
    with torch.no_grad():
        reward_head.net.net[-1].weight.normal_(0, 0.1)  # non-zero predicted rewards
    continue_head = MLP(dyn.feat_dim, 1, units=16, layers=1)
    std_head = nn.Linear(dyn.feat_dim, 12)  # stands in for the image decoder's std output

    action = nn.functional.one_hot(torch.randint(0, A, (B, T)), A).float()
    is_first = torch.zeros(B, T, 1, dtype=torch.bool)
    is_first[:, 0] = True
    posterior, _ = dyn.observe(torch.randn(B, T, E), action, is_first)
    feat = dyn.get_feat(posterior)
    transform = _transform(kind, dyn)

    if hasattr(transform, "world_model_update"):  # agent step 2
        metrics = transform.world_model_update(TensorDict(
            {"feat": feat.detach(), "posterior": posterior.detach(), "action": action}, [B, T]))
        assert torch.isfinite(metrics["ensemble_loss"])
    traj = imagine(dyn, actor, reward_head, continue_head, posterior, H)  # agent step 3
    assert traj.batch_size == (B * T, H + 1)
    if transform.needs_decoder_std:  # agent step 4
        traj.set(("decoded", "image_std"),
                 nn.functional.softplus(std_head(traj["feat"])).mean(-1, keepdim=True).detach())
    traj = transform(traj)
    intrinsic = traj["intrinsic_reward"]
    assert intrinsic.shape == (B * T, H + 1, 1) and torch.isfinite(intrinsic).all()
    assert intrinsic[:, 1:].abs().sum() > 0
    assert torch.allclose(traj["total_reward"], traj["reward"] + intrinsic)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in transform.metrics().values())

    # agent step 5: the losses read total_reward
    critic_loss = CriticLoss(critic, gamma=0.99, lmbda=0.95)
    actor_loss = ActorLoss(actor)
    critic_loss.targets(traj)
    loss = actor_loss(traj)["loss_actor"] + critic_loss(traj)["loss_critic"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in actor.parameters())


def test_intrinsic_reward_changes_the_critic_targets():
    dyn = _dynamics("rssm")
    actor = Actor(dyn.feat_dim, A, mlp_units=16, mlp_layers=1)
    heads = Critic(dyn.feat_dim, mlp_units=16, mlp_layers=1, num_bins=15), MLP(dyn.feat_dim, 1, units=16, layers=1)
    posterior, _ = dyn.observe(torch.randn(B, T, E), torch.zeros(B, T, A), torch.zeros(B, T, 1, dtype=torch.bool))
    traj = imagine(dyn, actor, *heads, posterior, H)
    critic_loss = CriticLoss(Critic(dyn.feat_dim, mlp_units=16, mlp_layers=1, num_bins=15), gamma=0.99, lmbda=0.95)
    plain = critic_loss.targets(traj.clone())["return"]
    with_bonus = critic_loss.targets(AdaptiveIntrinsicReward(beta_max=1.0)(traj.clone()))["return"]
    # an always-positive uncertainty bonus raises every lambda-return (the last one is the value)
    assert torch.all(with_bonus[:, :-1] > plain[:, :-1])
    assert torch.equal(with_bonus[:, -1], plain[:, -1])
