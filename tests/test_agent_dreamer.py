import io

import warnings

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from torchrl.envs.transforms import Transform

from imwm.agent import DreamerAgent
from imwm.configs import CONFIG_DIR
from imwm.training.build_model import DYNAMICS_BUILDERS, build_agent

CONFIGS = CONFIG_DIR
TINY = {"deter": 16, "hidden": 16, "stoch": 2, "classes": 4, "cnn_depth": 2, "mlp_units": 16, "mlp_layers": 1}


def tiny_cfg(**agent):
    cfg = OmegaConf.create(
        {
            "model": TINY,
            "dynamics": OmegaConf.load(CONFIGS / "dynamics" / "rssm.yaml"),
            "agent": OmegaConf.load(CONFIGS / "agent" / "default.yaml"),
        }
    )
    cfg.dynamics.blocks = 2
    cfg.agent.horizon = 3
    for k, v in agent.items():
        cfg.agent[k] = v
    return cfg


def batch(obs_shape, action_dim=3, B=2, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    if len(obs_shape) == 3:
        obs = torch.randint(0, 256, (B, T, *obs_shape), dtype=torch.uint8, generator=g)
    else:
        obs = torch.randn(B, T, *obs_shape, generator=g)
    is_first = torch.zeros(B, T, 1, dtype=torch.bool)
    is_first[:, 0] = True
    is_terminal = torch.zeros(B, T, 1, dtype=torch.bool)
    is_terminal[0, -1] = True
    action = torch.nn.functional.one_hot(torch.randint(action_dim, (B, T), generator=g), action_dim).float()
    action[:, 0] = 0
    return TensorDict(
        {
            "observation": obs,
            "action": action,
            "reward": torch.randn(B, T, 1, generator=g),
            "is_first": is_first,
            "is_terminal": is_terminal,
            "is_last": is_terminal.clone(),
        },
        [B, T],
    )


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _all_changed(before, module):
    return all(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize("obs_shape", [(4,), (3, 64, 64)])
def test_train_step_runs_and_changes_every_group(obs_shape):
    agent = build_agent(tiny_cfg(), obs_shape=obs_shape, action_dim=3)
    data = batch(obs_shape)
    groups = {"world_model": agent.world_model, "actor": agent.actor, "critic": agent.critic,
              "slow_critic": agent.slow_critic}
    before = {k: _snapshot(m) for k, m in groups.items()}
    metrics, signals = agent.train_step(data)
    for name, module in groups.items():
        changed = [not torch.equal(a, b) for a, b in zip(before[name], module.parameters())]
        assert any(changed), name
    assert _all_changed(before["actor"], agent.actor)
    # the critic's output layer is zero-initialised, so its hidden layers get gradient from step 2
    agent.train_step(data)
    assert _all_changed(before["critic"], agent.critic)
    assert signals.batch_size == (2,)
    assert set(signals.keys()) == {"model_loss", "kl", "entropy"}
    assert not any(v.requires_grad for v in signals.values())
    for key in ("world_model_loss", "loss_actor", "loss_critic", "return_scale", "grad_norm_model",
                "grad_norm_actor", "grad_norm_critic", "actor_entropy", "imagined_continue"):
        assert metrics[key].shape == () and not metrics[key].requires_grad, key
    assert all(torch.isfinite(v) for v in metrics.values())


def test_world_model_loss_decreases_on_fixed_data():
    agent = build_agent(tiny_cfg(model_lr=3e-3), obs_shape=(4,), action_dim=3)
    data = batch((4,), B=4, T=8)
    losses = [agent.train_step(data)[0]["world_model_loss"] for _ in range(30)]
    first, last = torch.stack(losses[:3]).mean(), torch.stack(losses[-3:]).mean()
    assert last < 0.8 * first, (first, last)


def test_actor_entropy_and_imagination_do_not_reach_the_world_model():
    agent = build_agent(tiny_cfg(), obs_shape=(4,), action_dim=3)
    out = agent.world_model_loss(batch((4,)))
    # start from a posterior that still carries the world model's graph
    wm_td = agent.world_model.observe(batch((4,))["observation"], batch((4,))["action"], batch((4,))["is_first"])
    traj = agent.imagine(wm_td["posterior"])
    agent.critic_loss.targets(traj)
    loss = agent.actor_loss(traj)["loss_actor"] + agent.critic_loss(traj)["loss_critic"]
    agent.world_model.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in agent.world_model.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())
    assert out["loss_image"].requires_grad  # (the world model itself is differentiable)


class _RecordingBonus(Transform):
    """A real TorchRL transform adding a constant bonus; records the hook calls it receives."""

    needs_decoder_std = True

    def __init__(self):
        super().__init__(in_keys=["reward"], out_keys=["intrinsic_reward"])
        self.updates = 0
        self.seen_std = None

    def world_model_update(self, wm_td):
        assert wm_td.batch_size == (2, 5) and not wm_td["feat"].requires_grad
        self.updates += 1
        return {"ensemble_loss": torch.tensor(0.5)}

    def forward(self, td):  # standalone use, as the imwm intrinsic transforms do
        return self._call(td)

    def _call(self, td):
        self.seen_std = td.get(("decoded", "image_std"))
        td.set("intrinsic_reward", torch.ones_like(td["reward"]))
        td.set("total_reward", td["reward"] + td["intrinsic_reward"])
        return td


def test_intrinsic_hooks_and_total_reward():
    agent = build_agent(tiny_cfg(learned_std=True), obs_shape=(3, 64, 64), action_dim=3)
    bonus = _RecordingBonus()
    agent.intrinsic = bonus
    metrics, _ = agent.train_step(batch((3, 64, 64)))
    assert bonus.updates == 1
    assert metrics["intrinsic/ensemble_loss"] == 0.5
    assert bonus.seen_std.shape == (10, 4, 1) and torch.all(bonus.seen_std > 0)
    torch.testing.assert_close(metrics["imagined_total_reward"], metrics["imagined_reward"] + 1.0)
    assert metrics["intrinsic_reward"] == 1.0
    # without a learned std the agent says what to change
    plain = build_agent(tiny_cfg(), obs_shape=(3, 64, 64), action_dim=3)
    plain.intrinsic = _RecordingBonus()
    with pytest.raises(ValueError, match="learned_std"):
        plain.train_step(batch((3, 64, 64)))


@pytest.mark.parametrize("obs_shape", [(4,), (3, 64, 64)])
def test_lexa_style_switches_on_the_decoder_std_for_any_observation(obs_shape):
    def decoder_std(enable, typ="lexa_style", **agent):
        cfg = tiny_cfg(**agent)
        cfg.intrinsic = {"enable": enable, "typ": typ}
        return build_agent(cfg, obs_shape=obs_shape, action_dim=3).world_model.decoder.learned_std

    assert decoder_std(True)
    assert not decoder_std(False)  # typ alone does not switch it on
    assert not decoder_std(True, typ="adaptive")
    assert decoder_std(False, learned_std=True)


def test_vector_agent_fills_the_decoded_std_for_the_transform():
    agent = build_agent(tiny_cfg(learned_std=True), obs_shape=(4,), action_dim=3)
    bonus = _RecordingBonus()
    agent.intrinsic = bonus
    agent.train_step(batch((4,)))
    assert bonus.seen_std.shape == (10, 4, 1) and torch.all(bonus.seen_std > agent.world_model.decoder.min_std)
    plain = build_agent(tiny_cfg(), obs_shape=(4,), action_dim=3)
    plain.intrinsic = _RecordingBonus()
    with pytest.raises(ValueError, match="agent.learned_std=true"):
        plain.train_step(batch((4,)))


def test_state_dict_round_trip_weights_only():
    agent = build_agent(tiny_cfg(), obs_shape=(4,), action_dim=3)
    agent.train_step(batch((4,)))
    keys = set(agent.state_dict())
    assert {k.split(".")[0] for k in keys} == {"world_model", "actor", "critic", "slow_critic", "retnorm",
                                                "_extra_state"}
    assert agent.num_updates == 1
    assert "retnorm.low" in keys and "retnorm.high" in keys
    buf = io.BytesIO()
    torch.save({"agent": agent.state_dict(), "optimizers": agent.optimizers_state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    other = build_agent(tiny_cfg(), obs_shape=(4,), action_dim=3)
    other.load_state_dict(saved["agent"])
    other.load_optimizers_state_dict(saved["optimizers"])
    for (k, a), b in zip(agent.state_dict().items(), other.state_dict().values()):
        assert (torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b), k
    assert other.num_updates == 1
    # both continue identically from the same state and seed
    torch.manual_seed(1)
    m1, _ = agent.train_step(batch((4,), seed=3))
    torch.manual_seed(1)
    m2, _ = other.train_step(batch((4,), seed=3))
    torch.testing.assert_close(m1["loss_actor"], m2["loss_actor"])
    torch.testing.assert_close(m1["world_model_loss"], m2["world_model_loss"])


def test_build_agent_bad_config():
    cfg = tiny_cfg()
    cfg.dynamics.name = "lstm"
    with pytest.raises(ValueError, match="rssm"):
        build_agent(cfg, obs_shape=(4,), action_dim=3)
    cfg = tiny_cfg()
    cfg.agent.horizn = 3
    with pytest.raises(ValueError, match="agent.horizn"):
        build_agent(cfg, obs_shape=(4,), action_dim=3)
    cfg = tiny_cfg()
    cfg.dynamics.gru_size = 3
    with pytest.raises(ValueError, match="dynamics.gru_size"):
        build_agent(cfg, obs_shape=(4,), action_dim=3)
    with pytest.raises(ValueError, match="horizon"):
        build_agent(tiny_cfg(horizon=0), obs_shape=(4,), action_dim=3)
    assert "rssm" in DYNAMICS_BUILDERS


def test_agent_policy_in_collector_on_cartpole():
    from torchrl.collectors import Collector
    from torchrl.envs import GymEnv, InitTracker, TransformedEnv

    env = TransformedEnv(GymEnv("CartPole-v1"), InitTracker())
    agent = build_agent(tiny_cfg(), obs_shape=(4,), action_dim=2)
    assert isinstance(agent, DreamerAgent)
    collector = Collector(env, agent.policy(1, action_dtype=env.action_spec.dtype), frames_per_batch=32, total_frames=64)
    data = torch.cat(list(collector))
    collector.shutdown()
    assert data["action"].shape == (64, 2) and torch.all(data["action"].sum(-1) == 1)


def test_compile_falls_back_to_eager_when_compilation_fails(monkeypatch):
    def broken_compile(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    agent = build_agent(tiny_cfg(compile=True), obs_shape=(4,), action_dim=3)
    assert agent.compiled and agent.compile_mode == "default"
    with pytest.warns(UserWarning, match="world_model_forward phase failed.*no compiler here.*running it eagerly"):
        metrics, _ = agent.train_step(batch((4,)))
    assert torch.isfinite(metrics["loss_actor"])
    assert not agent.phases["world_model_forward"].compiled  # eager from now on
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per phase, not one per update
        agent.train_step(batch((4,)))
    assert set(agent.state_dict()) == set(build_agent(tiny_cfg(), obs_shape=(4,), action_dim=3).state_dict())


def test_dynamics_progress_follows_the_update_count():
    agent = build_agent(tiny_cfg(), obs_shape=(4,), action_dim=3)
    seen = []
    agent.world_model.dynamics.set_progress = seen.append  # what VTA's schedules implement
    for _ in range(3):
        agent.train_step(batch((4,)))
    assert seen == [0, 1, 2] and agent.num_updates == 3


def test_contdisc_moves_the_discount_into_the_continue_head():
    """DreamerV3's contdisc: the head's target carries gamma and the critic's returns use 1.0;
    with the head's output scaled by gamma the imagined returns and weights are unchanged."""
    from imwm.agent import Critic
    from imwm.objectives import CriticLoss

    plain, moved = build_agent(tiny_cfg(), obs_shape=(4,), action_dim=3), build_agent(
        tiny_cfg(contdisc=True), obs_shape=(4,), action_dim=3)
    assert (plain.world_model_loss.continue_discount, plain.critic_loss.gamma) == (1.0, 0.997)
    assert (moved.world_model_loss.continue_discount, moved.critic_loss.gamma) == (0.997, 1.0)
    with pytest.raises(ValueError, match="continue_discount"):
        DreamerAgent(plain.world_model, plain.world_model_loss, plain.actor, plain.critic, contdisc=True)

    g = torch.Generator().manual_seed(0)
    n, h = 6, 4
    cont = torch.rand(n, h + 1, 1, generator=g)
    traj = {"feat": torch.randn(n, h + 1, 8, generator=g), "total_reward": torch.randn(n, h + 1, 1, generator=g)}
    critic = Critic(8, mlp_units=16, mlp_layers=1)
    a = CriticLoss(critic, gamma=0.997).targets(TensorDict({**traj, "continue": cont}, [n, h + 1]))
    scaled = torch.cat([cont[:, :1], 0.997 * cont[:, 1:]], 1)  # the start state's continue is the replay's
    b = CriticLoss(critic, gamma=1.0).targets(TensorDict({**traj, "continue": scaled}, [n, h + 1]))
    for key in ("return", "weight"):
        assert torch.allclose(a[key], b[key], atol=1e-5), key
