"""The 2024 DreamerV3 recipe (``agent=v3_2024``): LaProp + AGC + warm-up, replay value loss, actor init."""
from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict

from imwm.agent import Actor, Critic
from imwm.configs import CONFIG_DIR
from imwm.nn.optim import LaProp, check_laprop_options
from imwm.objectives import ReplayValueLoss, replay_lambda_return
from imwm.training.build_model import build_agent
from imwm.training.config import validate_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_training_faults import assert_same, replay_batch, snapshot, tiny_agent  # noqa: E402

CONFIGS = str(CONFIG_DIR)
TINY_MODEL = {"deter": 16, "hidden": 16, "stoch": 4, "classes": 4, "cnn_depth": 4, "mlp_units": 16, "mlp_layers": 1}


def composed(*overrides) -> dict:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


# ---------------------------------------------------------------------------- LaProp
def reference_laprop(params, grads_per_step, *, lr, beta1, beta2, eps, agc, pmin, warmup):
    """danijar/dreamerv3's chain, written out in float64 numpy: AGC -> RMS -> momentum -> lr schedule."""
    params = [np.array(p, dtype=np.float64) for p in params]
    nu = [np.zeros_like(p) for p in params]
    mu = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, (p, g) in enumerate(zip(params, grads)):
            g = np.array(g, dtype=np.float64)
            if agc:
                upper = agc * max(pmin, np.linalg.norm(p))
                g = g / max(1.0, np.linalg.norm(g) / upper)
            nu[i] = beta2 * nu[i] + (1 - beta2) * g * g
            u = g / (np.sqrt(nu[i] / (1 - beta2**t)) + eps)
            mu[i] = beta1 * mu[i] + (1 - beta1) * u
            rate = lr * min(1.0, (t - 1) / warmup) if warmup else lr
            params[i] = p - rate * mu[i] / (1 - beta1**t)
    return params


