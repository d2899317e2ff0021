"""build_intrinsic / build_dormant: config files, defaults = class defaults, validation errors."""

import copy
import functools
import inspect

import pytest
import torch
import yaml
from torch import nn

from imwm.configs import CONFIG_DIR
from imwm.diagnostics import DormantMonitor
from imwm.dynamics import RSSMDynamics
from imwm.errors import ConfigError
from imwm.intrinsic import AdaptiveIntrinsicReward, DisagreementIntrinsicReward, LexaStyleIntrinsicReward
from imwm.nn import MLP
from imwm.training.build_intrinsic import build_dormant, build_intrinsic, check_intrinsic_config

CONFIGS = CONFIG_DIR


@functools.lru_cache(maxsize=None)
def _composed(name):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(config_name="config", overrides=[f"intrinsic={name}", "model=XS"])
    return OmegaConf.to_container(cfg.intrinsic, resolve=True)


def _cfg(name):
    """The intrinsic group as Hydra composes it (interpolations resolved), a fresh copy."""
    return copy.deepcopy(_composed(name))


def _agent(learned_std=True):
    dyn = RSSMDynamics(deter=16, stoch=2, classes=4, hidden=8, blocks=2, action_dim=3, embed_dim=8)
    decoder = MLP(dyn.feat_dim, 4, units=8, layers=1)
    decoder.learned_std = learned_std
    world = nn.Module()
    world.dynamics, world.decoder = dyn, decoder
    world.encoder = MLP(4, 8, units=8, layers=1)
    world.reward_head = MLP(dyn.feat_dim, 5, units=8, layers=1)
    world.continue_head = MLP(dyn.feat_dim, 1, units=8, layers=1)
    agent = nn.Module()
    agent.world_model = world
    agent.actor = MLP(dyn.feat_dim, 3, units=8, layers=1)
    agent.critic = MLP(dyn.feat_dim, 5, units=8, layers=1)
    agent.model_opt = torch.optim.Adam(world.parameters())
    return agent


@pytest.mark.parametrize(
    "name, cls",
    [("adaptive", AdaptiveIntrinsicReward), ("lexa_style", LexaStyleIntrinsicReward),
     ("disagreement", DisagreementIntrinsicReward)],
)
def test_config_files_match_class_defaults_and_build(name, cls):
    cfg = _cfg(name)
    assert cfg["enable"] is True and cfg["typ"] == name
    params = inspect.signature(cls.__init__).parameters
    raw = yaml.safe_load((CONFIGS / "intrinsic" / f"{name}.yaml").read_text())[name]
    for key, value in raw.items():
        if key == "target" or isinstance(value, str):  # "auto" / interpolated from model.*
            continue
        if key == "center":  # the classes keep the published formula; training centres (see base.py)
            assert params[key].default is False and value is True
            continue
        assert params[key].default == pytest.approx(value), f"{name}.{key}"
    t = build_intrinsic(cfg, _agent())
    assert isinstance(t, cls)


def test_spec_defaults():
    cfg = _cfg("adaptive")["adaptive"]
    assert (cfg["beta_max"], cfg["rho"], cfg["epsilon"], cfg["clip_min"], cfg["clip_max"]) == (0.1, 0.1, 1e-6, -10.0, 10.0)
    cfg = _cfg("lexa_style")["lexa_style"]
    assert (cfg["decay"], cfg["visual_scale"], cfg["clip_weights"], cfg["stop_grad_weights"]) == (0.95, 1.0, True, True)
    dormant = yaml.safe_load((CONFIGS / "dormant" / "default.yaml").read_text())
    assert dormant["enable"] is False and dormant["tau"] == 0.025 and dormant["redo"]["enable"] is False


def test_none_builds_nothing():
    assert build_intrinsic(_cfg("none"), _agent()) is None
    assert build_dormant(yaml.safe_load((CONFIGS / "dormant" / "default.yaml").read_text()), _agent()) is None


def test_disagreement_sizes_come_from_the_dynamics():
    agent = _agent()
    t = build_intrinsic(_cfg("disagreement"), agent)
    xs = yaml.safe_load((CONFIGS / "model" / "XS.yaml").read_text())
    assert t.ensemble.weights[0].shape[-1] == xs["mlp_units"] and len(t.ensemble.weights) == xs["mlp_layers"] + 1
    dyn = agent.world_model.dynamics
    assert (t.feat_dim, t.action_dim, t.target_dim) == (dyn.feat_dim, 3, dyn.stoch_dim)
    assert t.target_key == ("posterior", "stoch")
    cfg = _cfg("disagreement")
    cfg["disagreement"]["target"] = "deter"
    assert build_intrinsic(cfg, agent).target_dim == 16
    cfg["disagreement"]["target"] = "nope"
    with pytest.raises(ValueError, match="intrinsic.disagreement.target"):
        build_intrinsic(cfg, agent)


