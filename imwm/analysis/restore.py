"""Rebuild a trained model from its run folder, exactly as it was trained.

A boundary visualisation that rebuilds the model from the *default* config shows a model
trained with ``max_seg_len=50`` with 10, and its boundaries then look periodic. Here the only
source of options is the run folder itself: its resolved ``config.yaml`` (written by the trainer
at the first start), or the config stored in the checkpoint when the run was resumed with other
values; nothing is read from ``configs/`` (:mod:`imwm.analysis.run_config`). Command-line
overrides are still possible (:func:`~imwm.analysis.run_config.apply_overrides`), but one that
changes a parameter shape is refused: the model is built with the overrides and every tensor of
the checkpoint must fit it (:func:`check_state_dict_fits`), or a ``ValueError`` names the
override(s) and the tensors that no longer fit.

Two kinds of run folder are known (:func:`~imwm.analysis.run_config.detect_run_kind`): the VTA
trainer on Moving Shapes (``scripts/train_vta.py``, builder
``imwm.training.vta_run.build_vta_model``) and the Atari / DreamerV3 agent (``scripts/train.py``,
builder ``imwm.training.build_model.build_agent``, plus the run's intrinsic-reward transform, whose
tensors live in the agent's checkpoint too). The analysis scripts' command line, DreamerV3-style
spelling included, is :mod:`imwm.analysis.script_args`; its names are re-exported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from imwm.analysis.run_config import (SHAPE_CHANGING_KEYS, apply_overrides, check_resolved, config_leaves,
                                      detect_run_kind, load_run_config, parse_overrides, same_value_keys)
from imwm.analysis.script_args import (SAVED_CONFIG_FLAGS, CommandLine, parse_script_args, run_parser,
                                       source_option_overrides, split_command_line, split_overrides)

__all__ = [
    "RestoredRun",
    "load_run_config",
    "parse_overrides",
    "split_overrides",
    "split_command_line",
    "source_option_overrides",
    "parse_script_args",
    "run_parser",
    "CommandLine",
    "SAVED_CONFIG_FLAGS",
    "apply_overrides",
    "check_state_dict_fits",
    "detect_run_kind",
    "restore_run",
    "attach_intrinsic",
    "SHAPE_CHANGING_KEYS",
]

_MISSING = object()


def check_state_dict_fits(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                          changes: Sequence[tuple[str, Any, Any]] = ()) -> None:
    """Raise ``ValueError`` unless ``state_dict`` has exactly the model's tensors and shapes.

    The message names the overrides in ``changes`` (the likely cause) and up to five tensors
    that differ.

    Example:
        >>> model = nn.Linear(2, 3, bias=False)
        >>> check_state_dict_fits(model, nn.Linear(2, 3, bias=False).state_dict())  # fits: returns None
        >>> check_state_dict_fits(model, nn.Linear(2, 4, bias=False).state_dict(), [("width", 3, 4)])
        ... # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: the override(s) width=4 (trained: 3) change the model's shapes and are refused:
        1 tensor(s) differ, e.g. weight: checkpoint (4, 2), rebuilt (3, 2)
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


@dataclass
class _Built:
    """A builder's answer: the module, the checkpoint entry holding its weights, and checkpoint
    tensor-name prefixes that are knowingly not loaded (prefix -> why)."""

    model: nn.Module
    weights_key: str
    skipped: dict[str, str] = field(default_factory=dict)


def _build_vta_run(config: Mapping) -> _Built:
    from imwm.training.vta_run import build_vta_model

    return _Built(build_vta_model(config), "model")


def _build_agent(config: Mapping) -> _Built:
    from imwm.envs import make_env
    from imwm.training.build_model import build_agent

    # the env fixes the observation shape and the action count, as in training (imwm.training.loop)
    env = make_env(**dict(config["env"]), num_envs=1, seed=int(config.get("seed", 0)))
    try:
        obs_shape = tuple(env.observation_spec["observation"].shape[1:])
        action_dim = int(env.action_spec.shape[-1])
    finally:
        env.close()
    agent = build_agent(config, obs_shape=obs_shape, action_dim=action_dim, device="cpu")
    built = _Built(agent, "agent")
    try:
        attach_intrinsic(agent, config)
    except (ValueError, TypeError) as err:  # e.g. a saved intrinsic section today's checks reject
        built.skipped["intrinsic."] = (f"the intrinsic reward could not be rebuilt from the saved config "
                                       f"({' '.join(str(err).split())}); the boundary analysis does not use it")
    return built


def attach_intrinsic(agent: nn.Module, config: Mapping) -> nn.Module | None:
    """Rebuild the run's intrinsic-reward transform (``config["intrinsic"]``) and set it as
    ``agent.intrinsic``, as the trainer does (``imwm.training.loop``), so that the checkpoint's
    ``intrinsic.*`` tensors (reward statistics; the ensemble of ``disagreement``) are checked and
    loaded like every other tensor.

    Returns the transform, or ``None`` when the run trained without one. The boundary analysis
    never calls it.
    """
    from imwm.training.build_intrinsic import build_intrinsic

    section = config.get("intrinsic")
    if not section:
        return None
    transform = build_intrinsic(section, agent)
    if transform is not None:
        agent.intrinsic = transform
    return transform