def run_laprop(params, grads_per_step, **kwargs):
    tensors = [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64)) for p in params]
    opt = LaProp(tensors, **kwargs)
    for grads in grads_per_step:
        for p, g in zip(tensors, grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return [p.detach().numpy() for p in tensors], opt


PARAMS = [[0.5, -1.0, 2.0], [[0.1, 0.2], [-0.3, 0.0]]]
GRADS = [
    [[1.0, -2.0, 0.5], [[0.3, -0.1], [0.0, 4.0]]],
    [[-0.5, 1.0, 3.0], [[0.2, 0.2], [-1.0, 0.5]]],
    [[2.0, 0.0, -1.0], [[-0.4, 0.1], [0.3, -2.0]]],
]


def test_laprop_first_steps_by_hand():
    # plain LaProp (no AGC, no warm-up), lr 0.1, betas (0.5, 0.5), eps 0 -> 1e-12; values by hand:
    # step 1: nu = 0.5 g1^2, nu_hat = g1^2, u = sign(g1), mu = 0.5 u, mu_hat = u
    # step 2: nu = 0.25 g1^2 + 0.5 g2^2, nu_hat = nu / 0.75, u = g2 / sqrt(nu_hat),
    #         mu = 0.25 sign(g1) + 0.5 u, mu_hat = mu / 0.75
    g1, g2 = 2.0, -1.0
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = LaProp([w], lr=0.1, betas=(0.5, 0.5), eps=1e-12, agc=0.0, warmup=0)
    w.grad = torch.tensor([g1], dtype=torch.float64)
    opt.step()
    assert w.item() == pytest.approx(1.0 - 0.1)
    w.grad = torch.tensor([g2], dtype=torch.float64)
    opt.step()
    nu_hat = (0.25 * g1**2 + 0.5 * g2**2) / 0.75
    mu_hat = (0.25 * 1.0 + 0.5 * g2 / math.sqrt(nu_hat)) / 0.75
    assert w.item() == pytest.approx(0.9 - 0.1 * mu_hat)
    state = opt.state[w]
    assert state["step"].item() == 2 and state["nu"].item() == pytest.approx(0.25 * g1**2 + 0.5 * g2**2)


@pytest.mark.parametrize("agc, warmup", [(0.0, 0), (0.3, 0), (0.3, 2), (0.05, 1)])
def test_laprop_matches_the_reference_chain_for_three_steps(agc, warmup):
    kwargs = dict(lr=0.01, eps=1e-8, agc=agc, warmup=warmup)
    got, opt = run_laprop(PARAMS, GRADS, betas=(0.9, 0.999), agc_pmin=1e-3, **kwargs)
    want = reference_laprop(PARAMS, GRADS, beta1=0.9, beta2=0.999, pmin=1e-3, **kwargs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    assert all(s["step"].item() == 3 for s in opt.state.values())


def test_laprop_defaults_are_the_2024_reference_values():
    opt = LaProp([torch.nn.Parameter(torch.zeros(1))])
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (4e-5, (0.9, 0.999), 1e-20)
    assert (group["agc"], group["agc_pmin"], group["warmup"]) == (0.3, 1e-3, 1000)


def test_agc_clips_each_tensor_relative_to_its_norm():
    beta2 = 0.999
    big = torch.nn.Parameter(torch.tensor([3.0, 4.0]))    # ||p|| = 5 -> limit 0.3 * 5 = 1.5
    small = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # same weights, gradient under the limit
    zero = torch.nn.Parameter(torch.zeros(2))             # ||p|| = 0 -> limit 0.3 * pmin = 3e-4
    opt = LaProp([big, small, zero], lr=1.0, agc=0.3, agc_pmin=1e-3, warmup=0)
    big.grad = torch.tensor([0.0, 6.0])    # ||g|| = 6 > 1.5: scaled by 1.5 / 6 to [0, 1.5]
    small.grad = torch.tensor([0.6, 0.8])  # ||g|| = 1 <= 1.5: unchanged
    zero.grad = torch.tensor([1.0, 0.0])   # ||g|| = 1 > 3e-4: scaled to [3e-4, 0]
    opt.step()
    nu = lambda p: opt.state[p]["nu"]  # noqa: E731  (1 - beta2) * clipped_g^2 after one step
    torch.testing.assert_close(nu(big), (1 - beta2) * torch.tensor([0.0, 1.5]) ** 2)
    torch.testing.assert_close(nu(small), (1 - beta2) * torch.tensor([0.6, 0.8]) ** 2)
    torch.testing.assert_close(nu(zero), (1 - beta2) * torch.tensor([3e-4, 0.0]) ** 2)
    assert torch.equal(big.grad, torch.tensor([0.0, 6.0]))  # p.grad itself is not modified
    # the zero-initialised tensor still moves (pmin keeps it trainable)
    assert zero[0].item() < 0


def test_warmup_schedule_values():
    lr, warmup = 4e-5, 1000
    rates = [LaProp.rate(lr, warmup, step) for step in (1, 2, 501, 1000, 1001, 1002, 10**6)]
    assert rates == pytest.approx([0.0, lr / 1000, lr / 2, lr * 999 / 1000, lr, lr, lr])
    assert LaProp.rate(lr, 0, 1) == lr
    # applied: step 1 moves nothing, step 2 moves by lr / warmup * mu_hat
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = LaProp([w], lr=0.5, agc=0.0, warmup=10)
    for expected in (1.0, 1.0 - 0.05):
        w.grad = torch.tensor([1.0], dtype=torch.float64)
        opt.step()
        assert w.item() == pytest.approx(expected)


def test_laprop_state_round_trips_and_skips_params_without_grad():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = LaProp([a, b], lr=0.1, warmup=0)
    a.grad = torch.ones(2)
    opt.step()
    assert b not in opt.state and torch.equal(b.detach(), torch.ones(2))
    other = LaProp([a, b], lr=0.1, warmup=0)
    other.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert other.state[a]["step"].item() == 1


@pytest.mark.parametrize("kwargs", [dict(lr=0.0), dict(eps=0.0), dict(betas=(1.0, 0.9)), dict(agc=-1.0),
                                    dict(agc_pmin=0.0), dict(warmup=-1), dict(warmup=1.5)])
def test_laprop_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError, match="LaProp"):
        LaProp([torch.nn.Parameter(torch.zeros(1))], **kwargs)


# ---------------------------------------------------------------------------- replay value loss
def test_replay_lambda_returns_by_hand():
    # T = 5, gamma 0.9, lambda 0.5; step 2 is terminal (and last), step 3 starts a new episode,
    # step 4 is truncated (last, not terminal)
    r = torch.tensor([0.0, 1.0, 2.0, 0.0, 4.0]).reshape(1, 5, 1)
    b = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0]).reshape(1, 5, 1)
    term = torch.tensor([0, 0, 1, 0, 0], dtype=torch.bool).reshape(1, 5, 1)
    last = torch.tensor([0, 0, 1, 0, 1], dtype=torch.bool).reshape(1, 5, 1)
    got = replay_lambda_return(r, b, term, last, gamma=0.9, lmbda=0.5).reshape(-1)
    # R_4 = b_4 = 50 (seed, not a target)
    # R_3 = r_4 + 0.9 * (1 - 0) * ((1 - 0) * b_4 + 0 * R_4) = 4 + 45 = 49        (step 4 last: no lambda)
    # R_2 = r_3 + 0.9 * 1 * (0.5 * b_3 + 0.5 * R_3) = 0 + 0.9 * 44.5 = 40.05     (masked in the loss)
    # R_1 = r_2 + 0.9 * 0 * (...) = 2                                              (step 2 terminal)
    # R_0 = r_1 + 0.9 * (0.5 * b_1 + 0.5 * R_1) = 1 + 0.9 * 11 = 10.9
    torch.testing.assert_close(got, torch.tensor([10.9, 2.0, 40.05, 49.0]))


