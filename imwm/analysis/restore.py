"""Rebuild a trained model from its run folder, exactly as it was trained.

A boundary visualisation that rebuilds the model from the *default* config shows a model
trained with ``max_seg_len=50`` with 10, and its boundaries then look periodic. Here the only
source of options is the run folder itself: its resolved ``config.yaml`` (written by the trainer
at the first start), or the config stored in the checkpoint when the run was resumed with other
values; nothing is read from ``configs/``. Command-line overrides
(``dynamics.boundary_force_scale=0.0``) are still possible, but

- each must name a key that exists in the saved config (a typo is an error, not a no-op);
- each is printed with the value it replaces;
- one that changes a parameter shape is refused: the model is built with the overrides and
  every tensor of the checkpoint must fit it, or a ``ValueError`` names the override(s) and the
  tensors that no longer fit. Keys that fix the input geometry (``SHAPE_CHANGING_KEYS``) are
  refused outright, because a wrong frame size can go unnoticed by a convolution.

Two kinds of run folder are known (``detect_run_kind``): the VTA trainer on Moving Shapes
(``scripts/train_vta.py``, builder ``imwm.training.vta_run.build_vta_model``) and the Atari /
DreamerV3 agent (``scripts/train.py``, builder ``imwm.training.build_model.build_agent``, plus
the run's intrinsic-reward transform, whose tensors live in the agent's checkpoint too).

The analysis scripts also accept a DreamerV3-style command line (:func:`split_command_line`; the
public DreamerV3 code takes ``--logdir``, ``--configs`` and ``--task``): ``--logdir`` for
``--run``, ``--vta_<option> <value>`` for an override of the run's VTA options, and
``--configs`` / ``--task``, which the saved config answers.
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
    "split_command_line",
    "source_option_overrides",
    "parse_script_args",
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

#: Keys whose change alters what the model's input looks like; refused as overrides.
SHAPE_CHANGING_KEYS = ("env.size", "env.name", "env.full_action_space", "data.image_size",
                       "model.image_size", "model.channels")


def load_run_config(run_dir: str) -> dict:
    """The resolved config the run was trained with (``<run_dir>/config.yaml``) as a plain dict.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as run:
        ...     _ = Path(run, "config.yaml").write_text("{seed: 0, env: {name: atari, task: pong}}")
        ...     load_run_config(run)
        {'seed': 0, 'env': {'name': 'atari', 'task': 'pong'}}
        >>> load_run_config("no/such/run")
        Traceback (most recent call last):
        ...
        FileNotFoundError: run folder 'no/such/run' does not exist
    """
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
    never swallowed by a flag taking several values (``--delta_percentile 90 95``).

    Example:
        >>> split_overrides(["--delta_percentile", "90", "95", "dynamics.max_seg_len=50", "--run=x"])
        (['--delta_percentile', '90', '95', '--run=x'], ['dynamics.max_seg_len=50'])
    """
    flags, overrides = [], []
    for token in argv:
        (overrides if "=" in token and not token.startswith("-") else flags).append(token)
    return flags, overrides


#: DreamerV3-style flags that choose the config at training time; here the run's saved
#: config does, so they are answered with a note (or an error when they contradict the run).
SAVED_CONFIG_FLAGS = ("--configs", "--task")
#: ``--vta_<name> <value>``: a VTA training option in DreamerV3-style flag spelling.
SOURCE_OPTION_PREFIX = "--vta_"


@dataclass
class CommandLine:
    """A script's command line taken apart by :func:`split_command_line`.

    Attributes:
        flags: tokens for argparse (``--run x``, ``--length 30``, ...).
        overrides: ``key=value`` overrides of the saved config (``--key.sub=value`` too).
        source_options: ``(name, value)`` of every ``--vta_<name> <value>`` /
            ``--vta_<name>=<value>`` (mapped by :func:`source_option_overrides`).
        saved_config_flags: the values given to ``--configs`` / ``--task``.

    Example:
        >>> split_command_line(["--run=x", "k=1"])
        CommandLine(flags=['--run=x'], overrides=['k=1'], source_options=[], saved_config_flags={})
    """

    flags: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    source_options: list[tuple[str, str]] = field(default_factory=list)
    saved_config_flags: dict[str, list[str]] = field(default_factory=dict)


