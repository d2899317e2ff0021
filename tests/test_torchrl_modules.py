"""imwm's networks inside TorchRL's module containers."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.modules import OneHotCategorical, ProbabilisticActor, ValueOperator

from imwm.agent import Actor, Critic
from imwm.dynamics import ImagineStepModule, ObserveModule, RSSMDynamics, state_keys
from imwm.vta import VTADynamics


def rssm():
    return RSSMDynamics(deter=16, stoch=2, classes=4, hidden=16, blocks=2, action_dim=3, embed_dim=8)


def vta():
    return VTADynamics(abs_belief_dim=16, obs_belief_dim=16, abs_stoch_dim=4, obs_stoch_dim=4, hidden=16,
                       boundary_hidden=16, action_dim=3, embed_dim=8)


def test_actor_in_probabilistic_actor_samples_one_hot_actions_with_its_log_prob():
    actor = Actor(24, 3, mlp_units=16, mlp_layers=1)
    policy = ProbabilisticActor(actor, in_keys=["logits"], distribution_class=OneHotCategorical,
                                return_log_prob=True)
    td = policy(TensorDict({"feat": torch.randn(5, 24)}, [5]))
    assert td["action"].shape == (5, 3) and torch.all(td["action"].sum(-1) == 1)
    expected = (td["logits"] * td["action"]).sum(-1)  # the logits are normalised log-probs
    torch.testing.assert_close(td["action_log_prob"], expected)
    with pytest.raises(ValueError, match="feat_dim=24"):
        actor(torch.randn(5, 7))


def test_critic_as_td_module_and_in_value_operator():
    critic = Critic(24, mlp_units=16, mlp_layers=1)
    td = critic(TensorDict({"feat": torch.randn(5, 24)}, [5]))
    assert td["state_value_logits"].shape == (5, 255) and td["state_value"].shape == (5, 1)
    value = ValueOperator(critic, in_keys=["feat"], out_keys=["state_value_logits"])
    out = value(TensorDict({"feat": torch.randn(5, 24)}, [5]))
    assert out["state_value_logits"].shape == (5, 255)


@pytest.mark.parametrize("make", [rssm, vta], ids=["rssm", "vta"])
def test_dynamics_modules_in_a_sequential_imagination_step(make):
    dyn = make()
    observe = ObserveModule(dyn)
    seq = {"embed": torch.randn(2, 4, 8), "action": torch.zeros(2, 4, 3),
           "is_first": torch.zeros(2, 4, 1, dtype=torch.bool)}
    out = observe(TensorDict(seq, [2, 4]))
    assert set(observe.out_keys) <= set(out.keys(True, True))
    # one imagined step: the actor picks an action from the state's features, the prior steps
    actor = Actor(dyn.feat_dim, 3, mlp_units=16, mlp_layers=1)
    policy = ProbabilisticActor(actor, in_keys=["logits"], distribution_class=OneHotCategorical)
    step = TensorDictSequential(policy, ImagineStepModule(dyn))
    start = TensorDict({"state": out["posterior"][:, -1], "feat": out["feat"][:, -1]}, [2])
    nxt = step(start)  # OneHotCategorical samples integer one-hots; the step takes them
    assert nxt["next", "feat"].shape == (2, dyn.feat_dim)
    assert sorted(nxt["next", "state"].keys(True, True)) == sorted(state_keys(dyn))
