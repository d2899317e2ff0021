"""Config -> :class:`~imwm.agent.DreamerAgent`: the only place that reads ``cfg.model``, ``cfg.dynamics``, ``cfg.agent``.

``DYNAMICS_BUILDERS`` maps ``cfg.dynamics.name`` to a function
``builder(dynamics_cfg: dict, *, action_dim: int, embed_dim: int) -> Dynamics`` where
``dynamics_cfg`` is the resolved ``dynamics`` group without ``name`` (every other key is a
constructor kwarg). Adding a dynamics = one function + one entry (and, optionally, a
``DYNAMICS_CHECKS`` entry that checks the group without building it).

Errors in the config are :class:`~imwm.errors.ConfigError` naming the full key
(``dynamics.boundary_temp``); :func:`check_model_config` runs every check without building anything
(``validate_config`` calls it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from imwm.agent import Actor, Critic, DreamerAgent
from imwm.agent.compile import check_compile_with_boundary_grad, parse_compile_mode
from imwm.dynamics import RSSMDynamics
from imwm.errors import ConfigError, check_integer, config_keys, unknown_keys
from imwm.objectives import WorldModelLoss
from imwm.world_model import WorldModel

__all__ = ["DYNAMICS_BUILDERS", "DYNAMICS_CHECKS", "build_agent", "build_dynamics", "check_model_config"]


def _plain(cfg: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except ImportError:  # pragma: no cover - hydra-core is a dependency
        pass
    if not isinstance(cfg, Mapping):
        raise TypeError(f"config must be a mapping or an OmegaConf DictConfig, got {type(cfg).__name__}")
    return {k: (_plain(v) if isinstance(v, Mapping) else v) for k, v in cfg.items()}


def _check_kwargs(group: str, given: Mapping, fn: Callable, *, skip: Sequence[str] = ()) -> None:
    """Reject keys the constructor does not take, naming the full config key."""
    params = inspect.signature(fn).parameters
    accepted = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = sorted(set(given) - accepted - set(skip))
    if unknown:
        valid = sorted(accepted - {"self"} - set(skip))
        raise unknown_keys(group, unknown, valid)


def _check_rssm(dynamics_cfg: Mapping) -> None:
    _check_kwargs("dynamics", dynamics_cfg, RSSMDynamics.__init__, skip=("action_dim", "embed_dim"))
    defaults = inspect.signature(RSSMDynamics.__init__).parameters
    deter = dynamics_cfg.get("deter", defaults["deter"].default)
    blocks = dynamics_cfg.get("blocks", defaults["blocks"].default)
    if isinstance(deter, int) and isinstance(blocks, int) and blocks >= 1 and deter % blocks:
        raise ConfigError("dynamics.blocks", f"must divide dynamics.deter ({deter})", blocks)
    unimix = dynamics_cfg.get("unimix", 0.0)
    if isinstance(unimix, (int, float)) and not 0.0 <= unimix < 1.0:
        raise ConfigError("dynamics.unimix", "must be in [0, 1)", unimix)


def _build_rssm(dynamics_cfg: dict, *, action_dim: int, embed_dim: int) -> RSSMDynamics:
    _check_rssm(dynamics_cfg)
    with config_keys("dynamics", dynamics_cfg):
        return RSSMDynamics(**dynamics_cfg, action_dim=action_dim, embed_dim=embed_dim)


def _check_vta(dynamics_cfg: Mapping) -> None:
    from imwm.vta import BOUNDARY_OPTION_DEFAULTS, VTADynamics
    from imwm.vta.options import check_boundary_option_values

    skip = ("action_dim", "embed_dim", *BOUNDARY_OPTION_DEFAULTS)  # boundary options arrive as **kwargs
    _check_kwargs("dynamics", dynamics_cfg, VTADynamics.__init__, skip=skip)
    from imwm.vta.local_gradient import check_boundary_grad

    with config_keys("dynamics", dynamics_cfg):
        check_boundary_grad(dynamics_cfg.get("boundary_grad", "straight_through"))
    with config_keys("dynamics"):
        check_boundary_option_values({k: v for k, v in dynamics_cfg.items() if k in BOUNDARY_OPTION_DEFAULTS})
    if dynamics_cfg.get("boundary_pixel_view", 0) != 0:  # the agent's world model has no frame-change encoder yet
        raise ConfigError("dynamics.boundary_pixel_view", "must be 0 in the agent (only train_vta.py's models "
                          "give the detector a frame-change view)", dynamics_cfg["boundary_pixel_view"])


def _build_vta(dynamics_cfg: dict, *, action_dim: int, embed_dim: int):
    """VTA (imwm.vta.VTADynamics); the agent/trainer should call ``dynamics.set_progress(update)``."""
    from imwm.vta import VTADynamics

    _check_vta(dynamics_cfg)
    with config_keys("dynamics", dynamics_cfg):
        return VTADynamics(**dynamics_cfg, action_dim=action_dim, embed_dim=embed_dim)


DYNAMICS_BUILDERS: dict[str, Callable[..., Any]] = {
    "rssm": _build_rssm,
    "vta": _build_vta,
}
# name -> check(dynamics_cfg without name): raises ConfigError, builds nothing (optional per dynamics)
DYNAMICS_CHECKS: dict[str, Callable[[Mapping], None]] = {
    "rssm": _check_rssm,
    "vta": _check_vta,
}

# agent.* keys that are not DreamerAgent kwargs: they configure the networks and the world-model loss
_ACTOR_KEYS = {"actor_unimix": "unimix", "actor_out_scale": "out_scale"}
_WORLD_MODEL_LOSS_KEYS = ("dyn_scale", "rep_scale", "free_bits", "image_scale", "reward_scale", "continue_scale",
                          "terminal_weight")
_WORLD_MODEL_KEYS = ("learned_std",)


def build_dynamics(dynamics_cfg: Mapping, *, action_dim: int, embed_dim: int):
    """Build the dynamics named by ``dynamics_cfg["name"]`` through :data:`DYNAMICS_BUILDERS`."""
    dynamics_cfg = dict(dynamics_cfg)
    name = dynamics_cfg.pop("name", None)
    if name not in DYNAMICS_BUILDERS:
        raise ConfigError("dynamics.name", f"must be one of {sorted(DYNAMICS_BUILDERS)}", name)
    return DYNAMICS_BUILDERS[name](dynamics_cfg, action_dim=action_dim, embed_dim=embed_dim)


_MODEL_KEYS = ("deter", "hidden", "stoch", "classes", "cnn_depth", "mlp_units", "mlp_layers")


def _split_agent_cfg(agent_cfg: Mapping) -> tuple[dict, dict, bool, dict]:
    """``agent.*`` -> (DreamerAgent kwargs, WorldModelLoss kwargs, learned_std, Actor kwargs), checked."""
    agent_cfg = dict(agent_cfg)
    wm_loss_kwargs = {k: agent_cfg.pop(k) for k in _WORLD_MODEL_LOSS_KEYS if k in agent_cfg}
    learned_std = agent_cfg.pop("learned_std", False)
    if not isinstance(learned_std, bool):
        raise ConfigError("agent.learned_std", "must be true or false", learned_std)
    actor_kwargs = {new: agent_cfg.pop(old) for old, new in _ACTOR_KEYS.items() if old in agent_cfg}
    unimix = actor_kwargs.get("unimix", 0.0)
    if isinstance(unimix, (int, float)) and not 0.0 <= unimix < 1.0:
        raise ConfigError("agent.actor_unimix", "must be in [0, 1)", unimix)
    skip = {"self", "world_model", "world_model_loss", "actor", "critic"}
    params = inspect.signature(DreamerAgent.__init__).parameters
    accepted = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - skip
    unknown = sorted(set(agent_cfg) - accepted)
    if unknown:
        valid = sorted(accepted | set(_WORLD_MODEL_LOSS_KEYS) | set(_WORLD_MODEL_KEYS) | set(_ACTOR_KEYS))
        raise unknown_keys("agent", unknown, valid)
    _check_kwargs("agent", wm_loss_kwargs, WorldModelLoss.__init__, skip=("world_model",))
    return agent_cfg, wm_loss_kwargs, learned_std, actor_kwargs


def _check_model_group(model: Any) -> dict:
    if not isinstance(model, Mapping):
        raise ConfigError("model", "must be a mapping (a config group)", model)
    missing = [f"model.{k}" for k in _MODEL_KEYS if k not in model]
    if missing:
        raise ConfigError(", ".join(missing), "missing config key" + ("s" if len(missing) > 1 else ""))
    unknown = sorted(set(model) - set(_MODEL_KEYS))
    if unknown:
        raise unknown_keys("model", unknown, list(_MODEL_KEYS))
    return dict(model)


def check_model_config(cfg: Any) -> None:
    """Checks the ``model``, ``dynamics`` and ``agent`` groups without building anything.

    Raises:
        ConfigError: naming the full key (``dynamics.boundary_temp``, ``agent.horizon``) and the value.

    Example:
        >>> model = dict(deter=8, hidden=8, stoch=4, classes=4, cnn_depth=4, mlp_units=8,
        ...              mlp_layers=1)
        >>> check_model_config({"model": model, "dynamics": {"name": "rssm"}, "agent": {}})  # valid
        >>> rssm = {"name": "rssm", "deter": 8, "blocks": 3}
        >>> check_model_config({"model": model, "dynamics": rssm, "agent": {}})
        Traceback (most recent call last):
        ...
        imwm.errors.ConfigError: dynamics.blocks: must divide dynamics.deter (8) (got 3)
    """
    plain = _plain(cfg)
    for group in ("model", "dynamics", "agent"):
        if not isinstance(plain.get(group), Mapping):
            raise ConfigError(group, "must be a mapping (a config group); need model, dynamics and agent",
                              plain.get(group))
    _check_model_group(plain["model"])
    dynamics_cfg = dict(plain["dynamics"])
    name = dynamics_cfg.pop("name", None)
    if name not in DYNAMICS_BUILDERS:
        raise ConfigError("dynamics.name", f"must be one of {sorted(DYNAMICS_BUILDERS)}", name)
    if name in DYNAMICS_CHECKS:
        DYNAMICS_CHECKS[name](dynamics_cfg)
    agent_cfg = _split_agent_cfg(plain["agent"])[0]
    with config_keys("agent", agent_cfg):
        check_compile_with_boundary_grad(parse_compile_mode(agent_cfg.get("compile", False)),
                                         dynamics_cfg.get("boundary_grad"))


def _wants_decoder_std(plain: dict) -> bool:
    intrinsic = plain.get("intrinsic") or {}
    return bool(intrinsic.get("enable")) and intrinsic.get("typ") == "lexa_style"


def build_agent(
    cfg: Any, *, obs_shape: Sequence[int], action_dim: int, device: str | torch.device = "cpu"
) -> DreamerAgent:
    """Build the DreamerV3 agent from the ``model``, ``dynamics`` and ``agent`` config groups.

    Args:
        cfg: the training config (OmegaConf or a plain dict) with groups ``model``
            (deter, hidden, stoch, classes, cnn_depth, mlp_units, mlp_layers), ``dynamics``
            (``name`` + kwargs of the dynamics class) and ``agent`` (configs/agent/default.yaml).
        obs_shape: one observation's shape: ``(3, 64, 64)`` uint8 frames or ``(D,)`` vectors.
        action_dim: number of discrete actions.
        device: where the networks live.

    The decoder predicts a std (per pixel for images, per dim for vectors) when
    ``agent.learned_std`` is true or when the config enables the LEXA-style intrinsic reward
    (``intrinsic.enable`` and ``intrinsic.typ == "lexa_style"``), which reads it.

    Example:
        >>> from imwm.configs import compose_config
        >>> agent = build_agent(compose_config(["preset=debug"]), obs_shape=(4,), action_dim=2)
        >>> type(agent.world_model.dynamics).__name__
        'RSSMDynamics'
    """
    plain = _plain(cfg)
    for group in ("model", "dynamics", "agent"):
        if not isinstance(plain.get(group), Mapping):
            raise ConfigError(group, "must be a mapping (a config group); need model, dynamics and agent",
                              plain.get(group))
    check_integer("action_dim", action_dim)
    model = _check_model_group(plain["model"])
    agent_cfg, wm_loss_kwargs, explicit_std, actor_kwargs = _split_agent_cfg(plain["agent"])
    # implied by LEXA-style, which reads the decoder's std (image or vector decoder alike)
    learned_std = explicit_std or _wants_decoder_std(plain)

    obs_shape = tuple(int(s) for s in obs_shape)
    with torch.device(device):
        world_model = WorldModel.build(
            obs_shape,
            int(action_dim),
            lambda embed_dim: build_dynamics(plain["dynamics"], action_dim=int(action_dim), embed_dim=embed_dim),
            cnn_depth=model["cnn_depth"],
            mlp_units=model["mlp_units"],
            mlp_layers=model["mlp_layers"],
            learned_std=learned_std,
        )
        feat_dim = world_model.dynamics.feat_dim
        with config_keys("agent", {**agent_cfg, **wm_loss_kwargs, "actor_unimix": actor_kwargs.get("unimix")}):
            actor = Actor(feat_dim, int(action_dim), mlp_units=model["mlp_units"], mlp_layers=model["mlp_layers"],
                          **actor_kwargs)
            critic = Critic(feat_dim, mlp_units=model["mlp_units"], mlp_layers=model["mlp_layers"])
            # DreamerV3's contdisc: the continue head's target carries the discount (DreamerAgent checks)
            if agent_cfg.get("contdisc", False):
                agent_defaults = inspect.signature(DreamerAgent.__init__).parameters
                wm_loss_kwargs["continue_discount"] = agent_cfg.get("gamma", agent_defaults["gamma"].default)
            world_model_loss = WorldModelLoss(world_model, **wm_loss_kwargs)
            agent = DreamerAgent(world_model, world_model_loss, actor, critic, **agent_cfg)
    return agent
