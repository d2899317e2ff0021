"""Rebuild a trained model from its run folder, exactly as it was trained.

The source memo (SPEC.md section 3, cause 2) found its visualisation rebuilding the model from
the *default* config: a model trained with ``max_seg_len=50`` was analysed with 10 and looked
periodic. Here the only source of options is the run folder's own resolved ``config.yaml``
(written by the trainer at start); nothing is read from ``configs/``. Command-line overrides
(``dynamics.boundary_force_scale=0.0``) are still possible, but

- each must name a key that exists in the saved config (a typo is an error, not a no-op);
- each is printed with the value it replaces;
- one that changes a parameter shape is refused: the model is built with the overrides and
  every tensor of the checkpoint must fit it, or a ``ValueError`` names the override(s) and the
  tensors that no longer fit. Keys that fix the input geometry (``SHAPE_CHANGING_KEYS``) are
  refused outright, because a wrong frame size can go unnoticed by a convolution.

Two kinds of run folder are known (``detect_run_kind``): the VTA trainer on Moving Shapes
(``scripts/train_vta.py``, builder ``imwm.training.vta_run.build_vta_model``) and the Atari /
DreamerV3 agent (``scripts/train.py``, builder ``imwm.training.build_model.build_agent``).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
import yaml
from torch import nn

__all__ = [
    "RestoredRun",
    "load_run_config",
    "parse_overrides",
    "split_overrides",
    "apply_overrides",
    "check_state_dict_fits",
    "detect_run_kind",
    "restore_run",
    "SHAPE_CHANGING_KEYS",
]

#: Keys whose change alters what the model's input looks like; refused as overrides.
SHAPE_CHANGING_KEYS = ("env.size", "env.name", "env.full_action_space", "data.image_size",
                       "model.image_size", "model.channels")


def load_run_config(run_dir: str) -> dict:
    """The resolved config the run was trained with (``<run_dir>/config.yaml``) as a plain dict."""
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run folder {run_dir!r} does not exist")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: analysis tools restore the training config from "
                                f"the run folder only (never from defaults)")
    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(cfg).__name__}")
    if "defaults" in cfg or any(isinstance(v, str) and "${" in v for v in _leaves(cfg).values()):
        raise ValueError(f"{path} is not a resolved config (it has Hydra defaults or ${{...}} "
                         f"interpolations); the trainer must save OmegaConf.to_container(cfg, resolve=True)")
    return cfg


def _leaves(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_leaves(value, full + "."))
        else:
            out[full] = value
    return out


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split a command line into ``(flags, overrides)``: an override is a token with ``=`` that
    does not start with ``-`` (``dynamics.max_seg_len=50``), wherever it stands, so that it is
    never swallowed by a flag taking several values (``--delta_percentile 90 95``)."""
    flags, overrides = [], []
    for token in argv:
        (overrides if "=" in token and not token.startswith("-") else flags).append(token)
    return flags, overrides


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=0.0", "d=[1,2]"]`` -> ``{"a.b": 1, "c": 0.0, "d": [1, 2]}`` (YAML values).

    A leading ``--`` is tolerated (``--dynamics.max_seg_len=50``); ``+key`` (add a key) is not.
    """
    out: dict[str, Any] = {}
    for item in items:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ValueError(f"override {item!r} must look like key=value (e.g. dynamics.max_seg_len=50)")
        key, raw = text.split("=", 1)
        key = key.strip()
        if not key or key.startswith(("+", "~")):
            raise ValueError(f"override {item!r}: only existing keys can be overridden (no +/~ prefixes)")
        if key in out:
            raise ValueError(f"override {key!r} given twice")
        out[key] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def apply_overrides(config: Mapping, overrides: Mapping[str, Any]) -> tuple[dict, list[tuple[str, Any, Any]]]:
    """Copy of ``config`` with dotted-key ``overrides`` applied.

    Returns:
        ``(new_config, changes)`` where ``changes`` lists ``(key, saved_value, new_value)``.

    Raises:
        ValueError: for a key that is not in the saved config, a key that names a whole group,
            or a key in :data:`SHAPE_CHANGING_KEYS` whose value differs.
    """
    new = copy.deepcopy(dict(config))
    leaves = _leaves(new)
    changes = []
    for key, value in overrides.items():
        if key not in leaves:
            near = sorted(k for k in leaves if k.split(".")[-1] == key.split(".")[-1])
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            group = any(k.startswith(key + ".") for k in leaves)
            what = "names a group, not a value" if group else "is not a key of the saved config"
            raise ValueError(f"override {key!r} {what}{hint}")
        old = leaves[key]
        if key in SHAPE_CHANGING_KEYS and value != old:
            raise ValueError(f"override {key}={value!r} refused: it changes the model's input shape "
                             f"(trained with {old!r})")
        node = new
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
        changes.append((key, old, value))
    return new, changes


def same_value_keys(leaves: Mapping[str, Any], key: str, value: Any) -> list[str]:
    """Other leaves holding ``value`` (possible ``${key}`` interpolation targets in a resolved
    config). Booleans, None, strings and the common numbers 0 and 1 are not reported."""
    if isinstance(value, (bool, str)) or value is None or value in (0, 1):
        return []
    return sorted(k for k, v in leaves.items() if k != key and type(v) is type(value) and v == value)


def check_state_dict_fits(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                          changes: Sequence[tuple[str, Any, Any]] = ()) -> None:
    """Raise ``ValueError`` unless ``state_dict`` has exactly the model's tensors and shapes.

    The message names the overrides in ``changes`` (the likely cause) and up to five tensors
    that differ.
    """
    own = model.state_dict()
    problems = []
    for name, tensor in state_dict.items():
        if name not in own:
            problems.append(f"{name}: in the checkpoint, not in the rebuilt model")
        elif not (hasattr(tensor, "shape") and hasattr(own[name], "shape")):
            continue  # extra state (get_extra_state) has no shape; load_state_dict checks it
        elif tuple(own[name].shape) != tuple(tensor.shape):
            problems.append(f"{name}: checkpoint {tuple(tensor.shape)}, rebuilt {tuple(own[name].shape)}")
    problems += [f"{name}: in the rebuilt model, not in the checkpoint"
                 for name in own if name not in state_dict]
    if problems:
        cause = (f"the override(s) {', '.join(f'{k}={new!r} (trained: {old!r})' for k, old, new in changes)} "
                 f"change the model's shapes and are refused" if changes
                 else "the saved config does not rebuild the saved weights")
        raise ValueError(f"{cause}: {len(problems)} tensor(s) differ, e.g. " + "; ".join(problems[:5]))


@dataclass
class RestoredRun:
    """A model rebuilt from a run folder.

    Attributes:
        run_dir: the folder.
        kind: ``"vta_run"`` or ``"agent"`` (see :func:`detect_run_kind`).
        config: the config the model was built with (saved config + overrides).
        saved_config: the config as saved by the trainer.
        changes: ``(key, saved_value, new_value)`` per override.
        model: the rebuilt module with the checkpoint's weights, in ``eval()`` mode.
        checkpoint: the rest of the checkpoint (counters, ...), weights removed.
    """

    run_dir: str
    kind: str
    config: dict
    saved_config: dict
    changes: list
    model: nn.Module
    checkpoint: dict = field(default_factory=dict)


def detect_run_kind(config: Mapping) -> str:
    """``"vta_run"`` for ``train_vta.py`` runs (Moving Shapes; either VTA variant, per
    ``vta.variant``), ``"agent"`` for ``train.py`` runs (Atari / gym with the DreamerV3 agent)."""
    if "agent" in config and "dynamics" in config and "env" in config:
        return "agent"
    if "vta" in config and "data" in config:
        return "vta_run"
    raise ValueError(f"cannot tell what trained this run: config has top-level keys {sorted(config)}; "
                     f"expected train.py's (env, dynamics, agent, ...) or train_vta.py's")


def _build_vta_run(config: Mapping) -> tuple[nn.Module, str]:
    from imwm.training.vta_run import build_vta_model

    return build_vta_model(config), "model"


def _build_agent(config: Mapping) -> tuple[nn.Module, str]:
    from imwm.envs import make_env
    from imwm.training.build_model import build_agent

    # the env fixes the observation shape and the action count, as in training (imwm.training.loop)
    env = make_env(**dict(config["env"]), num_envs=1, seed=int(config.get("seed", 0)))
    try:
        obs_shape = tuple(env.observation_spec["observation"].shape[1:])
        action_dim = int(env.action_spec.shape[-1])
    finally:
        env.close()
    return build_agent(config, obs_shape=obs_shape, action_dim=action_dim, device="cpu"), "agent"


BUILDERS: dict[str, Callable[[Mapping], tuple[nn.Module, str]]] = {
    "vta_run": _build_vta_run,
    "agent": _build_agent,
}


def restore_run(run_dir: str, overrides: Sequence[str] | Mapping[str, Any] = (), *,
                checkpoint: str = "latest.pt", printer: Callable[[str], None] | None = print) -> RestoredRun:
    """Rebuild the run's model from ``config.yaml`` (+ overrides) and load its checkpoint.

    Args:
        run_dir: the run folder (``config.yaml``, ``checkpoints/<checkpoint>``).
        overrides: ``["dynamics.boundary_force_scale=0.0", ...]`` or a ``{key: value}`` mapping.
        checkpoint: file name inside ``checkpoints/``.
        printer: where the restore report goes (``None`` = silent).

    Raises:
        FileNotFoundError: missing folder, config or checkpoint.
        ValueError: unknown or shape-changing overrides, or weights that do not fit.
    """
    say = printer or (lambda _msg: None)
    saved = load_run_config(run_dir)
    parsed = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    config, changes = apply_overrides(saved, parsed)
    kind = detect_run_kind(config)
    ckpt_path = os.path.join(run_dir, "checkpoints", checkpoint)
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f"checkpoint {ckpt_path} not found")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    say(f"restored config from {os.path.join(run_dir, 'config.yaml')} ({kind})")
    saved_leaves = _leaves(saved)
    for key, old, new in changes:
        say(f"  override {key}: {old!r} -> {new!r}")
        twins = same_value_keys(saved_leaves, key, old)
        if twins and new != old:
            say(f"    note: {', '.join(twins)} hold the same saved value {old!r}; config.yaml is resolved, so "
                f"keys that were interpolated from {key} at training time keep {old!r}: override them too if meant")
    model, weights_key = BUILDERS[kind](config)
    if weights_key not in state:
        raise ValueError(f"{ckpt_path} has no {weights_key!r} entry (keys: {sorted(state)})")
    check_state_dict_fits(model, state[weights_key], changes)
    model.load_state_dict(state[weights_key])
    model.eval()
    saved_in_ckpt = state.get("config")
    if isinstance(saved_in_ckpt, Mapping):
        differ = sorted(k for k, v in _leaves(saved_in_ckpt).items() if _leaves(saved).get(k, v) != v)
        if differ:
            say(f"  warning: config.yaml and the checkpoint's config differ at {differ[:8]}; using config.yaml")
    rest = {k: v for k, v in state.items() if k != weights_key}
    return RestoredRun(run_dir=run_dir, kind=kind, config=config, saved_config=saved,
                       changes=changes, model=model, checkpoint=rest)
