"""The compiled update (``agent.compile``) against the eager one."""

import warnings

import pytest
import torch
from omegaconf import OmegaConf

from imwm.agent.compile import COMPILE_MODES, CompiledPhase, parse_compile_mode
from imwm.training.build_model import build_agent

from test_agent_dreamer import CONFIGS, batch, tiny_cfg


def test_parse_compile_mode():
    assert parse_compile_mode(False) == "false" and parse_compile_mode(True) == "default"
    assert [parse_compile_mode(m) for m in COMPILE_MODES] == list(COMPILE_MODES)
    with pytest.raises(ValueError, match=r"compile must be one of \['false', 'default'"):
        parse_compile_mode("fast")


def test_a_phase_that_fails_to_compile_warns_once_and_runs_eagerly(monkeypatch):
    def broken(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    phase = CompiledPhase(lambda x: x + 1, name="toy", mode="default")
    with pytest.warns(UserWarning, match="toy phase failed.*no C\\+\\+ compiler.*running it eagerly"):
        assert phase(torch.zeros(())).item() == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert phase(torch.ones(())).item() == 2.0
    assert not phase.compiled


@pytest.fixture
def same_random_numbers(monkeypatch):
    # compiled graphs draw from Inductor's own generator unless told to call torch's
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "fallback_random", True)


def _vta_cfg(**agent):
    cfg = tiny_cfg(**agent)
    cfg.dynamics = OmegaConf.load(CONFIGS / "dynamics" / "vta.yaml")
    return cfg


PROGRAMS = {"phase": {"world_model_forward", "imagine_and_behaviour"},
            "step": {"VectorEncoder.forward", "RSSMDynamics.observe_cell", "WorldModelLoss.heads_and_losses",
                     "RSSMDynamics.img_step", "Actor.forward", "behaviour_forward"},
            "observe_step": {"VectorEncoder.forward", "RSSMDynamics.observe_cell",
                             "WorldModelLoss.heads_and_losses", "imagine_and_behaviour"}}


def _compare_one_update(tol: float, scope: str = "phase"):
    torch.manual_seed(0)
    eager = build_agent(tiny_cfg(), obs_shape=(4,), action_dim=3)
    compiled = build_agent(tiny_cfg(compile="default", compile_scope=scope), obs_shape=(4,), action_dim=3)
    compiled.load_state_dict(eager.state_dict())
    data = batch((4,), B=2, T=4)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*running it eagerly")  # no fallback
        torch.manual_seed(1)
        m_compiled, s_compiled = compiled.train_step(data.clone())
    assert compiled.compiled and set(compiled.compile_seconds) == PROGRAMS[scope]
    torch.manual_seed(1)
    m_eager, s_eager = eager.train_step(data.clone())
    for key in ("world_model_loss", "loss_image", "loss_kl", "loss_actor", "loss_critic", "grad_norm_model",
                "grad_norm_actor", "grad_norm_critic"):
        torch.testing.assert_close(m_compiled[key], m_eager[key], rtol=tol, atol=tol, msg=key)
    torch.testing.assert_close(s_compiled.to_dict(), s_eager.to_dict(), rtol=tol, atol=tol)
    for (name, p_c), p_e in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p_c, p_e, rtol=tol, atol=tol, msg=name)  # one optimiser step each
    return compiled, data


def test_traced_update_has_no_graph_breaks_and_matches_eager(monkeypatch):
    """Dynamo traces each phase whole (``fullgraph=True``: a break raises, the agent would warn
    and fall back) and AOTAutograd builds its backward; the ``aot_eager`` backend runs those
    graphs without generating kernels, so the test takes seconds. (VTA: the next test.)"""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    _compare_one_update(tol=1e-5)


def test_step_scope_compiles_the_loop_bodies_once_and_matches_eager(monkeypatch):
    """``compile_scope=step``: the observe step, the imagination step, the actor's forward, the
    encoder, the world model's heads and losses and the behaviour losses are traced whole
    (``fullgraph=True``), once each however long the loops (a second update traces nothing new),
    and the update equals the eager one."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    torch._dynamo.reset()
    counters.clear()
    compiled, data = _compare_one_update(tol=1e-5, scope="step")
    # three loop bodies, the encoder, the world model's heads and losses, the behaviour losses,
    # and observe_cell twice: the first step's zero state carries no gradient
    assert counters["stats"]["unique_graphs"] == 7, dict(counters["stats"])
    compiled.train_step(data.clone())
    assert counters["stats"]["unique_graphs"] == 7, dict(counters["stats"])


def test_observe_step_scope_compiles_imagination_whole_and_matches_eager(monkeypatch):
    """``compile_scope=observe_step``: the world model by loop step, imagination with the
    behaviour losses as one program; the update equals the eager one and a second update traces
    nothing new."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    torch._dynamo.reset()
    counters.clear()
    compiled, data = _compare_one_update(tol=1e-5, scope="observe_step")
    # encoder, heads and losses, imagination + behaviour, observe_cell twice (zero first state)
    assert counters["stats"]["unique_graphs"] == 5, dict(counters["stats"])
    compiled.train_step(data.clone())
    assert counters["stats"]["unique_graphs"] == 5, dict(counters["stats"])