def test_adaptive_uses_the_dynamics_uncertainty_when_absent():
    agent = _agent()
    t = build_intrinsic(_cfg("adaptive"), agent)
    state = agent.world_model.dynamics.initial(3)
    from tensordict import TensorDict

    t.eval()  # frozen statistics: level U = 1 and no centring baseline yet, so r_int = scale * u
    out = t(TensorDict({"reward": torch.zeros(3, 1), "state": state}, [3]))
    expected = t.scale * agent.world_model.dynamics.uncertainty(state) / (1.0 + t.epsilon)
    assert torch.allclose(out["intrinsic_reward"], expected)


def test_lexa_without_learned_std_fails_early():
    with pytest.raises(ValueError, match="learned_std"):
        build_intrinsic(_cfg("lexa_style"), _agent(learned_std=False))


def _with(name, block_key=None, **changes):
    cfg = _cfg(name)
    target = cfg[block_key] if block_key else cfg
    target.update(changes)
    return cfg


@pytest.mark.parametrize(
    "cfg, match",
    [
        (_with("adaptive", typ="curiosity"), r"intrinsic.typ: must be one of .*\(got 'curiosity'\)"),
        (_with("adaptive", "adaptive", beta_max=-0.1), "intrinsic.adaptive.beta_max"),
        (_with("lexa_style", "lexa_style", visual_scale=-1.0), "intrinsic.lexa_style.visual_scale"),
        (_with("disagreement", "disagreement", scale=float("inf")), "intrinsic.disagreement.scale"),
        (_with("adaptive", "adaptive", clip_min=5.0, clip_max=1.0), r"intrinsic.adaptive.clip_min: must be <= .*clip_max \(1.0\) \(got 5.0\)"),
        (_with("adaptive", "adaptive", rho=1.5), "intrinsic.adaptive.rho"),
        (_with("lexa_style", "lexa_style", decay=1.0), "intrinsic.lexa_style.decay"),
        (_with("adaptive", "adaptive", betamax=0.1), "intrinsic.adaptive.betamax: unknown config key"),
        (_with("adaptive", enable="yes"), "intrinsic.enable"),
        (_with("none", enable=True), r"intrinsic.typ: .*when intrinsic.enable is true.*\(got 'none'\)"),
        (_with("disagreement", "disagreement", ensemble_size=1), "ensemble_size"),
        (_with("lexa_style", "lexa_style", clip_weights="true"), "clip_weights"),
        (_with("adaptive", "adaptive", clip_min=20.0), r"intrinsic.adaptive.clip_min: must be <=.* \(got 20.0\)"),
        (_with("disagreement", "disagreement", center="yes"), "intrinsic.disagreement.center"),
        (_with("adaptive", "adaptive", center_decay=1.0), "intrinsic.adaptive.center_decay"),
        (_with("lexa_style", "lexa_style", min_spread=0.0), "intrinsic.lexa_style.min_spread"),
    ],
)
def test_bad_intrinsic_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_intrinsic(cfg, _agent())


@pytest.mark.parametrize("block, key", [("adaptive", "clip_min"), ("adaptive", "clip_max"), ("disagreement", "scale")])
def test_infinite_signed_numbers_fail_before_an_agent_is_built(block, key):
    value = float("-inf") if key == "clip_min" else float("inf")
    with pytest.raises(ConfigError, match=rf"intrinsic.{block}.{key}: must be a finite number"):
        check_intrinsic_config(_with(block, block, **{key: value}))


def test_dormant_builds_monitor_and_redo():
    agent = _agent()
    monitor = build_dormant({"enable": True, "tau": 0.1, "every": 7, "redo": {"enable": True, "reset_period": 3}}, agent)
    assert isinstance(monitor, DormantMonitor) and monitor.tau == 0.1 and monitor.every == 7
    assert monitor.redo is not None and monitor.redo.reset_period == 3 and monitor.redo.tau == 0.1
    assert monitor.redo.optimizers == [agent.model_opt]


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"enable": True, "tau": 1.5}, r"dormant.tau: must be in \[0, 1\]"),
        ({"enable": True, "tau": -0.01}, r"dormant.tau: must be in \[0, 1\]"),
        ({"enable": True, "every": 0}, "dormant.every"),
        ({"enable": True, "redo": {"enable": True, "reset_period": 0}}, "dormant.redo.reset_period"),
        ({"enable": True, "redo": {"enable": True, "tau": 2.0}}, "dormant.redo.tau"),
        ({"enable": False, "redo": {"enable": True}}, "ReDo needs the monitor"),
        ({"enable": True, "taux": 0.1}, "dormant.taux: unknown config key"),
    ],
)
def test_bad_dormant_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_dormant(cfg, _agent())


def test_hydra_composes_each_intrinsic_group():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        for name in ("none", "adaptive", "lexa_style", "disagreement"):
            cfg = compose(config_name="config", overrides=[f"intrinsic={name}", "dormant.enable=true"])
            assert cfg.intrinsic.typ == name and cfg.dormant.tau == 0.025
