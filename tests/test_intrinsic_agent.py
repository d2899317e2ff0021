"""The intrinsic rewards inside the real DreamerAgent.train_step, with RSSM and VTA dynamics."""

import pytest
import torch
from tensordict import TensorDict

from imwm.agent import Actor, Critic, DreamerAgent
from imwm.dynamics import RSSMDynamics
from imwm.envs.sparse_chain import SparseChainEnv
from imwm.intrinsic import AdaptiveIntrinsicReward, DisagreementIntrinsicReward, LexaStyleIntrinsicReward
from imwm.objectives import WorldModelLoss
from imwm.training.build_intrinsic import build_intrinsic
from imwm.vta import VTADynamics
from imwm.world_model import WorldModel

A, B, T = 2, 3, 6


def make_agent(dynamics: str, learned_std: bool, obs_shape: tuple = (3, 16, 16)) -> DreamerAgent:
    def factory(embed_dim):
        if dynamics == "rssm":
            return RSSMDynamics(deter=16, stoch=4, classes=4, hidden=16, blocks=2, action_dim=A, embed_dim=embed_dim)
        return VTADynamics(action_dim=A, embed_dim=embed_dim, abs_belief_dim=16, obs_belief_dim=16, abs_stoch_dim=4,
                           obs_stoch_dim=4, hidden=16, boundary_hidden=8)

    wm = WorldModel.build(obs_shape, A, factory, cnn_depth=4, mlp_units=16, mlp_layers=1, learned_std=learned_std)
    actor = Actor(wm.feat_dim, A, mlp_units=16, mlp_layers=1)
    critic = Critic(wm.feat_dim, mlp_units=16, mlp_layers=1)
    return DreamerAgent(wm, WorldModelLoss(wm), actor, critic, horizon=4)


def chain_batch(seed: int = 0, pixels: bool = True) -> TensorDict:
    """A replay batch [B, T] of random walks on the chain (pixels or one-hot), in the record layout."""
    g = torch.Generator().manual_seed(seed)
    env = SparseChainEnv(pixels=pixels)
    moves = torch.randint(0, A, (B, T), generator=g)
    cells = torch.cumsum(torch.where(moves == 1, 1, -1), 1).clamp(0, 19)
    frames = []
    for cell in cells.flatten().tolist():
        env._cell = cell
        frames.append(torch.from_numpy(env._obs()))
    action = torch.nn.functional.one_hot(moves, A).float()
    action[:, 0] = 0
    is_first = torch.zeros(B, T, 1, dtype=torch.bool)
    is_first[:, 0] = True
    flags = torch.zeros(B, T, 1, dtype=torch.bool)
    obs = torch.stack(frames)
    return TensorDict({"observation": obs.reshape(B, T, *obs.shape[1:]), "action": action,
                       "reward": torch.zeros(B, T, 1), "is_first": is_first, "is_terminal": flags,
                       "is_last": flags.clone()}, [B, T])


@pytest.mark.parametrize("dynamics", ["rssm", "vta"])
@pytest.mark.parametrize("typ", ["adaptive", "lexa_style", "disagreement"])
def test_train_step_with_intrinsic(dynamics, typ):
    torch.manual_seed(0)
    agent = make_agent(dynamics, learned_std=typ == "lexa_style")
    blocks = {"disagreement": {"hidden": 16, "layers": 1, "ensemble_size": 3}}
    agent.intrinsic = build_intrinsic({"enable": True, "typ": typ, typ: blocks.get(typ, {})}, agent)
    cls = {"adaptive": AdaptiveIntrinsicReward, "lexa_style": LexaStyleIntrinsicReward,
           "disagreement": DisagreementIntrinsicReward}[typ]
    assert isinstance(agent.intrinsic, cls)
    if typ == "disagreement":
        expected = "stoch" if dynamics == "rssm" else "obs_stoch"
        assert agent.intrinsic.target_key == ("posterior", expected)
        before = [p.detach().clone() for p in agent.intrinsic.ensemble.parameters()]
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]

    metrics, signals = agent.train_step(chain_batch())
    assert torch.isfinite(metrics["intrinsic_reward"]) and metrics["intrinsic_reward"] != 0
    assert metrics["imagined_total_reward"] != metrics["imagined_reward"]
    assert any(not torch.equal(a, p) for a, p in zip(actor_before, agent.actor.parameters()))
    assert all(torch.isfinite(v) for v in agent.intrinsic.metrics().values())
    assert set(agent.intrinsic.metrics()) <= set(metrics)  # scale / mix / trend weight are logged
    assert agent.intrinsic.initialized  # statistics moved: the agent is in training mode
    if typ == "disagreement":
        assert torch.isfinite(metrics["intrinsic/ensemble_loss"])
        assert all(not torch.equal(a, p) for a, p in zip(before, agent.intrinsic.ensemble.parameters()))
    if typ == "lexa_style":
        assert agent.intrinsic.metrics()["intrinsic/visual"] > 0
    # the transform's state travels with the agent's state_dict (checkpoints)
    assert any(k.startswith("intrinsic.") for k in agent.state_dict())