def split_command_line(argv: Sequence[str]) -> CommandLine:
    """Take a command line apart, accepting the DreamerV3-style spelling as well.

    - ``key=value`` anywhere, and ``--dotted.key=value``: overrides (see :func:`split_overrides`);
    - ``--vta_max_seg_len 50`` or ``--vta_max_seg_len=50``: a source-style training option;
    - ``--configs a b ...`` and ``--task t``: kept apart (the saved config decides them);
    - everything else: flags for argparse.

    Example:
        >>> cl = split_command_line(["--logdir", "runs/x", "--task", "atari_private_eye",
        ...                          "--configs", "atari100k", "--vta_max_seg_len", "50", "a.b=1"])
        >>> cl.flags, cl.overrides, cl.source_options
        (['--logdir', 'runs/x'], ['a.b=1'], [('max_seg_len', '50')])
        >>> cl.saved_config_flags
        {'--task': ['atari_private_eye'], '--configs': ['atari100k']}
    """
    out = CommandLine()
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, value = token.partition("=")
        if token.startswith(SOURCE_OPTION_PREFIX):
            key = name[len(SOURCE_OPTION_PREFIX):]
            if not key:
                raise ValueError(f"{token!r}: expected --vta_<option> <value> (e.g. --vta_max_seg_len 50)")
            if not eq:
                if i + 1 >= len(tokens):
                    raise ValueError(f"{token} needs a value (e.g. {token} 50)")
                i += 1
                value = tokens[i]
            out.source_options.append((key, value))
        elif name in SAVED_CONFIG_FLAGS:
            values = [value] if eq else []
            while not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("-") and "=" not in tokens[i + 1]:
                i += 1
                values.append(tokens[i])
                if name == "--task":  # one task; --configs takes several presets
                    break
            if not values:
                raise ValueError(f"{name} needs a value")
            out.saved_config_flags.setdefault(name, []).extend(values)
        elif eq and (not token.startswith("-") or (token.startswith("--") and "." in name)):
            out.overrides.append(token)
        else:
            out.flags.append(token)
        i += 1
    return out


def _compact(text: Any) -> str:
    return "".join(ch for ch in str(text).lower() if ch.isalnum())


def _task_matches(given: str, env: Mapping) -> bool:
    """``atari_private_eye``, ``private_eye``, ``PrivateEye`` match env ``atari`` / ``private_eye``;
    ``cartpole`` matches ``CartPole-v1`` (a trailing version may be left out)."""
    want = _compact(given)
    for candidate in (_compact(env.get("task", "")), _compact(f"{env.get('name', '')}{env.get('task', '')}")):
        rest = candidate[len(want):] if want and candidate.startswith(want) else None
        if rest is not None and (rest == "" or (rest[0] == "v" and rest[1:].isdigit())):
            return True
    return False