def test_replay_value_loss_matches_a_hand_built_loss():
    torch.manual_seed(0)
    critic = Critic(6, mlp_units=8, mlp_layers=1)
    torch.nn.init.normal_(critic.net.net[-1].weight, std=0.1)  # a non-zero critic
    slow = copy.deepcopy(critic)
    torch.nn.init.normal_(slow.net.net[-1].weight, std=0.1)
    B, T = 2, 4
    td = TensorDict({
        "feat": torch.randn(B, T, 6),
        "reward": torch.randn(B, T, 1),
        "is_terminal": torch.tensor([[0, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool).unsqueeze(-1),
        "is_last": torch.tensor([[0, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.bool).unsqueeze(-1),
        "bootstrap": torch.randn(B, T, 1),
    }, [B, T])
    loss = ReplayValueLoss(critic, slow, gamma=0.99, lmbda=0.95, slow_critic_scale=0.5)
    out = loss(td)
    ret = replay_lambda_return(td["reward"], td["bootstrap"], td["is_terminal"], td["is_last"], gamma=0.99, lmbda=0.95)
    logits = critic(td["feat"][:, :-1])
    slow_value = slow.mean(slow(td["feat"][:, :-1]))
    per_step = critic.loss(logits, ret) + 0.5 * critic.loss(logits, slow_value)
    weight = 1.0 - td["is_last"][:, :-1, 0].float()
    torch.testing.assert_close(out["loss_repval"], (weight * per_step).sum() / (B * (T - 1)))
    out["loss_repval"].backward()
    assert critic.net.net[-1].weight.grad.abs().sum() > 0 and slow.net.net[-1].weight.grad is None


def test_agent_bootstraps_each_replayed_step_with_its_own_imagination_return():
    agent = tiny_agent(repval_scale=0.3)
    B, T, H = 3, 5, agent.horizon
    batch = replay_batch(B, T)
    traj = TensorDict({"return": torch.arange(B * T * (H + 1), dtype=torch.float32).reshape(B * T, H + 1, 1)},
                      [B * T, H + 1])
    wm_out = TensorDict({"feat": torch.zeros(B, T, 7)}, [B, T])
    inputs = agent._with_bootstrap(agent._replay_value_td(batch, wm_out), traj)
    for b in range(B):
        for t in range(T):  # imagine() flattens the B*T posterior states row-major
            assert inputs["bootstrap"][b, t, 0] == traj["return"][b * T + t, 0, 0]
    assert torch.equal(inputs["reward"], batch["reward"])


def test_repval_with_an_intrinsic_reward_warns_once():
    agent = tiny_agent(repval_scale=0.3)
    agent.intrinsic = lambda traj: traj.set("total_reward", traj.get("reward") + 1.0)
    with pytest.warns(UserWarning, match="extrinsic rewards only"):
        agent.train_step(replay_batch())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics, _ = agent.train_step(replay_batch())
    assert torch.isfinite(metrics["loss_repval"])


# ---------------------------------------------------------------------------- actor init
def test_actor_output_layer_init_scale():
    torch.manual_seed(1)
    ref = Actor(8, 64, mlp_units=1024, mlp_layers=1).net.net[-1].weight
    torch.manual_seed(1)
    small = Actor(8, 64, mlp_units=1024, mlp_layers=1, out_scale=0.01).net.net[-1].weight
    torch.testing.assert_close(small, 0.01 * ref)  # same draw, scaled
    # fan-in truncated normal: std = scale / sqrt(fan_in) (the truncation is corrected for)
    assert small.std().item() == pytest.approx(0.01 / math.sqrt(1024), rel=0.03)
    critic = Critic(8, mlp_units=16, mlp_layers=1)
    assert torch.count_nonzero(critic.net.net[-1].weight) == 0  # value head: zero init (2023 and 2024)


# ---------------------------------------------------------------------------- the recipe
def test_default_agent_group_is_the_2023_recipe():
    agent_cfg = composed()["agent"]
    assert agent_cfg["optimizer"] == "adam" and agent_cfg["repval_scale"] == 0.0
    assert agent_cfg["dyn_scale"] == 0.5 and agent_cfg["actor_out_scale"] == 1.0
    assert (agent_cfg["agc"], agent_cfg["warmup"]) == (0.0, 0)
    assert (agent_cfg["model_lr"], agent_cfg["model_grad_clip"]) == (1e-4, 1000.0)
    agent = tiny_agent()
    assert isinstance(agent.model_opt, torch.optim.Adam) and agent.repval_scale == 0


def test_v3_2024_recipe_composes_with_reference_values_and_overrides():
    cfg = composed("agent=v3_2024", "preset=debug")
    plain = validate_config(cfg)
    a = plain["agent"]
    assert a["optimizer"] == "laprop" and (a["agc"], a["agc_pmin"], a["warmup"]) == (0.3, 1e-3, 1000)
    assert (a["beta1"], a["beta2"]) == (0.9, 0.999)
    for group in ("model", "actor", "critic"):
        assert (a[f"{group}_lr"], a[f"{group}_eps"]) == (4e-5, 1e-20)
        assert a[f"{group}_grad_clip"] == math.inf
    assert (a["dyn_scale"], a["rep_scale"], a["repval_scale"], a["actor_out_scale"]) == (1.0, 0.1, 0.3, 0.01)
    assert a["horizon"] == 5  # the preset still applies on top
    assert composed("agent=v3_2024", "agent.warmup=0", "agent.repval_scale=0")["agent"]["warmup"] == 0


def test_v3_2024_agent_trains_with_finite_losses():
    plain = composed("agent=v3_2024", "preset=debug")
    plain["model"] = dict(TINY_MODEL)
    plain["agent"]["warmup"] = 2  # so the third update moves the weights
    torch.manual_seed(0)
    agent = build_agent(plain, obs_shape=(4,), action_dim=2)
    assert all(isinstance(o, LaProp) for o in (agent.model_opt, agent.actor_opt, agent.critic_opt))
    assert agent.world_model_loss.dyn_scale == 1.0
    out_w = agent.actor.net.net[-1].weight
    assert out_w.abs().max().item() < 0.01  # 0.01 x fan-in scale (16 units: 2 * 0.01 / 4 / 0.88)
    before = {k: v.clone() for k, v in agent.state_dict().items() if isinstance(v, torch.Tensor)}
    for _ in range(3):
        metrics, _ = agent.train_step(replay_batch())
    for key in ("world_model_loss", "loss_actor", "loss_critic", "loss_repval", "grad_norm_model"):
        assert torch.isfinite(metrics[key]), key
    assert metrics["nonfinite_skipped"] == 0 and metrics["loss_repval"] > 0
    after = agent.state_dict()
    for prefix in ("world_model.", "actor.", "critic."):
        assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith(prefix)), prefix
    state = agent.optimizers_state_dict()
    assert state["kind"] == "laprop"
    assert all(s["step"].item() == 3 for s in state["model"]["state"].values())


def test_a_skipped_update_leaves_laprop_untouched():
    agent = tiny_agent(optimizer="laprop", agc=0.3, warmup=3, repval_scale=0.3, max_nonfinite_updates=3)
    agent.train_step(replay_batch())  # LaProp states exist
    before = snapshot(agent)
    batch = replay_batch()
    batch["reward"][0, 2] = float("nan")
    with pytest.warns(UserWarning, match="non-finite world model"):
        metrics, _ = agent.train_step(batch)
    assert metrics["nonfinite_skipped"] == 1
    assert_same(snapshot(agent), before)  # weights, nu, mu and the warm-up step count
    param = next(agent.critic.parameters())
    hook = param.register_hook(lambda g: torch.full_like(g, float("nan")))
    with pytest.warns(UserWarning, match="non-finite behaviour"):
        agent.train_step(replay_batch())
    hook.remove()
    model_state = agent.model_opt.state_dict()
    assert all(s["step"].item() == 2 for s in model_state["state"].values())  # the world model stepped
    after = snapshot(agent)["opt"]
    assert_same(after["actor"], before["opt"]["actor"])
    assert_same(after["critic"], before["opt"]["critic"])


def test_optimizer_kind_is_checked_on_resume():
    laprop = tiny_agent(optimizer="laprop")
    laprop.train_step(replay_batch())
    state = laprop.optimizers_state_dict()
    with pytest.raises(ValueError, match="laprop's but agent.optimizer=adam"):
        tiny_agent().load_optimizers_state_dict(state)
    other = tiny_agent(optimizer="laprop")
    other.load_optimizers_state_dict(copy.deepcopy(state))
    assert_same(other.optimizers_state_dict(), state)


@pytest.mark.parametrize("kwargs, key", [
    (dict(agc=0.3), "agent.agc"), (dict(warmup=10), "agent.warmup"), (dict(optimizer="sgd"), "agent.optimizer"),
    (dict(optimizer="laprop", beta2=1.0), "agent.beta2"), (dict(repval_scale=-1.0), "agent.repval_scale"),
    (dict(optimizer="laprop", model_eps=0.0), "agent.model_eps"),
])
def test_bad_recipe_keys_are_named(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        tiny_agent(**kwargs)



@pytest.mark.parametrize("kwargs, message", [
    (dict(betas=(1.0, 0.9)), "beta1 must be a number in"), (dict(betas=(0.9, -0.1)), "beta2 must be a number in"),
    (dict(betas=(0.9,)), "betas must be two numbers"), (dict(agc=float("nan")), "agc must be a finite number"),
    (dict(agc_pmin=0.0), "agc_pmin must be"), (dict(warmup=2.0), "warmup must be an integer"),
])
def test_one_check_of_the_laprop_options_names_the_key(kwargs, message):
    options = dict(betas=(0.9, 0.999), agc=0.3, agc_pmin=1e-3, warmup=10) | kwargs
    with pytest.raises(ValueError, match=f"^{message}"):
        check_laprop_options(**options)
    with pytest.raises(ValueError, match=f"^LaProp {message}"):  # the optimiser runs the same check
        LaProp([torch.nn.Parameter(torch.zeros(1))], **options)
