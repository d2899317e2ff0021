"""Config -> intrinsic-reward transform and dormant-neuron monitor (``intrinsic.*``, ``dormant.*``).

``build_intrinsic(cfg.intrinsic, agent)`` returns the transform to set as ``agent.intrinsic`` (or
``None``); ``build_dormant(cfg.dormant, agent)`` returns a :class:`~imwm.diagnostics.DormantMonitor`
(with :class:`~imwm.diagnostics.ReDo` attached when ``dormant.redo.enable``) or ``None``. Every
bad value fails here, before training starts, with a :class:`~imwm.errors.ConfigError` (a
``ValueError``) naming the full config key; :func:`check_intrinsic_config` and
:func:`check_dormant_config` run those checks without an agent (``validate_config`` calls them).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch

from imwm.diagnostics import DormantMonitor, ReDo
from imwm.errors import ConfigError, config_keys, is_integer, unknown_keys
from imwm.intrinsic import AdaptiveIntrinsicReward, DisagreementIntrinsicReward, LexaStyleIntrinsicReward

INTRINSIC_TYPES = ("none", "adaptive", "lexa_style", "disagreement")

# Config keys of each block, one to one with the constructor keywords.
_CENTER_KEYS = ("center", "center_decay")  # every type: IntrinsicRewardTransform's centring
_BLOCK_KEYS = {
    "adaptive": ("beta_max", "rho", "epsilon", "clip_min", "clip_max", "trend_decay", "reward_floor", *_CENTER_KEYS),
    "lexa_style": ("decay", "visual_scale", "clip_weights", "stop_grad_weights", "min_spread", *_CENTER_KEYS),
    "disagreement": ("ensemble_size", "hidden", "layers", "lr", "grad_clip", "scale", "target", *_CENTER_KEYS),
}
_NON_NEGATIVE = {"beta_max", "reward_floor", "visual_scale"}
_FINITE = {"scale", "clip_min", "clip_max"}  # any sign (a negative disagreement scale penalises uncertainty)
_POSITIVE = {"epsilon", "lr", "grad_clip", "min_spread"}
_UNIT = {"rho": "[0, 1]", "trend_decay": "[0, 1)", "decay": "[0, 1)", "center_decay": "[0, 1)"}
_POSITIVE_INTS = {"hidden": 1, "layers": 1, "ensemble_size": 2}
_BOOLS = {"clip_weights", "stop_grad_weights", "center"}


def _plain(cfg: Any) -> dict:
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - hydra-core is a dependency
        pass
    return dict(cfg)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, "must be a number", value)
    value = float(value)
    if math.isnan(value):
        raise ConfigError(key, "must be a number", value)
    return value


def _validate_block(typ: str, block: dict) -> dict:
    unknown = sorted(set(block) - set(_BLOCK_KEYS[typ]))
    if unknown:
        raise unknown_keys(f"intrinsic.{typ}", unknown, list(_BLOCK_KEYS[typ]))
    for name, value in block.items():
        key = f"intrinsic.{typ}.{name}"
        if name in _BOOLS:
            if not isinstance(value, bool):
                raise ConfigError(key, "must be true or false", value)
        elif name in _POSITIVE_INTS:
            if not is_integer(value, _POSITIVE_INTS[name]):
                raise ConfigError(key, f"must be an integer >= {_POSITIVE_INTS[name]}", value)
        elif name == "target":
            if not isinstance(value, str) or not value:
                raise ConfigError(key, "must be 'auto' or a state key such as 'stoch'", value)
        else:
            number = _number(key, value)
            if name in _NON_NEGATIVE and not (0.0 <= number < math.inf):
                raise ConfigError(key, "must be >= 0 (a scale cannot be negative)", value)
            if name in _FINITE and not math.isfinite(number):
                raise ConfigError(key, "must be a finite number", value)
            if name in _POSITIVE and not number > 0.0:
                raise ConfigError(key, "must be > 0", value)
            if name in _UNIT:
                upper_open = _UNIT[name].endswith(")")
                if not (0.0 <= number and (number < 1.0 if upper_open else number <= 1.0)):
                    raise ConfigError(key, f"must be in {_UNIT[name]}", value)
    if typ == "adaptive" and ("clip_min" in block or "clip_max" in block):
        defaults = inspect.signature(AdaptiveIntrinsicReward).parameters
        clip_min = block.get("clip_min", defaults["clip_min"].default)
        clip_max = block.get("clip_max", defaults["clip_max"].default)
        if float(clip_min) > float(clip_max):
            raise ConfigError("intrinsic.adaptive.clip_min", f"must be <= intrinsic.adaptive.clip_max ({clip_max})",
                              clip_min)
    return block


def _device(agent) -> torch.device:
    try:
        return next(agent.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _disagreement_target(dynamics, target: str) -> tuple[tuple[str, str], int]:
    state = dynamics.initial(1)
    keys = list(state.keys())
    if target == "auto":
        target = next((k for k in ("stoch", "obs_stoch") if k in keys), None)
        if target is None:
            raise ConfigError("intrinsic.disagreement.target",
                              f"'auto' found neither 'stoch' nor 'obs_stoch' in the dynamics state keys {keys}; "
                              "set it to one of them", target)
    if target not in keys:
        raise ConfigError("intrinsic.disagreement.target", f"is not a dynamics state key; valid: {keys}", target)
    return ("posterior", target), int(state.get(target).shape[-1])


def check_intrinsic_config(intrinsic_cfg: Any) -> dict:
    """Checks the ``intrinsic`` group without an agent; returns it as a plain dict.

    Raises:
        ConfigError: naming the full key (``intrinsic.adaptive.rho``) and the value.
    """
    cfg = _plain(intrinsic_cfg)
    enable = cfg.get("enable", False)
    if not isinstance(enable, bool):
        raise ConfigError("intrinsic.enable", "must be true or false", enable)
    typ = cfg.get("typ", "none")
    if typ not in INTRINSIC_TYPES:
        raise ConfigError("intrinsic.typ", f"must be one of {list(INTRINSIC_TYPES)}", typ)
    unknown = sorted(set(cfg) - {"enable", "typ", *_BLOCK_KEYS})
    if unknown:
        raise unknown_keys("intrinsic", unknown, ["enable", "typ", *_BLOCK_KEYS])
    for name in _BLOCK_KEYS:  # validate every block present, not only the chosen one: typos fail early
        block = cfg.get(name)
        if block is not None and not isinstance(block, Mapping):
            raise ConfigError(f"intrinsic.{name}", "must be a mapping of constructor arguments", block)
        _validate_block(name, _plain(block) or {})
    if enable and typ == "none":
        raise ConfigError("intrinsic.typ", f"must be one of {list(INTRINSIC_TYPES[1:])} when intrinsic.enable "
                          "is true (or set intrinsic.enable=false)", typ)
    return cfg


def build_intrinsic(intrinsic_cfg: Any, agent: Any):
    """The intrinsic-reward transform described by ``intrinsic.*``, or ``None`` when disabled.

    Keys: ``enable`` (bool), ``typ`` (one of ``none``, ``adaptive``, ``lexa_style``,
    ``disagreement``) and one block per type whose keys are the class's keyword arguments
    (``disagreement.target``: ``auto`` picks the dynamics' ``stoch`` (RSSM) or ``obs_stoch`` (VTA)).

    Args:
        intrinsic_cfg: the ``intrinsic`` config node (DictConfig or dict).
        agent: the :class:`~imwm.agent.DreamerAgent` (its dynamics give sizes and ``uncertainty``).
    """
    cfg = check_intrinsic_config(intrinsic_cfg)
    enable, typ = cfg.get("enable", False), cfg.get("typ", "none")
    if not enable:
        return None
    block = dict(_plain(cfg.get(typ)) or {})
    dynamics = agent.world_model.dynamics
    if typ == "adaptive":
        with config_keys(f"intrinsic.{typ}", block):
            transform = AdaptiveIntrinsicReward(**block, uncertainty_fn=dynamics.uncertainty)
    elif typ == "lexa_style":
        decoder = getattr(agent.world_model, "decoder", None)
        if decoder is not None and getattr(decoder, "learned_std", True) is False:
            raise ConfigError("agent.learned_std", "intrinsic.typ=lexa_style reads the decoder's predicted std: "
                              "set agent.learned_std=true", False)
        with config_keys(f"intrinsic.{typ}", block):
            transform = LexaStyleIntrinsicReward(**block)
    else:
        target_key, target_dim = _disagreement_target(dynamics, block.pop("target", "auto"))
        with config_keys(f"intrinsic.{typ}", block):
            transform = DisagreementIntrinsicReward(
                feat_dim=int(dynamics.feat_dim),
                action_dim=int(dynamics.action_dim),
                target_dim=target_dim,
                target_key=target_key,
                feat_fn=dynamics.get_feat,
                **block,
            )
    return transform.to(_device(agent))


def check_dormant_config(dormant_cfg: Any) -> dict:
    """Checks the ``dormant`` group without an agent; returns it with defaults filled in
    (``{"enable", "tau", "every", "redo": {"enable", "reset_period", "tau"}}``).

    Raises:
        ConfigError: naming the full key (``dormant.redo.reset_period``) and the value.
    """
    cfg = _plain(dormant_cfg)
    unknown = sorted(set(cfg) - {"enable", "tau", "every", "redo"})
    if unknown:
        raise unknown_keys("dormant", unknown, ["enable", "tau", "every", "redo"])
    enable = cfg.get("enable", False)
    if not isinstance(enable, bool):
        raise ConfigError("dormant.enable", "must be true or false", enable)
    tau = _number("dormant.tau", cfg.get("tau", 0.025))
    if not 0.0 <= tau <= 1.0:
        raise ConfigError("dormant.tau", "must be in [0, 1]", cfg.get("tau"))
    every = cfg.get("every", 1000)
    if not is_integer(every, 1):
        raise ConfigError("dormant.every", "must be an integer >= 1", every)
    redo = cfg.get("redo")
    if redo is not None and not isinstance(redo, Mapping):
        raise ConfigError("dormant.redo", "must be a mapping", redo)
    redo = _plain(redo) or {}
    unknown = sorted(set(redo) - {"enable", "reset_period", "tau"})
    if unknown:
        raise unknown_keys("dormant.redo", unknown, ["enable", "reset_period", "tau"])
    redo_enable = redo.get("enable", False)
    if not isinstance(redo_enable, bool):
        raise ConfigError("dormant.redo.enable", "must be true or false", redo_enable)
    period = redo.get("reset_period", 1000)
    if not is_integer(period, 1):
        raise ConfigError("dormant.redo.reset_period", "must be an integer >= 1", period)
    redo_tau = redo.get("tau", None)
    if redo_tau is not None:
        redo_tau = _number("dormant.redo.tau", redo_tau)
        if not 0.0 <= redo_tau <= 1.0:
            raise ConfigError("dormant.redo.tau", "must be in [0, 1] or null", redo.get("tau"))
    if redo_enable and not enable:
        raise ConfigError("dormant.redo.enable", "needs dormant.enable=true: ReDo needs the monitor", redo_enable)
    return {"enable": enable, "tau": tau, "every": every,
            "redo": {"enable": redo_enable, "reset_period": period, "tau": redo_tau}}


def build_dormant(dormant_cfg: Any, agent: Any) -> DormantMonitor | None:
    """The dormant-neuron monitor described by ``dormant.*``, or ``None`` when disabled.

    Keys: ``enable``, ``tau`` in [0, 1], ``every`` (updates between measurements, >= 1),
    ``redo: {enable, reset_period, tau}`` (``redo.tau`` null = ``dormant.tau``).
    """
    cfg = check_dormant_config(dormant_cfg)
    if not cfg["enable"]:
        return None
    tau, every, redo = cfg["tau"], cfg["every"], cfg["redo"]
    redo_enable, period, redo_tau = redo["enable"], redo["reset_period"], redo["tau"]
    monitor = DormantMonitor(agent, tau=tau, every=every)
    if redo_enable:
        optimizers = [getattr(agent, n) for n in ("model_opt", "actor_opt", "critic_opt") if hasattr(agent, n)]
        ReDo(monitor, optimizers, reset_period=period, tau=redo_tau)
    return monitor