def source_option_overrides(command: CommandLine, config: Mapping, *, run_dir: str = "",
                            printer: Callable[[str], None] | None = print) -> list[str]:
    """Answer the DreamerV3-style config flags from the saved ``config`` and map the training
    options to overrides of it.

    - ``--vta_<name> <value>`` becomes ``dynamics.<name>=<value>`` for a ``train.py`` run and
      ``vta.<name>=<value>`` for a ``train_vta.py`` run (printed); the key must exist in the
      saved config, and the override is then checked like any other (shape changes refused).
    - ``--configs`` / ``--task`` are not needed: the run folder's config fixes the env, the task
      and every preset value. One line says so; a ``--task`` that names another task than the
      run's is an error.

    Returns:
        the override strings (``["dynamics.max_seg_len=50", ...]``).

    Raises:
        ValueError: a ``--task`` that contradicts the run, or a ``--vta_`` option the run's
            config does not have.

    Example:
        >>> cfg = {"env": {"name": "atari"}, "dynamics": {"max_seg_len": 10}, "agent": {}}
        >>> source_option_overrides(split_command_line(["--vta_max_seg_len", "50"]), cfg)
        --vta_max_seg_len 50 -> override dynamics.max_seg_len=50
        ['dynamics.max_seg_len=50']
        >>> source_option_overrides(split_command_line(["--vta_max_len", "5"]), cfg)
        ... # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: --vta_max_len: dynamics.max_len is not a key of the run's saved config
        (config.yaml); dynamics options: max_seg_len
    """
    say = printer or (lambda _msg: None)
    where = os.path.join(run_dir, "config.yaml") if run_dir else "config.yaml"
    kind = detect_run_kind(config)
    given = command.saved_config_flags
    if given:
        if kind == "agent":
            env = config.get("env", {})
            trained = f"env.name={env.get('name')}, env.task={env.get('task')}"
            for task in given.get("--task", []):
                if not _task_matches(task, env):
                    raise ValueError(f"--task {task} does not match this run, which was trained on {trained} "
                                     f"(the task comes from the run's saved config {where}; point --run at a "
                                     f"run trained on {task})")
        else:
            trained = "Moving Shapes (train_vta.py)"
        used = " ".join(f"{flag} {' '.join(values)}" for flag, values in given.items())
        say(f"note: {used}: not needed, the env, task and presets come from the run's saved config "
            f"({where}: {trained}); change a saved value with key=value")
    prefix = "dynamics" if kind == "agent" else "vta"
    leaves = _leaves(config)
    overrides = []
    for name, value in command.source_options:
        key = f"{prefix}.{name}"
        if key not in leaves:
            options = sorted(k[len(prefix) + 1:] for k in leaves if k.startswith(prefix + "."))
            raise ValueError(f"--vta_{name}: {key} is not a key of the run's saved config ({where}); "
                             f"{prefix} options: {', '.join(options) or 'none'}")
        overrides.append(f"{key}={value}")
        say(f"--vta_{name} {value} -> override {key}={value}")
    return overrides


def run_parser(description: str, *, seed_help: str) -> Any:
    """The arguments every boundary tool shares: the run folder and how episodes are played.

    Each tool (``vta_boundary_eval``, ``vta_boundary_viz``) adds its own flags to the parser this
    returns; trailing ``key=value`` overrides are handled by :func:`parse_script_args`.
    """
    import argparse

    p = argparse.ArgumentParser(description=description,
                                epilog="Trailing key=value arguments override the saved config; "
                                       "--vta_<option> <value> means dynamics.<option>=<value> (vta.<option> "
                                       "for a train_vta.py run); --configs / --task come from the saved config.")
    p.add_argument("--run", "--logdir", dest="run", required=True,
                   help="run folder (config.yaml, checkpoints/latest.pt); --logdir is an alias")
    p.add_argument("--checkpoint", default="latest.pt", help="file in <run>/checkpoints/")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--max_steps", type=int, default=1000, help="cap on agent steps per Atari episode")
    p.add_argument("--policy", choices=("agent", "random"), default="agent", help="who acts in Atari episodes")
    p.add_argument("--seq_len", type=int, default=None, help="held-out sequence length (Moving Shapes)")
    return p


