"""Config -> intrinsic-reward transform and dormant-neuron monitor (``intrinsic.*``, ``dormant.*``).

``build_intrinsic(cfg.intrinsic, agent)`` returns the transform to set as ``agent.intrinsic`` (or
``None``); ``build_dormant(cfg.dormant, agent)`` returns a :class:`~imwm.diagnostics.DormantMonitor`
(with :class:`~imwm.diagnostics.ReDo` attached when ``dormant.redo.enable``) or ``None``. Every
bad value fails here, before training starts, with a ``ValueError`` naming the full config key.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from imwm.diagnostics import DormantMonitor, ReDo
from imwm.intrinsic import AdaptiveIntrinsicReward, DisagreementIntrinsicReward, LexaStyleIntrinsicReward

INTRINSIC_TYPES = ("none", "adaptive", "lexa_style", "disagreement")

# Config keys of each block, one to one with the constructor keywords.
_CENTER_KEYS = ("center", "center_decay")  # every type: IntrinsicRewardTransform's centring
_BLOCK_KEYS = {
    "adaptive": ("beta_max", "rho", "epsilon", "clip_min", "clip_max", "trend_decay", "reward_floor", *_CENTER_KEYS),
    "lexa_style": ("decay", "visual_scale", "clip_weights", "stop_grad_weights", "min_spread", *_CENTER_KEYS),
    "disagreement": ("ensemble_size", "hidden", "layers", "lr", "grad_clip", "scale", "target", *_CENTER_KEYS),
}
_NON_NEGATIVE = {"beta_max", "reward_floor", "visual_scale", "scale"}
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
        raise ValueError(f"{key} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{key} must be a number, got nan")
    return value


def _validate_block(typ: str, block: dict) -> dict:
    unknown = sorted(set(block) - set(_BLOCK_KEYS[typ]))
    if unknown:
        raise ValueError(f"intrinsic.{typ} has unknown keys {unknown}; valid keys: {list(_BLOCK_KEYS[typ])}")
    for name, value in block.items():
        key = f"intrinsic.{typ}.{name}"
        if name in _BOOLS:
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
        elif name in _POSITIVE_INTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < _POSITIVE_INTS[name]:
                raise ValueError(f"{key} must be an integer >= {_POSITIVE_INTS[name]}, got {value!r}")
        elif name == "target":
            if not isinstance(value, str) or not value:
                raise ValueError(f"{key} must be 'auto' or a state key such as 'stoch', got {value!r}")
        else:
            number = _number(key, value)
            if name in _NON_NEGATIVE and not (0.0 <= number < math.inf):
                raise ValueError(f"{key} must be >= 0 (a scale cannot be negative), got {value!r}")
            if name in _POSITIVE and not number > 0.0:
                raise ValueError(f"{key} must be > 0, got {value!r}")
            if name in _UNIT:
                upper_open = _UNIT[name].endswith(")")
                if not (0.0 <= number and (number < 1.0 if upper_open else number <= 1.0)):
                    raise ValueError(f"{key} must be in {_UNIT[name]}, got {value!r}")
    if typ == "adaptive" and ("clip_min" in block or "clip_max" in block):
        defaults = inspect.signature(AdaptiveIntrinsicReward).parameters
        clip_min = block.get("clip_min", defaults["clip_min"].default)
        clip_max = block.get("clip_max", defaults["clip_max"].default)
        if float(clip_min) > float(clip_max):
            raise ValueError(
                f"intrinsic.adaptive.clip_min ({clip_min}) must be <= intrinsic.adaptive.clip_max ({clip_max})"
            )
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
            raise ValueError(
                f"intrinsic.disagreement.target='auto' found neither 'stoch' nor 'obs_stoch' in the dynamics "
                f"state keys {keys}; set intrinsic.disagreement.target to one of them"
            )
    if target not in keys:
        raise ValueError(f"intrinsic.disagreement.target={target!r} is not a dynamics state key; valid: {keys}")
    return ("posterior", target), int(state.get(target).shape[-1])


def build_intrinsic(intrinsic_cfg: Any, agent: Any):
    """The intrinsic-reward transform described by ``intrinsic.*``, or ``None`` when disabled.

    Keys: ``enable`` (bool), ``typ`` (one of ``none``, ``adaptive``, ``lexa_style``,
    ``disagreement``) and one block per type whose keys are the class's keyword arguments
    (``disagreement.target``: ``auto`` picks the dynamics' ``stoch`` (RSSM) or ``obs_stoch`` (VTA)).

    Args:
        intrinsic_cfg: the ``intrinsic`` config node (DictConfig or dict).
        agent: the :class:`~imwm.agent.DreamerAgent` (its dynamics give sizes and ``uncertainty``).
    """
    cfg = _plain(intrinsic_cfg)
    enable = cfg.get("enable", False)
    if not isinstance(enable, bool):
        raise ValueError(f"intrinsic.enable must be true or false, got {enable!r}")
    typ = cfg.get("typ", "none")
    if typ not in INTRINSIC_TYPES:
        raise ValueError(f"intrinsic.typ must be one of {list(INTRINSIC_TYPES)}, got {typ!r}")
    unknown = sorted(set(cfg) - {"enable", "typ", *_BLOCK_KEYS})
    if unknown:
        raise ValueError(f"intrinsic has unknown keys {unknown}; valid: ['enable', 'typ', {', '.join(map(repr, _BLOCK_KEYS))}]")
    for name in _BLOCK_KEYS:  # validate every block present, not only the chosen one: typos fail early
        _validate_block(name, _plain(cfg.get(name)) or {})
    if not enable:
        return None
    if typ == "none":
        raise ValueError("intrinsic.enable is true but intrinsic.typ is 'none'; choose one of "
                         f"{list(INTRINSIC_TYPES[1:])} or set intrinsic.enable=false")
    block = dict(_plain(cfg.get(typ)) or {})
    dynamics = agent.world_model.dynamics
    if typ == "adaptive":
        transform = AdaptiveIntrinsicReward(**block, uncertainty_fn=dynamics.uncertainty)
    elif typ == "lexa_style":
        decoder = getattr(agent.world_model, "decoder", None)
        if decoder is not None and getattr(decoder, "learned_std", True) is False:
            raise ValueError(
                "intrinsic.typ=lexa_style reads the decoder's predicted std: set agent.learned_std=true"
            )
        transform = LexaStyleIntrinsicReward(**block)
    else:
        target_key, target_dim = _disagreement_target(dynamics, block.pop("target", "auto"))
        transform = DisagreementIntrinsicReward(
            feat_dim=int(dynamics.feat_dim),
            action_dim=int(dynamics.action_dim),
            target_dim=target_dim,
            target_key=target_key,
            feat_fn=dynamics.get_feat,
            **block,
        )
    return transform.to(_device(agent))


def build_dormant(dormant_cfg: Any, agent: Any) -> DormantMonitor | None:
    """The dormant-neuron monitor described by ``dormant.*``, or ``None`` when disabled.

    Keys: ``enable``, ``tau`` in [0, 1], ``every`` (updates between measurements, >= 1),
    ``redo: {enable, reset_period, tau}`` (``redo.tau`` null = ``dormant.tau``).
    """
    cfg = _plain(dormant_cfg)
    unknown = sorted(set(cfg) - {"enable", "tau", "every", "redo"})
    if unknown:
        raise ValueError(f"dormant has unknown keys {unknown}; valid: ['enable', 'tau', 'every', 'redo']")
    enable = cfg.get("enable", False)
    if not isinstance(enable, bool):
        raise ValueError(f"dormant.enable must be true or false, got {enable!r}")
    tau = _number("dormant.tau", cfg.get("tau", 0.025))
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"dormant.tau must be in [0, 1], got {cfg.get('tau')!r}")
    every = cfg.get("every", 1000)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"dormant.every must be an integer >= 1, got {every!r}")
    redo = _plain(cfg.get("redo")) or {}
    unknown = sorted(set(redo) - {"enable", "reset_period", "tau"})
    if unknown:
        raise ValueError(f"dormant.redo has unknown keys {unknown}; valid: ['enable', 'reset_period', 'tau']")
    redo_enable = redo.get("enable", False)
    if not isinstance(redo_enable, bool):
        raise ValueError(f"dormant.redo.enable must be true or false, got {redo_enable!r}")
    period = redo.get("reset_period", 1000)
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ValueError(f"dormant.redo.reset_period must be an integer >= 1, got {period!r}")
    redo_tau = redo.get("tau", None)
    if redo_tau is not None:
        redo_tau = _number("dormant.redo.tau", redo_tau)
        if not 0.0 <= redo_tau <= 1.0:
            raise ValueError(f"dormant.redo.tau must be in [0, 1] or null, got {redo.get('tau')!r}")
    if not enable:
        if redo_enable:
            raise ValueError("dormant.redo.enable is true but dormant.enable is false: ReDo needs the monitor")
        return None
    monitor = DormantMonitor(agent, tau=tau, every=every)
    if redo_enable:
        optimizers = [getattr(agent, n) for n in ("model_opt", "actor_opt", "critic_opt") if hasattr(agent, n)]
        ReDo(monitor, optimizers, reset_period=period, tau=redo_tau)
    return monitor
