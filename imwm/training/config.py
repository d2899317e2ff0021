"""Config validation: fail fast, before anything is built, with the full key in the message.

Hydra already rejects an unknown group option (``env=atary``) and command-line overrides of keys
that do not exist. This module catches what Hydra lets through: typos inside yaml files and
presets, wrong types, negative sizes, non-positive counts and fractions outside [0, 1].
Groups owned by other packages are checked by the same value rules; their builders reject
unknown keyword arguments themselves, and ``replay.*`` keys are checked against
``build_replay``'s signature here.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "validate_config",
    "to_plain",
    "shape_mismatches",
    "SHAPE_KEYS",
]

GROUPS = ("env", "model", "dynamics", "agent", "replay", "intrinsic", "dormant", "logger")
TOP_LEVEL = {
    "seed", "device", "threads", "run_name", "run_dir", "resume", "total_env_steps", "prefill",
    "train_ratio", "num_envs", "frames_per_batch", "eval_every", "eval_episodes", "eval_max_steps",
    "checkpoint_every", "log_every",
}
SCHEMAS = {
    "env": {"name", "task", "backend", "frame_skip", "sticky", "size", "full_action_space",
            "max_episode_frames", "kwargs"},
    "logger": {"backend", "project", "mode"},
    "model": {"deter", "hidden", "stoch", "classes", "cnn_depth", "mlp_units", "mlp_layers"},
}
# Keys a config may lack (configs saved before the key existed stay loadable).
OPTIONAL_KEYS = {"env": {"kwargs"}}
CHOICES = {
    "env.name": ("cartpole", "gym", "atari"),
    "env.backend": ("vector", "gym"),
    "logger.backend": ("wandb", "csv", "none"),
    "logger.mode": ("offline", "online", "disabled"),
}
BOOLS = {"resume", "env.full_action_space"}

# Value rules by leaf name, wherever the leaf sits in the tree.
POSITIVE_INTS = {
    "deter", "hidden", "stoch", "classes", "cnn_depth", "mlp_units", "mlp_layers", "blocks",
    "capacity", "batch_size", "batch_length", "horizon", "num_envs", "frames_per_batch",
    "total_env_steps", "eval_episodes", "eval_max_steps", "size", "frame_skip",
    "max_episode_frames", "max_seg_len", "max_seg_num", "every", "ensemble_size",
}
NON_NEGATIVE_INTS = {"prefill", "eval_every", "checkpoint_every", "log_every", "threads", "seed"}
FRACTIONS = {
    "sticky", "unimix", "actor_unimix", "gamma", "lmbda", "slow_critic_fraction", "retnorm_decay",
    "rho", "decay", "fast", "slow", "gate_min", "gate_max", "gate_init", "tau", "beta",
    "boundary_rate",
}
POSITIVE_NUMBERS = {"train_ratio", "model_lr", "actor_lr", "critic_lr", "model_eps", "actor_eps",
                    "critic_eps", "model_grad_clip", "actor_grad_clip", "critic_grad_clip"}
NON_NEGATIVE_SUFFIXES = ("_scale", "_coef")
NON_NEGATIVE_NUMBERS = {"free_bits", "epsilon", "entropy_lambda", "c"}

# Keys that fix parameter shapes (or the meaning of saved weights): a resume must match them.
SHAPE_KEYS = (
    "model", "dynamics", "env.name", "env.task", "env.size", "env.full_action_space", "env.kwargs",
    "agent.learned_std", "intrinsic.enable", "intrinsic.typ",
)


def to_plain(cfg: Any) -> dict:
    """Resolved plain ``dict`` of an OmegaConf config (or a dict, returned as a deep copy)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except ImportError:  # pragma: no cover - hydra-core is a dependency
        pass
    import copy

    return copy.deepcopy(dict(cfg))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_leaf(key: str, name: str, value: Any) -> None:
    if value is None:  # "unset / use the default"; the owning builder decides what that means
        return
    if name in POSITIVE_INTS:
        if not _is_int(value) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    elif name in NON_NEGATIVE_INTS:
        if not _is_int(value) or value < 0:
            raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
    elif name in FRACTIONS or key.split(".")[-2:-1] == ["fracs"]:
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} must be a number in [0, 1], got {value!r}")
    elif name in POSITIVE_NUMBERS:
        if not _is_number(value) or not value > 0 or math.isnan(value):
            raise ValueError(f"{key} must be a number > 0, got {value!r}")
    elif name in NON_NEGATIVE_NUMBERS or name.endswith(NON_NEGATIVE_SUFFIXES):
        if _is_number(value) and (value < 0 or math.isnan(value)):
            raise ValueError(f"{key} must be >= 0, got {value!r}")
        if not _is_number(value):
            raise ValueError(f"{key} must be a number, got {value!r}")


