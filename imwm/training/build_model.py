"""Config -> :class:`~imwm.agent.DreamerAgent`: the only place that reads ``cfg.model``, ``cfg.dynamics``, ``cfg.agent``.

``DYNAMICS_BUILDERS`` maps ``cfg.dynamics.name`` to a function
``builder(dynamics_cfg: dict, *, action_dim: int, embed_dim: int) -> Dynamics`` where
``dynamics_cfg`` is the resolved ``dynamics`` group without ``name`` (every other key is a
constructor kwarg). Adding a dynamics = one function + one entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from imwm.agent import Actor, Critic, DreamerAgent
from imwm.dynamics import RSSMDynamics
from imwm.objectives import WorldModelLoss
from imwm.world_model import WorldModel

__all__ = ["DYNAMICS_BUILDERS", "build_agent", "build_dynamics"]


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
        raise ValueError(f"unknown config key(s) {[f'{group}.{k}' for k in unknown]}; valid: {valid}")


def _build_rssm(dynamics_cfg: dict, *, action_dim: int, embed_dim: int) -> RSSMDynamics:
    _check_kwargs("dynamics", dynamics_cfg, RSSMDynamics.__init__, skip=("action_dim", "embed_dim"))
    return RSSMDynamics(**dynamics_cfg, action_dim=action_dim, embed_dim=embed_dim)


def _build_vta(dynamics_cfg: dict, *, action_dim: int, embed_dim: int):
    """VTA (imwm.vta.VTADynamics); the agent/trainer should call ``dynamics.set_progress(update)``."""
    from imwm.vta import BOUNDARY_OPTION_DEFAULTS, VTADynamics

    skip = ("action_dim", "embed_dim", *BOUNDARY_OPTION_DEFAULTS)  # boundary options arrive as **kwargs
    _check_kwargs("dynamics", dynamics_cfg, VTADynamics.__init__, skip=skip)
    return VTADynamics(**dynamics_cfg, action_dim=action_dim, embed_dim=embed_dim)


DYNAMICS_BUILDERS: dict[str, Callable[..., Any]] = {
    "rssm": _build_rssm,
    "vta": _build_vta,
}

# agent.* keys that are not DreamerAgent kwargs: they configure the networks and the world-model loss
_ACTOR_KEYS = {"actor_unimix": "unimix"}
_WORLD_MODEL_LOSS_KEYS = ("dyn_scale", "rep_scale", "free_bits", "image_scale", "reward_scale", "continue_scale")
_WORLD_MODEL_KEYS = ("learned_std",)


def build_dynamics(dynamics_cfg: Mapping, *, action_dim: int, embed_dim: int):
    """Build the dynamics named by ``dynamics_cfg["name"]`` through :data:`DYNAMICS_BUILDERS`."""
    dynamics_cfg = dict(dynamics_cfg)
    name = dynamics_cfg.pop("name", None)
    if name not in DYNAMICS_BUILDERS:
        raise ValueError(f"dynamics.name must be one of {sorted(DYNAMICS_BUILDERS)}, got {name!r}")
    return DYNAMICS_BUILDERS[name](dynamics_cfg, action_dim=action_dim, embed_dim=embed_dim)


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
        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({"model": {...}, "dynamics": {"name": "rssm", ...}, "agent": {...}})  # doctest: +SKIP
        >>> agent = build_agent(cfg, obs_shape=(4,), action_dim=2)  # doctest: +SKIP
    """
    plain = _plain(cfg)
    for group in ("model", "dynamics", "agent"):
        if not isinstance(plain.get(group), Mapping):
            raise ValueError(f"config group {group!r} is missing (need model, dynamics and agent)")
    model = dict(plain["model"])
    agent_cfg = dict(plain["agent"])
    if int(action_dim) != action_dim or action_dim < 1:
        raise ValueError(f"action_dim must be an integer >= 1, got {action_dim!r}")
    model_keys = ("deter", "hidden", "stoch", "classes", "cnn_depth", "mlp_units", "mlp_layers")
    missing = [f"model.{k}" for k in model_keys if k not in model]
    if missing:
        raise ValueError(f"missing config key(s) {missing}")
    unknown = sorted(set(model) - set(model_keys))
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'model.{k}' for k in unknown]}; valid: {list(model_keys)}")

    wm_loss_kwargs = {k: agent_cfg.pop(k) for k in _WORLD_MODEL_LOSS_KEYS if k in agent_cfg}
    explicit_std = bool(agent_cfg.pop("learned_std", False))
    # implied by LEXA-style, which reads the decoder's std (image or vector decoder alike)
    learned_std = explicit_std or _wants_decoder_std(plain)
    actor_kwargs = {new: agent_cfg.pop(old) for old, new in _ACTOR_KEYS.items() if old in agent_cfg}
    _check_kwargs("agent", agent_cfg, DreamerAgent.__init__, skip=("world_model", "world_model_loss", "actor", "critic"))
    _check_kwargs("agent", wm_loss_kwargs, WorldModelLoss.__init__, skip=("world_model",))

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
        actor = Actor(feat_dim, int(action_dim), mlp_units=model["mlp_units"], mlp_layers=model["mlp_layers"],
                      **actor_kwargs)
        critic = Critic(feat_dim, mlp_units=model["mlp_units"], mlp_layers=model["mlp_layers"])
        world_model_loss = WorldModelLoss(world_model, **wm_loss_kwargs)
        agent = DreamerAgent(world_model, world_model_loss, actor, critic, **agent_cfg)
    return agent
