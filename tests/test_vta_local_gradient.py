"""local_boundary_loss: the exact READ-minus-COPY cost difference at one flipped step per sequence."""

import pytest
import torch
from tensordict import TensorDict

from imwm.envs.moving_shapes import generate_moving_shapes
from imwm.vta import READ_INDEX, VTAOriginal, local_boundary_loss


class _Stand_in(torch.nn.Module):
    """Cost of a READ at step t is w[t] (plus noise shared by both forced passes)."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, obs, boundary):
        B, T = boundary.shape[:2]
        noise = torch.randn(B, T)  # common random numbers: must cancel in the difference
        zeros = torch.zeros(B, T)
        return TensorDict({"obs_cost": boundary[..., 0] * self.w + noise, "kl_abs": zeros, "kl_obs": zeros}, [])


def test_gradient_is_the_cost_difference_at_the_flipped_step():
    torch.manual_seed(0)
    B, T = 4, 6
    w = torch.tensor([0.0, 3.0, -2.0, 5.0, 1.0, -4.0])
    flags = (torch.rand(B, T, 1) < 0.5).float()
    read_prob = torch.full((B, T, 1), 0.3, requires_grad=True)
    gen = torch.Generator().manual_seed(1)
    loss = local_boundary_loss(_Stand_in(w), None, {"boundary": flags, "read_prob": read_prob}, generator=gen)
    loss.backward()
    steps = torch.randint(1, T, (B,), generator=torch.Generator().manual_seed(1))
    want = torch.zeros(B, T)
    want[torch.arange(B), steps] = w[steps] * (T - 1) / (B * T)
    torch.testing.assert_close(read_prob.grad[..., 0], want)


def test_original_model_carries_the_local_gradient_in_its_loss(monkeypatch):
    import imwm.vta.local_gradient as local_gradient

    calls = []

    def spy(*args, **kwargs):
        calls.append(local_boundary_loss(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(local_gradient, "local_boundary_loss", spy)
    torch.manual_seed(0)
    m = VTAOriginal(image_size=32, cnn_depth=4, embed_dim=16, belief_dim=16, state_dim=4, hidden_dim=16,
                    boundary_grad="local", boundary_scale=0.0)
    obs = generate_moving_shapes(3, 8, image_size=32)["observation"]
    out = m(obs)
    assert not out["boundary"].requires_grad  # no straight-through path
    objective = sum(out[k] for k in ("obs_cost", "kl_abs", "kl_obs", "kl_mask", "boundary_kl")).mean()
    torch.testing.assert_close(out["loss"], objective)  # the value is the objective's alone
    detector = m.post_boundary.net[0].weight
    (from_loss,) = torch.autograd.grad(out["loss"], detector, retain_graph=True)
    (from_objective,) = torch.autograd.grad(objective, detector, retain_graph=True)
    (from_local,) = torch.autograd.grad(calls[0], detector)
    assert from_local.abs().sum() > 0
    torch.testing.assert_close(from_loss, from_objective + from_local)  # ... its gradient adds the local term
    m(obs, boundary=out["boundary"].detach())  # forced flags (diagnostics): no extra passes
    m.eval()
    m(obs)  # evaluation: none either
    assert len(calls) == 1
    with pytest.raises(ValueError, match="boundary_grad"):
        VTAOriginal(image_size=32, boundary_grad="reinforce")


def test_a_given_cost_replaces_the_elbo_terms():
    B, T = 3, 5
    flags = torch.zeros(B, T, 1)
    read_prob = torch.full((B, T, 1), 0.5, requires_grad=True)

    def model(obs, boundary):  # a READ costs 2 in "other" and nothing in the default terms
        zeros = torch.zeros(B, T)
        return TensorDict({"obs_cost": zeros, "kl_abs": zeros, "kl_obs": zeros, "other": 2.0 * boundary[..., 0]}, [])

    out = {"boundary": flags, "read_prob": read_prob}
    (default,) = torch.autograd.grad(local_boundary_loss(model, None, out), read_prob)
    assert default.abs().sum() == 0
    loss = local_boundary_loss(model, None, out, cost=lambda o: o["other"].sum(1))
    (grad,) = torch.autograd.grad(loss, read_prob)
    assert torch.allclose(grad.sum(), torch.tensor(B * 2.0 * (T - 1) / (B * T)))  # one flipped step per sequence


def test_sequence_model_carries_the_local_gradient_of_its_training_objective(monkeypatch):
    import imwm.vta.local_gradient as local_gradient
    import imwm.vta.sequence_model as sequence_model
    from imwm.vta import VTASequenceModel

    calls = []

    def spy(*args, **kwargs):
        assert kwargs["cost"] is sequence_model.model_cost  # the training objective, not the ELBO
        calls.append(local_boundary_loss(*args, **kwargs))
        return calls[-1]

    tiny = dict(image_size=32, cnn_depth=4, embed_dim=16, free_bits=0.1, obs_std=0.1, abs_belief_dim=16,
                obs_belief_dim=16, abs_stoch_dim=4, obs_stoch_dim=4, hidden=16, boundary_hidden=8,
                boundary_rate=0.15, boundary_scale=30.0, boundary_causal=True, boundary_grad="local")
    torch.manual_seed(0)
    m = VTASequenceModel(**tiny)
    obs = generate_moving_shapes(3, 8, image_size=32)["observation"]
    monkeypatch.setattr(local_gradient, "local_boundary_loss", spy)
    torch.manual_seed(1)
    out = m(obs)
    assert not out["boundary"].requires_grad  # no straight-through path
    monkeypatch.setattr(local_gradient, "local_boundary_loss", lambda *a, **k: torch.zeros(()))
    torch.manual_seed(1)
    ref = m(obs)  # the same forward without the local term
    torch.testing.assert_close(out["loss"], ref["loss"])  # the value is the objective's alone
    detector = m.dynamics.post_boundary.net[1].weight  # [0] pads (causal)
    (from_loss,) = torch.autograd.grad(out["loss"], detector, retain_graph=True)
    (from_objective,) = torch.autograd.grad(ref["loss"], detector)
    (from_local,) = torch.autograd.grad(calls[0], detector)
    assert from_local.abs().sum() > 0
    torch.testing.assert_close(from_loss, from_objective + from_local, rtol=1e-4, atol=1e-4)  # ... its gradient adds the local term
    monkeypatch.setattr(local_gradient, "local_boundary_loss", spy)
    m(obs, boundary=out["boundary"].detach())  # forced flags: no extra passes
    m.eval()
    m(obs)  # evaluation: none either
    assert len(calls) == 1


def test_model_cost_is_reconstruction_plus_the_weighted_state_kls():
    from imwm.vta import VTASequenceModel

    torch.manual_seed(0)
    m = VTASequenceModel(image_size=32, cnn_depth=4, embed_dim=16, free_bits=0.1, dyn_scale=0.5, rep_scale=0.1,
                         abs_belief_dim=16, obs_belief_dim=16, abs_stoch_dim=4, obs_stoch_dim=4, hidden=16,
                         boundary_hidden=8, boundary_scale=0.0)
    out = m(generate_moving_shapes(2, 6, image_size=32)["observation"])
    # loss per step = model_cost + (dyn + rep) * KL_m, KL_m's two halves being equal in value
    per_step = out["model_cost"] + 0.6 * out["kl_mask"]
    torch.testing.assert_close(out["loss"], per_step.mean())
    read = out["boundary"][..., 0]
    state_kl = read * 0.6 * out["kl_abs_raw"].clamp_min(0.1) + 0.6 * out["kl_obs"].clamp_min(0.1)
    torch.testing.assert_close(out["model_cost"], out["obs_cost"] + state_kl)


def test_the_agent_takes_the_local_gradient_in_eager_mode_only():
    from imwm.configs import compose_config
    from imwm.errors import ConfigError
    from imwm.training.build_model import build_agent, build_dynamics, check_model_config

    cfg = dict(name="vta", abs_belief_dim=8, obs_belief_dim=8, abs_stoch_dim=2, obs_stoch_dim=2, hidden=8,
               boundary_hidden=4, boundary_grad="local")
    assert build_dynamics(cfg, action_dim=2, embed_dim=6).boundary_grad == "local"
    with pytest.raises(ConfigError, match="dynamics.boundary_grad"):
        check_model_config(compose_config(["preset=debug", "dynamics=vta", "dynamics.boundary_grad=reinforce"]))
    compiled = compose_config(["preset=debug", "dynamics=vta", "dynamics.boundary_grad=local", "agent.compile=default"])
    with pytest.raises(ConfigError, match="agent.compile"):
        check_model_config(compiled)  # before anything is built ...
    with pytest.raises(ConfigError, match="agent.compile"):
        build_agent(compiled, obs_shape=(4,), action_dim=2)  # ... and by the agent itself


def _vta_world_model_loss(**dynamics_kwargs):
    from imwm.objectives import WorldModelLoss
    from imwm.vta import VTADynamics
    from imwm.world_model import WorldModel

    wm = WorldModel.build((4,), 2, lambda e: VTADynamics(
        action_dim=2, embed_dim=e, abs_belief_dim=8, obs_belief_dim=8, abs_stoch_dim=2, obs_stoch_dim=2, hidden=8,
        boundary_hidden=8, boundary_force_scale=0.0, boundary_rate=0.15, boundary_scale=10.0, **dynamics_kwargs),
        cnn_depth=4, mlp_units=16, mlp_layers=1)
    B, T = 3, 6
    batch = TensorDict({"observation": torch.randn(B, T, 4), "action": torch.eye(2)[torch.randint(0, 2, (B, T))],
                        "is_first": torch.zeros(B, T, 1, dtype=torch.bool), "reward": torch.randn(B, T, 1),
                        "is_terminal": torch.zeros(B, T, 1, dtype=torch.bool)}, [B, T])
    batch["is_first"][:, 0] = True
    return WorldModelLoss(wm, free_bits=0.1), batch


def test_world_model_loss_carries_the_local_gradient_of_the_agent_objective(monkeypatch):
    import imwm.vta.local_gradient as local_gradient

    torch.manual_seed(0)
    loss_fn, batch = _vta_world_model_loss(boundary_grad="local")
    calls = []

    def spy(model, obs, out, **kwargs):
        calls.append((model, out["boundary"].detach(), local_boundary_loss(model, obs, out, **kwargs)))
        return calls[-1][2]

    monkeypatch.setattr(local_gradient, "local_boundary_loss", spy)
    torch.manual_seed(1)
    out = loss_fn(batch)
    total = sum(v for k, v in out.items() if k.startswith("loss_"))
    monkeypatch.setattr(local_gradient, "local_boundary_loss", lambda *a, **k: torch.zeros(()))
    torch.manual_seed(1)
    ref = loss_fn(batch)
    ref_total = sum(v for k, v in ref.items() if k.startswith("loss_"))
    torch.testing.assert_close(total, ref_total)  # the value is the objective's alone
    torch.testing.assert_close(out["world_model_loss"], total)
    detector = loss_fn.world_model.dynamics.post_boundary.net[0].weight
    (from_loss,) = torch.autograd.grad(total, detector, retain_graph=True)
    (from_objective,) = torch.autograd.grad(ref_total, detector)
    (from_local,) = torch.autograd.grad(calls[0][2], detector)
    assert from_local.abs().sum() > 0
    torch.testing.assert_close(from_loss, from_objective + from_local, rtol=1e-4, atol=1e-5)

    # the cost of a flag pattern is the world-model objective without the boundary's own terms
    forced_cost, flags = calls[0][0], calls[0][1]
    wm = loss_fn.world_model
    torch.manual_seed(2)
    cost = forced_cost(None, flags)
    torch.manual_seed(2)
    embed = wm.encoder(batch["observation"])
    post, prior = wm.dynamics.observe(embed, batch["action"], batch["is_first"], boundary=flags)
    full = loss_fn.heads_and_losses(batch["observation"], batch["reward"], batch["is_terminal"], post, prior,
                                    wm.dynamics.get_feat(post))
    kl, metrics = wm.dynamics.kl_loss(post, prior, free_bits=0.1, dyn_scale=0.5, rep_scale=0.1)
    boundary_terms = (kl - metrics["kl_state"]).sum(1)
    assert boundary_terms.abs().min() > 0
    torch.testing.assert_close(cost, full["model_loss"] * batch.shape[1] - boundary_terms, rtol=1e-5, atol=1e-4)

    with torch.no_grad():
        loss_fn(batch)  # no gradient: no extra passes
    wm.eval()
    loss_fn(batch)  # evaluation mode: none either
    assert len(calls) == 1


def test_world_model_loss_gradient_equals_forced_cost_differences(monkeypatch):
    """The detector's gradient at each flipped step is C(READ) - C(COPY) of the agent's objective,
    an episode start inside the window included."""
    import imwm.vta.local_gradient as local_gradient

    torch.manual_seed(0)
    loss_fn, batch = _vta_world_model_loss(boundary_grad="local")
    batch["is_first"][1, 3] = True  # a new episode inside the window, at sequence 1's flipped step
    B, T = batch.shape
    seen = {}

    def capture(model, obs, out, **kwargs):  # the forced cost, the sampled flags and a gradient to q
        seen.update(model=model, flags=out["boundary"].detach(), q=out["read_prob"].detach())
        seen["read_prob"] = torch.full((B, T, 1), 0.5, requires_grad=True)
        torch.manual_seed(5)
        return local_boundary_loss(model, obs, {"boundary": seen["flags"], "read_prob": seen["read_prob"]},
                                   generator=torch.Generator().manual_seed(2), **kwargs)

    monkeypatch.setattr(local_gradient, "local_boundary_loss", capture)
    out = loss_fn(batch)
    (grad,) = torch.autograd.grad(out["loss_kl"], seen["read_prob"])
    read = torch.softmax(out["posterior"]["boundary_logit"], -1)[..., READ_INDEX : READ_INDEX + 1]
    torch.testing.assert_close(seen["q"], read)  # the gradient goes to q(READ), not q(COPY)
    torch.testing.assert_close(seen["flags"], out["posterior"]["boundary"])
    steps = torch.randint(1, T, (B,), generator=torch.Generator().manual_seed(2))
    for b, t in enumerate(steps.tolist()):
        costs = []
        for value in (1.0, 0.0):
            forced = seen["flags"].clone()
            forced[b, t] = value
            torch.manual_seed(5)
            with torch.no_grad():
                costs.append(seen["model"](None, forced)[b])
        assert (costs[0] == costs[1]) == ((b, t) == (1, 3))  # an episode start is a READ whatever the flag
        torch.testing.assert_close(grad[b, t, 0], (costs[0] - costs[1]) * (T - 1) / (B * T), rtol=1e-4, atol=1e-5)
        assert grad[b].abs().sum() == grad[b, t].abs().sum()  # nothing at the other steps


def test_world_model_loss_with_the_default_gradient_makes_no_extra_passes(monkeypatch):
    import imwm.vta.local_gradient as local_gradient

    monkeypatch.setattr(local_gradient, "local_boundary_loss", lambda *a, **k: pytest.fail("called"))
    loss_fn, batch = _vta_world_model_loss()
    out = loss_fn(batch)
    assert out["loss_kl"].requires_grad


def test_dreamer_variant_gradient_equals_forced_cost_differences_in_training_mode():
    from imwm.vta import VTASequenceModel
    from imwm.vta.sequence_model import model_cost

    torch.manual_seed(0)
    m = VTASequenceModel(image_size=32, cnn_depth=4, embed_dim=16, free_bits=0.1, obs_std=0.1, abs_belief_dim=16,
                         obs_belief_dim=16, abs_stoch_dim=4, obs_stoch_dim=4, hidden=16, boundary_hidden=8,
                         boundary_force_scale=0.0, boundary_grad="local")
    B, T = 3, 7
    obs = generate_moving_shapes(B, T, image_size=32)["observation"]
    flags = (torch.rand(B, T, 1) < 0.3).float()
    flags[:, 0] = 1.0
    read_prob = torch.full((B, T, 1), 0.5, requires_grad=True)
    torch.manual_seed(5)  # the forced passes' noise (Gumbel and latents, drawn in training mode)
    loss = local_boundary_loss(m, obs, {"boundary": flags, "read_prob": read_prob},
                               generator=torch.Generator().manual_seed(2), cost=model_cost)
    (grad,) = torch.autograd.grad(loss, read_prob)
    steps = torch.randint(1, T, (B,), generator=torch.Generator().manual_seed(2))
    for b, t in enumerate(steps.tolist()):
        costs = []
        for value in (1.0, 0.0):
            forced = flags.clone()
            forced[b, t] = value
            torch.manual_seed(5)
            with torch.no_grad():
                costs.append(model_cost(m(obs, boundary=forced))[b])
        want = (costs[0] - costs[1]) * (T - 1) / (B * T)
        torch.testing.assert_close(grad[b, t, 0], want, rtol=1e-4, atol=1e-3)
        assert grad[b].abs().sum() == grad[b, t].abs().sum()  # nothing at the other steps