def test_step_scope_installs_its_programs_only_during_an_update(monkeypatch):
    """Outside ``train_step`` the dynamics and the actor are the plain modules again: acting
    runs eagerly and the modules pickle (collector processes receive them)."""
    import pickle

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    agent = build_agent(tiny_cfg(compile="default", compile_scope="step"), obs_shape=(4,), action_dim=3)
    agent.train_step(batch((4,), B=2, T=4))
    dynamics, actor = agent.world_model.dynamics, agent.actor
    assert not {"observe_cell", "img_step"} & set(vars(dynamics)) and "forward" not in vars(actor)
    pickle.dumps(dynamics), pickle.dumps(actor)
    assert agent.compiled and not agent.phases["world_model_forward"].compiled


def test_step_scope_with_vta_compiles_imagination_and_keeps_its_observe_loop_eager(monkeypatch):
    """VTA has no ``observe_cell``: its observe loop stays eager; the encoder, its heads and
    losses (VTA's own KL), its ``img_step`` and the actor compile, and the update equals the
    eager one."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    torch.manual_seed(0)
    eager = build_agent(_vta_cfg(), obs_shape=(4,), action_dim=3)
    compiled = build_agent(_vta_cfg(compile="default", compile_scope="step"), obs_shape=(4,), action_dim=3)
    compiled.load_state_dict(eager.state_dict())
    data = batch((4,), B=2, T=4)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*running it eagerly")
        torch.manual_seed(1)
        m_compiled, _ = compiled.train_step(data.clone())
    torch.manual_seed(1)
    m_eager, _ = eager.train_step(data.clone())
    assert compiled.compiled and set(compiled.compile_seconds) == {
        "VectorEncoder.forward", "WorldModelLoss.heads_and_losses", "VTADynamics.img_step", "Actor.forward",
        "behaviour_forward"}
    for key in ("world_model_loss", "loss_actor", "loss_critic", "grad_norm_actor"):
        torch.testing.assert_close(m_compiled[key], m_eager[key], rtol=1e-5, atol=1e-5, msg=key)


def test_compile_scope_must_be_known():
    with pytest.raises(ValueError, match=r"agent.compile_scope: must be one of \['phase', 'step', 'observe_step'\] \(got 'loop'\)"):
        build_agent(tiny_cfg(compile_scope="loop"), obs_shape=(4,), action_dim=3)


def test_vta_schedules_change_without_retracing(monkeypatch):
    """VTA's two phases trace whole, and a Gumbel temperature annealed and a force scale decayed
    every update reach them as tensors: three updates, three different schedule values, no new
    trace after the first update, and every update equal to eager's."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"}))
    schedules = dict(boundary_temp=2.0, boundary_temp_min=0.1, boundary_temp_anneal_rate=0.5,
                     boundary_force_schedule="linear", boundary_force_start=1.0, boundary_force_decay_updates=3)
    torch.manual_seed(0)
    agents = []
    for mode in ("false", "default"):
        cfg = _vta_cfg(compile=mode)
        cfg.dynamics.update(schedules)
        agents.append(build_agent(cfg, obs_shape=(4,), action_dim=3))
    eager, compiled = agents
    compiled.load_state_dict(eager.state_dict())
    data = batch((4,), B=2, T=4)
    temps, graphs = [], []
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*running it eagerly")
        for step in range(3):
            torch.manual_seed(10 + step)
            m_compiled, _ = compiled.train_step(data.clone())
            temps.append(compiled.world_model.dynamics.current_temp)
            graphs.append(counters["stats"]["unique_graphs"])
            torch.manual_seed(10 + step)
            m_eager, _ = eager.train_step(data.clone())
            for key in ("world_model_loss", "loss_actor", "loss_critic", "grad_norm_model", "grad_norm_actor"):
                torch.testing.assert_close(m_compiled[key], m_eager[key], rtol=1e-5, atol=1e-5, msg=f"{key} {step}")
    assert compiled.compiled and set(compiled.compile_seconds) == {"world_model_forward", "imagine_and_behaviour"}
    for (name, p_c), p_e in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p_c, p_e, rtol=1e-4, atol=1e-5, msg=name)  # after three optimiser steps
    assert len(set(temps)) == 3, temps
    assert graphs[0] == graphs[-1], graphs  # traced at the first update (or earlier), never again


@pytest.mark.slow
def test_inductor_update_matches_eager(same_random_numbers):
    """The real thing: C++ kernels from Inductor (about 2 minutes of compilation on one core)."""
    _compare_one_update(tol=1e-4)