def _walk(prefix: str, node: Any) -> None:
    if isinstance(node, Mapping):
        for k, v in node.items():
            _walk(f"{prefix}.{k}" if prefix else str(k), v)
        return
    _check_leaf(prefix, prefix.rsplit(".", 1)[-1], node)


def _check_schema(group: str, node: Any) -> None:
    if not isinstance(node, Mapping):
        raise ValueError(f"config group {group!r} must be a mapping, got {node!r}")
    expected = SCHEMAS[group]
    unknown = sorted(set(node) - expected)
    if unknown:
        raise ValueError(
            f"unknown config key(s) {[f'{group}.{k}' for k in unknown]}; "
            f"valid keys of {group}: {sorted(expected)}"
        )
    missing = sorted(expected - set(node) - OPTIONAL_KEYS.get(group, set()))
    if missing:
        raise ValueError(f"missing config key(s) {[f'{group}.{k}' for k in missing]}")


def _check_replay_keys(replay: Mapping) -> None:
    try:
        from imwm.training.build_replay import build_replay
    except ImportError:
        return
    params = inspect.signature(build_replay).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = {n for n in params if n not in ("device", "seed")}
    unknown = sorted(set(replay) - allowed)
    if unknown:
        raise ValueError(
            f"unknown config key(s) {[f'replay.{k}' for k in unknown]}; "
            f"valid keys: {sorted(allowed)}"
        )


def validate_config(cfg: Any) -> dict:
    """Checks a training config; returns it as a resolved plain dict.

    Raises:
        ValueError: naming the full key (``replay.batch_size``) and the offending value.

    Example:
        >>> validate_config({**cfg, "prefill": -1})  # doctest: +SKIP
        ValueError: prefill must be an integer >= 0, got -1
    """
    plain = to_plain(cfg)
    unknown = sorted(set(plain) - TOP_LEVEL - set(GROUPS) - {"preset", "hydra"})
    if unknown:
        raise ValueError(f"unknown top-level config key(s) {unknown}; valid: {sorted(TOP_LEVEL)}")
    missing = sorted((TOP_LEVEL | set(GROUPS)) - set(plain))
    if missing:
        raise ValueError(f"missing config key(s) {missing}")
    for group in SCHEMAS:
        _check_schema(group, plain[group])
    for key, choices in CHOICES.items():
        group, leaf = key.split(".")
        if plain[group][leaf] not in choices:
            raise ValueError(f"{key} must be one of {list(choices)}, got {plain[group][leaf]!r}")
    for key in BOOLS:
        node = plain
        for part in key.split("."):
            node = node[part]
        if not isinstance(node, bool):
            raise ValueError(f"{key} must be true or false, got {node!r}")
    for group in GROUPS:
        if not isinstance(plain[group], Mapping):
            raise ValueError(f"config group {group!r} must be a mapping, got {plain[group]!r}")
    _walk("", {k: v for k, v in plain.items() if k not in ("hydra", "preset")})
    _check_replay_keys(plain["replay"])
    if plain["frames_per_batch"] % plain["num_envs"]:
        raise ValueError(
            f"frames_per_batch ({plain['frames_per_batch']}) must be a multiple of "
            f"num_envs ({plain['num_envs']})"
        )
    if not isinstance(plain["env"].get("kwargs", {}), Mapping):
        raise ValueError(f"env.kwargs must be a mapping of gymnasium.make arguments, got {plain['env']['kwargs']!r}")
    if plain["env"]["name"] in ("atari", "gym") and not plain["env"]["task"]:
        raise ValueError(f"env.task must be set when env.name is {plain['env']['name']!r}")
    try:
        import torch

        torch.device(plain["device"])
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be a torch device string, got {plain['device']!r}") from err
    return plain


def _lookup(tree: Mapping, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _flatten(prefix: str, node: Any, out: dict) -> dict:
    if isinstance(node, Mapping):
        for k, v in node.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = node
    return out


def shape_mismatches(saved: Mapping, current: Mapping) -> list[str]:
    """Full keys among :data:`SHAPE_KEYS` whose values differ between two plain configs."""
    diffs = []
    for key in SHAPE_KEYS:
        a = _flatten(key, _lookup(saved, key), {})
        b = _flatten(key, _lookup(current, key), {})
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                diffs.append(f"{k}: saved {a.get(k)!r}, now {b.get(k)!r}")
    return diffs


def config_changes(saved: Mapping, current: Mapping) -> list[str]:
    """Every full key whose value differs between two plain configs (``hydra`` ignored)."""
    a = _flatten("", {k: v for k, v in saved.items() if k != "hydra"}, {})
    b = _flatten("", {k: v for k, v in current.items() if k != "hydra"}, {})
    return [f"{k[1:]}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]