def test_lexa_needs_the_learned_std_decoder():
    agent = make_agent("rssm", learned_std=False)
    with pytest.raises(ValueError, match="learned_std"):
        build_intrinsic({"enable": True, "typ": "lexa_style"}, agent)


@pytest.mark.parametrize("dynamics", ["rssm", "vta"])
def test_lexa_style_on_vector_observations(dynamics):
    """LEXA-style reads the vector decoder's std inside a real imagination step (one-hot chain)."""
    torch.manual_seed(0)
    length = SparseChainEnv().length
    agent = make_agent(dynamics, learned_std=True, obs_shape=(length,))
    assert agent.world_model.decoder.learned_std
    agent.intrinsic = build_intrinsic({"enable": True, "typ": "lexa_style"}, agent)
    seen = {}

    def spy(module, args):
        (td,) = args
        seen["std"] = td.get(("decoded", "image_std")).clone()
        seen["feat"] = td.get("feat").detach().clone()

    agent.intrinsic.register_forward_pre_hook(spy)
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]
    decoder_before = {k: v.clone() for k, v in agent.world_model.decoder.state_dict().items()}
    metrics, _ = agent.train_step(chain_batch(pixels=False))

    std, feat = seen["std"], seen["feat"]
    horizon = agent.horizon
    assert std.shape == (B * T, horizon + 1, 1)
    # the key carries the vector decoder's mean std over dims, from the decoder as it was at
    # imagination time (after the world-model step of this update)
    decoder = agent.world_model.decoder
    with torch.no_grad():
        expected = decoder(feat)["vector_std"].mean(-1, keepdim=True)
    torch.testing.assert_close(std, expected)
    assert (std > decoder.min_std).all() and std.std() > 0  # a real per-step prediction
    assert any(not torch.equal(v, decoder.state_dict()[k]) for k, v in decoder_before.items())
    # chunked decoding gives the same numbers as one pass
    torch.testing.assert_close(agent.decoded_image_std(feat, chunk=7), expected)
    assert torch.isfinite(metrics["intrinsic_reward"]) and metrics["intrinsic_reward"] > 0
    assert agent.intrinsic.metrics()["intrinsic/visual"] > 0
    assert metrics["imagined_total_reward"] != metrics["imagined_reward"]
    assert any(not torch.equal(a, p) for a, p in zip(actor_before, agent.actor.parameters()))
    assert torch.isfinite(metrics["world_model_loss"])


def test_lexa_on_vectors_without_learned_std_says_what_to_set():
    agent = make_agent("rssm", learned_std=False, obs_shape=(SparseChainEnv().length,))
    with pytest.raises(ValueError, match="agent.learned_std=true"):
        build_intrinsic({"enable": True, "typ": "lexa_style"}, agent)
    # a transform asking for the std directly gets the decoder's own message
    with pytest.raises(ValueError, match="agent.learned_std=true"):
        agent.decoded_image_std(torch.zeros(2, agent.world_model.feat_dim))


def test_ensemble_gets_episode_starts_and_statistics_move_once_per_update():
    torch.manual_seed(0)
    agent = make_agent("rssm", learned_std=False)
    agent.intrinsic = build_intrinsic(
        {"enable": True, "typ": "disagreement", "disagreement": {"hidden": 16, "layers": 1, "ensemble_size": 3}}, agent)
    seen = {}
    original = agent.intrinsic.world_model_update

    def spy(wm_td):
        seen["is_first"] = wm_td.get("is_first", None)
        return original(wm_td)

    agent.intrinsic.world_model_update = spy
    batch = chain_batch()
    agent.train_step(batch)
    assert seen["is_first"] is not None and torch.equal(seen["is_first"], batch["is_first"])  # masks cross-episode pairs

    agent = make_agent("rssm", learned_std=False)
    agent.intrinsic = build_intrinsic({"enable": True, "typ": "adaptive", "adaptive": {}}, agent)
    agent.train_step(chain_batch())
    assert agent.intrinsic.num_updates.item() == 1
