"""The analysis scripts' command line: flags, ``key=value`` overrides, and the DreamerV3-style spelling.

The public DreamerV3 code takes ``--logdir``, ``--configs`` and ``--task``; the analysis scripts
accept that spelling too (:func:`split_command_line`): ``--logdir`` for ``--run``,
``--vta_<option> <value>`` for an override of the run's VTA options, and ``--configs`` / ``--task``,
which the run's saved config answers (:func:`source_option_overrides`). :func:`run_parser` holds
the flags every boundary tool shares; :func:`parse_script_args` puts it all together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from imwm.analysis.run_config import config_leaves, detect_run_kind, load_run_config

__all__ = ["split_overrides", "SAVED_CONFIG_FLAGS", "SOURCE_OPTION_PREFIX", "CommandLine", "split_command_line",
           "source_option_overrides", "run_parser", "parse_script_args"]


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
    leaves = config_leaves(config)
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
