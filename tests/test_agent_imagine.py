import pytest
import torch
from torch import nn

from imwm.agent import Actor, Critic
from imwm.agent.imagine import imagine
from imwm.dynamics import RSSMDynamics

A, E = 3, 8


class _ContinueHead(nn.Linear):
    """Stand-in continue head (a logit per feature row) for the unit test of the loop."""


@pytest.fixture
def parts():
    dyn = RSSMDynamics(deter=16, stoch=2, classes=4, hidden=16, blocks=2, action_dim=A, embed_dim=E)
    actor = Actor(dyn.feat_dim, A, mlp_units=16, mlp_layers=1)
    reward_head = Critic(dyn.feat_dim, mlp_units=16, mlp_layers=1)  # any two-hot head with .mean
    nn.init.normal_(reward_head.net.net[-1].weight)
    cont_head = _ContinueHead(dyn.feat_dim, 1)
    B, T = 2, 3
    post, _ = dyn.observe(torch.randn(B, T, E), torch.zeros(B, T, A), torch.zeros(B, T, 1, dtype=torch.bool))
    return dyn, actor, reward_head, cont_head, post


def test_imagine_shapes_and_keys(parts):
    dyn, actor, reward_head, cont_head, post = parts
    H = 4
    is_terminal = torch.tensor([[[0], [1], [0]], [[0], [0], [1]]], dtype=torch.bool)
    traj = imagine(dyn, actor, reward_head, cont_head, post, H, start_is_terminal=is_terminal)
    N = 6
    assert traj.batch_size == (N, H + 1)
    assert traj["feat"].shape == (N, H + 1, dyn.feat_dim)
    assert traj["action"].shape == (N, H + 1, A)
    assert torch.all(traj["action"].sum(-1) == 1)
    for key in ("reward", "continue", "uncertainty", "total_reward"):
        assert traj[key].shape == (N, H + 1, 1), key
    assert set(traj["state"].keys()) == {"deter", "stoch", "logits"}
    # index 0: the start posteriors themselves, continue = 1 - is_terminal
    torch.testing.assert_close(traj["state", "deter"][:, 0], post["deter"].reshape(N, -1))
    torch.testing.assert_close(traj["continue"][:, 0], 1.0 - is_terminal.reshape(N, 1).float())
    assert torch.all((traj["continue"][:, 1:] > 0) & (traj["continue"][:, 1:] < 1))
    # heads scored once on all features, and each step follows the dynamics' prior
    torch.testing.assert_close(traj["reward"], reward_head.mean(reward_head(traj["feat"])))
    torch.testing.assert_close(traj["feat"], dyn.get_feat(traj["state"]))
    torch.testing.assert_close(traj["total_reward"], traj["reward"])
    torch.testing.assert_close(traj["uncertainty"], dyn.uncertainty(traj["state"]))


def test_imagine_gradient_only_to_actor(parts):
    dyn, actor, reward_head, cont_head, post = parts
    post = post.apply(lambda x: x.detach().requires_grad_(x.is_floating_point()))
    traj = imagine(dyn, actor, reward_head, cont_head, post, 3)
    assert not traj["feat"].requires_grad and not traj["reward"].requires_grad
    assert traj["action_log_probs"].requires_grad
    (traj["action_log_probs"] * traj["action"]).sum().backward()
    assert all(p.grad is not None for p in actor.parameters())
    assert all(p.grad is None for p in dyn.parameters())
    assert all(p.grad is None for p in reward_head.parameters())
    assert post["deter"].grad is None


def test_imagine_follows_the_actor(parts):
    dyn, actor, reward_head, cont_head, post = parts
    with torch.no_grad():  # an actor that always picks action 2
        actor.net.net[-1].bias.copy_(torch.tensor([-50.0, -50.0, 50.0]))
    traj = imagine(dyn, actor, reward_head, cont_head, post, 5)
    # unimix keeps 1% spread over 3 actions: nearly all picks are action 2
    assert traj["action"][..., 2].mean() > 0.95
    with pytest.raises(ValueError, match="horizon"):
        imagine(dyn, actor, reward_head, cont_head, post, 0)
    with pytest.raises(ValueError, match="start_is_terminal"):
        imagine(dyn, actor, reward_head, cont_head, post, 2, start_is_terminal=torch.zeros(6, 1))