def parse_script_args(parser: Any, argv: Sequence[str], *,
                      printer: Callable[[str], None] | None = print) -> tuple[Any, list[str]]:
    """``(args, overrides)`` for an analysis script: argparse on the flags, ``key=value``
    overrides, and the DreamerV3-style spelling (:func:`split_command_line`,
    :func:`source_option_overrides`; ``--logdir`` is the parser's alias of ``--run``).

    Example:
        >>> parser = run_parser("demo", seed_help="env seed")
        >>> args, overrides = parse_script_args(parser, ["--logdir", "runs/x", "dynamics.depth=3"])
        >>> args.run, args.seed, overrides
        ('runs/x', 0, ['dynamics.depth=3'])
    """
    command = split_command_line(argv)
    args, rest = parser.parse_known_args(command.flags)
    if rest:
        parser.error(f"unrecognised arguments {rest}; overrides must be key=value (e.g. dynamics.max_seg_len=50)")
    overrides = list(command.overrides)
    if command.source_options or command.saved_config_flags:
        overrides += source_option_overrides(command, load_run_config(args.run), run_dir=args.run,
                                             printer=printer)
    return args, overrides


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=0.0", "d=[1,2]"]`` -> ``{"a.b": 1, "c": 0.0, "d": [1, 2]}`` (YAML values).

    A leading ``--`` is tolerated (``--dynamics.max_seg_len=50``); ``+key`` (add a key) is not.

    Example:
        >>> parse_overrides(["a.b=1", "--c=0.0", "d=[1, 2]", "e=pong"])
        {'a.b': 1, 'c': 0.0, 'd': [1, 2], 'e': 'pong'}
        >>> parse_overrides(["+a=1"])
        Traceback (most recent call last):
        ...
        ValueError: override '+a=1': only existing keys can be overridden (no +/~ prefixes)
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

    Example:
        >>> cfg = {"env": {"name": "atari"}, "dynamics": {"max_seg_len": 10}}
        >>> new, changes = apply_overrides(cfg, {"dynamics.max_seg_len": 50})
        >>> new["dynamics"], changes, cfg["dynamics"]  # the saved config is left as it was
        ({'max_seg_len': 50}, [('dynamics.max_seg_len', 10, 50)], {'max_seg_len': 10})
        >>> apply_overrides(cfg, {"max_seg_len": 50})
        Traceback (most recent call last):
        ...
        ValueError: override 'max_seg_len' is not a key of the saved config; did you mean dynamics.max_seg_len?
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


def detect_run_kind(config: Mapping) -> str:
    """``"vta_run"`` for ``train_vta.py`` runs (Moving Shapes; either VTA variant, per
    ``vta.variant``), ``"agent"`` for ``train.py`` runs (Atari / gym with the DreamerV3 agent).

    Example:
        >>> detect_run_kind({"env": {}, "dynamics": {}, "agent": {}, "seed": 0})
        'agent'
        >>> detect_run_kind({"vta": {}, "data": {}})
        'vta_run'
        >>> detect_run_kind({"model": {}})  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: cannot tell what trained this run: config has top-level keys ['model'];
        expected train.py's (env, dynamics, agent, ...) or train_vta.py's
    """
    if "agent" in config and "dynamics" in config and "env" in config:
        return "agent"
    if "vta" in config and "data" in config:
        return "vta_run"
    raise ValueError(f"cannot tell what trained this run: config has top-level keys {sorted(config)}; "
                     f"expected train.py's (env, dynamics, agent, ...) or train_vta.py's")


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


def _check_resolved(config: Any, where: str) -> dict:
    if not isinstance(config, Mapping):
        raise ValueError(f"{where} must hold a mapping, got {type(config).__name__}")
    if "defaults" in config or any(isinstance(v, str) and "${" in v for v in _leaves(config).values()):
        raise ValueError(f"{where} is not a resolved config (it has Hydra defaults or ${{...}} interpolations)")
    return copy.deepcopy(dict(config))


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
        first_leaves, ckpt_leaves = _leaves(first), _leaves(in_ckpt)
        differ = sorted(k for k in set(first_leaves) | set(ckpt_leaves)
                        if not _same(first_leaves.get(k, _MISSING), ckpt_leaves.get(k, _MISSING)))
        if differ:
            saved = _check_resolved(in_ckpt, f"the config stored in {ckpt_path}")
            source = f"{ckpt_path} (the run was resumed with other values than config.yaml's at " \
                     f"{', '.join(differ[:8])}{', ...' if len(differ) > 8 else ''})"
    config, changes = apply_overrides(saved, parsed)
    kind = detect_run_kind(config)
    say(f"restored config from {source} ({kind})")
    saved_leaves = _leaves(saved)
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
