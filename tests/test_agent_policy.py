import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from imwm.agent import Actor, DreamerPolicy
from imwm.dynamics import RSSMDynamics

OBS, A, E = 4, 2, 8


@pytest.fixture
def policy():
    dyn = RSSMDynamics(deter=16, stoch=2, classes=4, hidden=16, blocks=2, action_dim=A, embed_dim=E)
    actor = Actor(dyn.feat_dim, A, mlp_units=16, mlp_layers=1)
    return DreamerPolicy(nn.Linear(OBS, E), dyn, actor, num_envs=3)


def _td(obs, is_init):
    return TensorDict({"observation": obs, "is_init": is_init}, [obs.shape[0]])


def test_policy_writes_one_hot_and_carries_state(policy):
    obs = torch.randn(3, OBS)
    td = policy(_td(obs, torch.ones(3, 1, dtype=torch.bool)))
    assert td["action"].shape == (3, A) and torch.all(td["action"].sum(-1) == 1)
    first_deter = policy.state["deter"].clone()
    td2 = policy(_td(obs, torch.zeros(3, 1, dtype=torch.bool)))
    assert not torch.allclose(policy.state["deter"], first_deter)  # the state moved on
    torch.testing.assert_close(policy.prev_action, td2["action"])  # fed to the next obs_step


def test_policy_resets_where_is_init(policy):
    obs = torch.randn(3, OBS)
    init = torch.ones(3, 1, dtype=torch.bool)
    policy(_td(obs, init))
    fresh = policy.state["deter"].clone()  # one step from the zero state
    for _ in range(3):
        policy(_td(torch.randn(3, OBS), torch.zeros(3, 1, dtype=torch.bool)))
    # env 1 starts a new episode with the same first observation: its state equals a fresh start,
    # the other envs keep their history
    policy(_td(obs, torch.tensor([[False], [True], [False]])))
    torch.testing.assert_close(policy.state["deter"][1], fresh[1])
    assert not torch.allclose(policy.state["deter"][0], fresh[0])


def test_policy_greedy_under_deterministic(policy):
    obs = torch.randn(3, OBS)
    with torch.no_grad():
        policy.actor.net.net[-1].bias.copy_(torch.tensor([0.0, 0.3]))  # a mild preference for action 1
    # greedy = the actor's most likely action given the (sampled) posterior, as DreamerV3 evaluates
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(5):
            act = policy(_td(obs, torch.ones(3, 1, dtype=torch.bool)))["action"].clone()
            log_probs = policy.actor(policy.dynamics.get_feat(policy.state))
            torch.testing.assert_close(act, nn.functional.one_hot(log_probs.argmax(-1), A).float())
    with set_exploration_type(ExplorationType.RANDOM):
        sampled = torch.stack([policy(_td(obs.repeat(1, 1), torch.ones(3, 1, dtype=torch.bool)))["action"]
                               for _ in range(40)])
    assert sampled[..., 0].sum() > 0 and sampled[..., 1].sum() > 0  # both actions get sampled


def test_policy_acts_greedily_in_every_kth_episode_of_each_env():
    """greedy_every=2 under RANDOM exploration: the 2nd, 4th, ... episode of each env (counted
    from its own is_init flags) takes the actor's mode, the others sample."""
    torch.manual_seed(0)
    dyn = RSSMDynamics(deter=16, stoch=2, classes=4, hidden=16, blocks=2, action_dim=A, embed_dim=E)
    actor = Actor(dyn.feat_dim, A, mlp_units=16, mlp_layers=1)
    with torch.no_grad():
        actor.net.net[-1].weight.zero_()
        actor.net.net[-1].bias.copy_(torch.tensor([0.0, 0.4]))  # mode: action 1; sampling: ~40% action 0
    policy = DreamerPolicy(nn.Linear(OBS, E), dyn, actor, num_envs=2, greedy_every=2)
    starts = {0: [0, 50, 100, 150], 1: [0, 30, 130]}  # steps where each env starts an episode
    picked = {0: {}, 1: {}}  # env -> episode number -> actions taken
    with set_exploration_type(ExplorationType.RANDOM):
        for step in range(200):
            init = torch.tensor([[step in starts[0]], [step in starts[1]]])
            act = policy(_td(torch.randn(2, OBS), init))["action"].argmax(-1)
            for env in (0, 1):
                episode = sum(s <= step for s in starts[env])
                picked[env].setdefault(episode, []).append(int(act[env]))
    for env, episodes in picked.items():
        for episode, actions in episodes.items():
            zeros = actions.count(0)
            assert (zeros == 0) if episode % 2 == 0 else (zeros > 5), (env, episode, zeros, len(actions))
    with pytest.raises(ValueError, match="greedy_every must be an integer >= 0, got -1"):
        DreamerPolicy(nn.Linear(OBS, E), dyn, actor, num_envs=2, greedy_every=-1)


def test_policy_bad_input(policy):
    with pytest.raises(KeyError, match="is_init"):
        policy(TensorDict({"observation": torch.randn(3, OBS)}, [3]))
    with pytest.raises(ValueError, match="num_envs"):
        policy(_td(torch.randn(2, OBS), torch.zeros(2, 1, dtype=torch.bool)))
    with pytest.raises(ValueError, match="num_envs"):
        DreamerPolicy(nn.Linear(OBS, E), policy.dynamics, policy.actor, num_envs=0)


def test_policy_in_a_real_collector_on_cartpole():
    from torchrl.collectors import Collector
    from torchrl.envs import GymEnv, InitTracker, TransformedEnv

    env = TransformedEnv(GymEnv("CartPole-v1"), InitTracker())
    env.set_seed(0)
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_dim = env.action_spec.shape[-1]
    dyn = RSSMDynamics(deter=16, stoch=2, classes=4, hidden=16, blocks=2, action_dim=action_dim, embed_dim=E)
    actor = Actor(dyn.feat_dim, action_dim, mlp_units=16, mlp_layers=1)
    policy = DreamerPolicy(nn.Linear(obs_dim, E), dyn, actor, num_envs=1, action_dtype=env.action_spec.dtype)
    collector = Collector(env, policy, frames_per_batch=50, total_frames=100)
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2
    data = torch.cat(batches)
    assert data["action"].shape == (100, action_dim)
    assert torch.all(data["action"].sum(-1) == 1)
    # CartPole with a random-ish policy ends episodes within 100 steps: resets were seen
    assert data["is_init"].sum() >= 2
    assert data["next", "reward"].sum() == 100


def test_bad_greedy_every_names_its_config_key():
    from imwm.configs import compose_config
    from imwm.errors import ConfigError
    from imwm.training.build_model import build_agent

    with pytest.raises(ConfigError, match=r"agent.greedy_every: must be an integer >= 0 \(got -2\)"):
        build_agent(compose_config(["preset=debug", "agent.greedy_every=-2"]), obs_shape=(4,), action_dim=2)
