"""Config validation: fail fast, before anything is built, with the full key in the message.

Hydra already rejects an unknown group option (``env=atary``) and command-line overrides of keys
that do not exist. This module catches what Hydra lets through: typos inside yaml files and
presets, wrong types, negative sizes, non-positive counts and fractions outside [0, 1], a device
this machine does not have, env keys the chosen env ignores. Groups owned by the builders are
checked by their own ``check_*_config`` functions (``build_replay``, ``build_model``,
``build_intrinsic``), called from here, so every bad value fails before anything is built.

Every error is a :class:`~imwm.errors.ConfigError` (a ``ValueError``):
``"<full.dotted.key>: <what is wrong> (got <value>)"``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from imwm.errors import ConfigError, is_integer, unknown_keys

__all__ = [
    "ConfigError",
    "check_device",
    "validate_config",
    "to_plain",
    "shape_mismatches",
    "SHAPE_KEYS",
]

GROUPS = ("env", "model", "dynamics", "agent", "replay", "intrinsic", "dormant", "logger")
TOP_LEVEL = {
    "seed", "device", "threads", "run_name", "run_dir", "resume", "total_env_steps", "prefill",
    "train_ratio", "num_envs", "frames_per_batch", "eval_every", "eval_episodes", "eval_max_steps",
    "eval_sample", "checkpoint_every", "log_every", "collector", "collector_workers",
}
SCHEMAS = {
    "env": {"name", "task", "backend", "frame_skip", "sticky", "size", "full_action_space",
            "max_episode_frames", "kwargs"},
    "logger": {"backend", "project", "mode", "entity", "group", "tags", "notes", "job_type"},
    "model": {"deter", "hidden", "stoch", "classes", "cnn_depth", "mlp_units", "mlp_layers"},
}
# Keys a config may lack (configs saved before the key existed stay loadable).
OPTIONAL_KEYS = {"env": {"kwargs"}}
OPTIONAL_TOP_LEVEL = {"collector": "sync", "collector_workers": 1, "eval_sample": False}
COLLECTORS = ("sync", "async", "distributed")  # imwm.training.collectors builds them
CHOICES = {
    "env.name": ("cartpole", "gym", "atari"),
    "env.backend": ("vector", "gym"),
    "logger.backend": ("wandb", "csv", "none"),
    "logger.mode": ("offline", "online", "disabled"),
    "agent.optimizer": ("adam", "laprop"),
}
BOOLS = {"env.full_action_space", "eval_sample"}

# env.* keys each env.name reads (imwm.envs.factory.make_env): ``kwargs`` go to gymnasium.make,
# the Atari keys to imwm.envs.atari.make_atari_env.
ENV_READS = {
    "cartpole": {"name", "kwargs"},
    "gym": {"name", "task", "kwargs"},
    "atari": {"name", "task", "backend", "frame_skip", "sticky", "size", "full_action_space",
              "max_episode_frames"},
}
# The value a key must keep when the chosen env ignores it (configs/env/cartpole.yaml): any other
# value would be silently ignored, so it is refused.
ENV_IGNORED_DEFAULTS = {
    "task": "CartPole-v1", "backend": "vector", "frame_skip": 1, "sticky": 0.0, "size": 64,
    "full_action_space": False, "max_episode_frames": 108000, "kwargs": {},
}

# Value rules by leaf name, wherever the leaf sits in the tree.
POSITIVE_INTS = {
    "deter", "hidden", "stoch", "classes", "cnn_depth", "mlp_units", "mlp_layers", "blocks",
    "capacity", "batch_size", "batch_length", "horizon", "num_envs", "frames_per_batch",
    "total_env_steps", "eval_episodes", "eval_max_steps", "size", "frame_skip",
    "max_episode_frames", "max_seg_len", "max_seg_num", "every", "ensemble_size", "max_nonfinite_updates",
}
NON_NEGATIVE_INTS = {"prefill", "eval_every", "checkpoint_every", "log_every", "threads", "seed",
                     "warmup"}
FRACTIONS = {
    "sticky", "unimix", "actor_unimix", "gamma", "lmbda", "slow_critic_fraction", "retnorm_decay",
    "rho", "decay", "fast", "slow", "gate_min", "gate_max", "gate_init", "tau",
    "boundary_rate",  # (replay.curious.beta, in (0, 1], is build_replay's check)
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
    """Resolved plain ``dict`` of an OmegaConf config (or a dict, returned as a deep copy).

    Raises:
        ConfigError: a mandatory value (``???``) is missing or an interpolation does not resolve.

    Example:
        >>> from omegaconf import OmegaConf
        >>> to_plain(OmegaConf.create({"seed": 1, "env": {"seed": "${seed}"}}))
        {'seed': 1, 'env': {'seed': 1}}
        >>> to_plain(OmegaConf.create({"run": {"dir": "???"}}))
        Traceback (most recent call last):
        ...
        imwm.errors.ConfigError: run.dir: Missing mandatory value: dir
    """
    try:
        from omegaconf import DictConfig, OmegaConf
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:  # pragma: no cover - hydra-core is a dependency
        DictConfig = None
    if DictConfig is not None and isinstance(cfg, DictConfig):
        try:
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except OmegaConfBaseException as err:
            what = (getattr(err, "msg", None) or str(err)).splitlines()[0]
            raise ConfigError(getattr(err, "full_key", None) or "config", what) from err
    import copy

    return copy.deepcopy(dict(cfg))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_leaf(key: str, name: str, value: Any) -> None:
    if value is None:  # "unset / use the default"; the owning builder decides what that means
        return
    if name in POSITIVE_INTS:
        if not is_integer(value, 1):
            raise ConfigError(key, "must be an integer >= 1", value)
    elif name in NON_NEGATIVE_INTS:
        if not is_integer(value, 0):
            raise ConfigError(key, "must be an integer >= 0", value)
    elif name in FRACTIONS or key.split(".")[-2:-1] == ["fracs"]:
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ConfigError(key, "must be a number in [0, 1]", value)
    elif name in POSITIVE_NUMBERS:
        if not _is_number(value) or not value > 0 or math.isnan(value):
            raise ConfigError(key, "must be a number > 0", value)
    elif name in NON_NEGATIVE_NUMBERS or name.endswith(NON_NEGATIVE_SUFFIXES):
        if not _is_number(value):
            raise ConfigError(key, "must be a number", value)
        if value < 0 or math.isnan(value):
            raise ConfigError(key, "must be >= 0", value)


def _walk(prefix: str, node: Any) -> None:
    if isinstance(node, Mapping):
        for k, v in node.items():
            _walk(f"{prefix}.{k}" if prefix else str(k), v)
        return
    _check_leaf(prefix, prefix.rsplit(".", 1)[-1], node)


def _missing_keys(keys: list[str]) -> ConfigError:
    return ConfigError(", ".join(keys), "missing config key" + ("s" if len(keys) > 1 else ""))


def _check_schema(group: str, node: Any) -> None:
    if not isinstance(node, Mapping):
        raise ConfigError(group, "must be a mapping (a config group)", node)
    expected = SCHEMAS[group]
    unknown = sorted(set(node) - expected)
    if unknown:
        raise unknown_keys(group, unknown, sorted(expected))
    missing = sorted(expected - set(node) - OPTIONAL_KEYS.get(group, set()))
    if missing:
        raise _missing_keys([f"{group}.{k}" for k in missing])


_DEVICE = re.compile(r"^(?P<kind>cpu|mps|cuda)(?::(?P<index>\d+))?$")


def check_device(device: Any, key: str = "device") -> None:
    """Refuses a device string torch cannot use here: not ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps``,
    CUDA on a torch build (or machine) without it, or a CUDA index beyond the device count.

    Example:
        >>> check_device("cpu")  # usable: nothing happens
        >>> check_device("gpu:0")
        Traceback (most recent call last):
        ...
        imwm.errors.ConfigError: device: must be cpu, cuda, cuda:N or mps (got 'gpu:0')
    """
    match = _DEVICE.match(device) if isinstance(device, str) else None
    if match is None or (match["index"] is not None and match["kind"] != "cuda"):
        raise ConfigError(key, "must be cpu, cuda, cuda:N or mps", device)
    import torch

    if match["kind"] == "cuda":
        if not torch.cuda.is_available():
            version = torch.__version__.split("+")[0]
            if torch.version.cuda is None:
                what = (f"this torch build has no CUDA (torch {torch.__version__}); install a CUDA build of "
                        f"torch=={version} (https://pytorch.org/get-started/locally/) or use {key}=cpu")
            else:
                what = (f"no CUDA device is visible (torch {torch.__version__} is built for CUDA "
                        f"{torch.version.cuda}; check the driver and CUDA_VISIBLE_DEVICES) or use {key}=cpu")
            raise ConfigError(key, what, device)
        count = torch.cuda.device_count()
        if match["index"] is not None and int(match["index"]) >= count:
            raise ConfigError(key, f"no such CUDA device: {count} visible (cuda:0 .. cuda:{count - 1})", device)
    elif match["kind"] == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(key, f"MPS is not available with this machine / torch build; use {key}=cpu", device)


def _check_env(env: Mapping) -> None:
    """The env's own rules: keys the chosen ``env.name`` ignores keep their neutral value, a task that
    is read must exist."""
    name = env["name"]
    kwargs = env.get("kwargs", {})
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError("env.kwargs", "must be a mapping of gymnasium.make arguments", kwargs)
    if name == "atari" and kwargs:
        raise ConfigError("env.kwargs", "applies to env.name=gym|cartpole only; Atari takes its settings "
                          "from the other env.* keys", kwargs)
    for key, neutral in ENV_IGNORED_DEFAULTS.items():
        if key in ENV_READS[name] or key not in env or env[key] is None:
            continue
        value = env[key]
        if value != neutral or isinstance(value, bool) != isinstance(neutral, bool):
            readers = "|".join(n for n in ENV_READS if key in ENV_READS[n])
            extra = " (it always builds CartPole-v1)" if name == "cartpole" and key == "task" else ""
            raise ConfigError(f"env.{key}", f"is ignored by env.name={name}{extra}: only env.name={readers} "
                              f"reads it; leave it at {neutral!r}", value)
    if name in ("atari", "gym"):
        task = env["task"]
        if not isinstance(task, str) or not task:
            raise ConfigError("env.task", f"must be set when env.name is {name!r}", task)
        if name == "atari":
            from imwm.envs.atari import atari_gym_id

            atari_gym_id(task)  # ConfigError naming env.task and listing the valid games
        else:
            import gymnasium as gym

            import imwm.envs  # noqa: F401  (registers imwm's own gymnasium ids)

            if task not in gym.registry:
                raise ConfigError("env.task", "is not a registered gymnasium id (env.name=gym)", task)


def _check_collector(plain: Mapping, environ: Mapping[str, str] | None = None) -> None:
    """``collector`` / ``collector_workers`` (:mod:`imwm.training.collectors`): a known collector,
    workers that split ``num_envs`` evenly, and no distributed collector under ``torchrun``."""
    import os

    collector, workers = plain["collector"], plain["collector_workers"]
    if collector not in COLLECTORS:
        raise ConfigError("collector", f"must be one of {list(COLLECTORS)}", collector)
    if not is_integer(workers, 1):
        raise ConfigError("collector_workers", "must be an integer >= 1", workers)
    if is_integer(plain["num_envs"]) and plain["num_envs"] % workers:
        raise ConfigError("collector_workers", f"must divide num_envs ({plain['num_envs']}): each worker "
                          "steps num_envs / collector_workers envs", workers)
    env = os.environ if environ is None else environ
    if collector == "distributed" and int(env.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError("collector", "cannot run under torchrun: the distributed collector and data-parallel "
                          "training both need torch.distributed's default process group; use collector=sync|async "
                          "with collector_workers instead", collector)


def validate_config(cfg: Any) -> dict:
    """Checks a training config before anything is built; returns it as a resolved plain dict.

    Every group is checked here, the builders' own rules included (``build_replay``,
    ``build_model``, ``build_intrinsic``), so a bad value fails before an env or a network exists.

    Raises:
        ConfigError: (a ``ValueError``) naming the full key (``replay.batch_size``) and the value.

    Example:
        >>> from imwm.configs import compose_config
        >>> validate_config(compose_config(["preset=debug"]))["replay"]["batch_size"]
        4
        >>> validate_config(compose_config(["preset=debug", "prefill=-1"]))
        Traceback (most recent call last):
        ...
        imwm.errors.ConfigError: prefill: must be an integer >= 0 (got -1)
    """
    plain = to_plain(cfg)
    unknown = sorted(set(plain) - TOP_LEVEL - set(GROUPS) - {"preset", "hydra"})
    if unknown:
        raise unknown_keys("", unknown, sorted(TOP_LEVEL | set(GROUPS)), where=" keys at the top level")
    for key, default in OPTIONAL_TOP_LEVEL.items():
        plain.setdefault(key, default)
    missing = sorted((TOP_LEVEL | set(GROUPS)) - set(plain))
    if missing:
        raise _missing_keys(missing)
    for group in GROUPS:
        if not isinstance(plain[group], Mapping):
            raise ConfigError(group, "must be a mapping (a config group)", plain[group])
    for group in SCHEMAS:
        _check_schema(group, plain[group])
    for key, choices in CHOICES.items():
        group, leaf = key.split(".")
        if plain[group][leaf] not in choices:
            raise ConfigError(key, f"must be one of {list(choices)}", plain[group][leaf])
    for key in BOOLS:
        node = plain
        for part in key.split("."):
            node = node[part]
        if not isinstance(node, bool):
            raise ConfigError(key, "must be true or false", node)
    # resume: auto (only an identical config, imwm.training.identity), true (anyway), false (never)
    if not (isinstance(plain["resume"], bool) or plain["resume"] == "auto"):
        raise ConfigError("resume", "must be true or false, or auto", plain["resume"])
    _check_collector(plain)
    check_device(plain["device"])
    _walk("", {k: v for k, v in plain.items() if k not in ("hydra", "preset")})
    if plain["frames_per_batch"] % plain["num_envs"]:
        raise ConfigError("frames_per_batch",
                          f"must be a multiple of num_envs ({plain['num_envs']})", plain["frames_per_batch"])
    _check_env(plain["env"])

    from imwm.training.build_intrinsic import check_dormant_config, check_intrinsic_config
    from imwm.training.build_model import check_model_config
    from imwm.training.build_replay import check_replay_config

    check_replay_config(plain["replay"])
    replay = plain["replay"]
    if replay["capacity"] // plain["num_envs"] < replay["batch_length"]:  # one storage ring per env
        raise ConfigError("replay.capacity", f"split into one ring per env (num_envs={plain['num_envs']}) leaves "
                          f"{replay['capacity'] // plain['num_envs']} records per ring, fewer than "
                          f"replay.batch_length={replay['batch_length']}", replay["capacity"])
    check_model_config(plain)
    check_intrinsic_config(plain["intrinsic"])
    check_dormant_config(plain["dormant"])
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
    """Full keys among :data:`SHAPE_KEYS` whose values differ between two plain configs.

    Example:
        >>> shape_mismatches({"seed": 0, "model": {"deter": 64, "hidden": 32}},
        ...                  {"seed": 1, "model": {"deter": 128, "hidden": 32}})  # (seed: no shape)
        ['model.deter: saved 64, now 128']
    """
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