BUILDERS: dict[str, Callable[[Mapping], _Built]] = {
    "vta_run": _build_vta_run,
    "agent": _build_agent,
}


def _load_checkpoint(run_dir: str, checkpoint: str, say: Callable[[str], None]) -> tuple[str, dict]:
    """``(path, state)`` of ``checkpoints/<checkpoint>``; for the default ``latest.pt``, an
    unreadable file falls back to ``previous.pt`` (the generation before), as training does."""
    from imwm.training.checkpoint import CheckpointError, load_checkpoint

    folder = os.path.join(run_dir, "checkpoints")
    path = os.path.join(folder, checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return path, load_checkpoint(path)
    except CheckpointError as err:
        previous = os.path.join(folder, "previous.pt")
        if checkpoint != "latest.pt" or not os.path.isfile(previous):
            raise
        state = load_checkpoint(previous)  # both unreadable: its error names previous.pt
        say(f"note: {err}; using {previous} (the generation before)")
        return previous, state


def _same(a: Any, b: Any) -> bool:
    """Config values equal as YAML would keep them (NaN equals NaN; a tuple equals its list)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, bool) or isinstance(b, bool):  # True == 1 in Python, not in a config
        return type(a) is type(b) and a == b
    return a == b


def restore_run(run_dir: str, overrides: Sequence[str] | Mapping[str, Any] = (), *,
                checkpoint: str = "latest.pt", printer: Callable[[str], None] | None = print) -> RestoredRun:
    """Rebuild the run's model from its saved config (+ overrides) and load its checkpoint.

    The config is the one the checkpoint was trained with: ``config.yaml`` (the resolved config
    of the run's first start), or, when the run was resumed with other values (``resume=true``;
    the trainer then writes ``config.changes-<k>.yaml``), the config stored in the checkpoint
    itself, with the keys that differ from ``config.yaml`` printed.

    Args:
        run_dir: the run folder (``config.yaml``, ``checkpoints/<checkpoint>``).
        overrides: ``["dynamics.boundary_force_scale=0.0", ...]`` or a ``{key: value}`` mapping.
        checkpoint: file name inside ``checkpoints/``; an unreadable ``latest.pt`` falls back
            to ``previous.pt`` with a note.
        printer: where the restore report goes (``None`` = silent).

    Raises:
        FileNotFoundError: missing folder, config or checkpoint.
        ValueError: unknown or shape-changing overrides, weights that do not fit, or an
            unreadable checkpoint (``imwm.training.checkpoint.CheckpointError``).
    """
    say = printer or (lambda _msg: None)
    first = load_run_config(run_dir)
    parsed = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    apply_overrides(first, parsed)  # a typo in an override fails before the checkpoint is read
    ckpt_path, state = _load_checkpoint(run_dir, checkpoint, say)
    saved, source = first, os.path.join(run_dir, "config.yaml")
    in_ckpt = state.get("config")
    if isinstance(in_ckpt, Mapping):
        first_leaves, ckpt_leaves = config_leaves(first), config_leaves(in_ckpt)
        differ = sorted(k for k in set(first_leaves) | set(ckpt_leaves)
                        if not _same(first_leaves.get(k, _MISSING), ckpt_leaves.get(k, _MISSING)))
        if differ:
            saved = check_resolved(in_ckpt, f"the config stored in {ckpt_path}")
            source = f"{ckpt_path} (the run was resumed with other values than config.yaml's at " \
                     f"{', '.join(differ[:8])}{', ...' if len(differ) > 8 else ''})"
    config, changes = apply_overrides(saved, parsed)
    kind = detect_run_kind(config)
    say(f"restored config from {source} ({kind})")
    saved_leaves = config_leaves(saved)
    for key, old, new in changes:
        say(f"  override {key}: {old!r} -> {new!r}")
        twins = same_value_keys(saved_leaves, key, old)
        if twins and new != old:
            say(f"    note: {', '.join(twins)} hold the same saved value {old!r}; the saved config is resolved, so "
                f"keys that were interpolated from {key} at training time keep {old!r}: override them too if meant")
    built = BUILDERS[kind](config)
    model, weights_key = built.model, built.weights_key
    if weights_key not in state:
        raise ValueError(f"{ckpt_path} has no {weights_key!r} entry (keys: {sorted(state)})")
    weights = dict(state[weights_key])
    for prefix, why in built.skipped.items():
        dropped = [name for name in weights if name.startswith(prefix)]
        for name in dropped:
            del weights[name]
        if dropped:
            say(f"  note: {len(dropped)} {prefix}* tensor(s) of the checkpoint not loaded: {why}")
    check_state_dict_fits(model, weights, changes)
    model.load_state_dict(weights)
    model.eval()
    rest = {k: v for k, v in state.items() if k != weights_key}
    return RestoredRun(run_dir=run_dir, kind=kind, config=config, saved_config=saved,
                       changes=changes, model=model, checkpoint=rest)
