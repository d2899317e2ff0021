"""Run folders as learning curves, and runs of one configuration grouped across seeds
(the loading and grouping half of :mod:`imwm.analysis.curves`, which describes both rules)."""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from imwm.analysis.run_config import config_leaves
from imwm.errors import UserError

__all__ = ["RunCurve", "find_runs", "load_run", "readable_name", "group_runs"]

_SEED_IN_NAME = re.compile(r"-s(\d+)(?=$|-)")


_HASH_SUFFIX = re.compile(r"-[0-9a-f]{8}$")  # imwm.training.identity's config hash


_SELECTORS = ("name", "typ", "enable")  # a group's key that implies its other keys


@dataclass
class RunCurve:
    """One run's curve of ``metric`` (rows where it is logged).

    Attributes:
        path: the run folder.
        name: its ``run_name`` (config) or folder name.
        seed: the seed (config, else the ``-s<seed>`` in the name; None if unknown).
        game: ``env.task`` (``"CartPole-v1"``, ``"breakout"``) or None.
        config: the saved ``config.yaml`` (empty without one).
        steps, values: env steps and metric values, sorted by step.
        minutes: wall-clock minutes at those steps (NaN where unknown).
        group, method: labels set by :func:`group_runs` (its seeds' group; the same without the game).

    Example:
        >>> run = RunCurve(Path("runs/a"), "pong-rssm-s0", 0, "pong", {}, steps=np.array([0, 100]),
        ...                values=np.array([-21.0, -19.0]), minutes=np.array([0.0, 1.5]))
        >>> run.x("env_step").tolist(), run.x("minutes").tolist()
        ([0.0, 100.0], [0.0, 1.5])
    """

    path: Path
    name: str
    seed: int | None
    game: str | None
    config: dict
    steps: np.ndarray
    values: np.ndarray
    minutes: np.ndarray
    group: str = ""
    method: str = ""

    def x(self, axis: str) -> np.ndarray:
        return self.steps.astype(float) if axis == "env_step" else self.minutes


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders (holding ``metrics.csv``) at or under each path, sorted, without duplicates.

    Raises:
        UserError: a path that does not exist, or no run found at all.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for name in ("b-s0", "a-s0"):
        ...         Path(tmp, name).mkdir()
        ...         _ = Path(tmp, name, "metrics.csv").write_text("env_step\\n")
        ...     [run.name for run in find_runs([tmp, Path(tmp, "a-s0")])]  # sorted, no duplicates
        ['a-s0', 'b-s0']
        >>> find_runs(["no/such/folder"])
        Traceback (most recent call last):
        ...
        imwm.errors.UserError: no/such/folder does not exist
    """
    paths = [Path(p) for p in paths]
    found: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise UserError(f"{path} does not exist")
        if path.is_file():
            if path.name != "metrics.csv":
                raise UserError(f"{path}: give run folders (or their metrics.csv), not other files")
            found.add(path.parent.resolve())
        elif (path / "metrics.csv").is_file():
            found.add(path.resolve())
        elif path.is_dir():
            found.update(p.parent.resolve() for p in path.rglob("metrics.csv"))
            for record in path.rglob("jobs.tsv"):
                found.update(_sweep_runs(record))
    if not found:
        raise UserError(f"no run folder (with a metrics.csv) under {', '.join(str(p) for p in paths)}")
    return sorted(found)


def _sweep_runs(record: Path) -> list[Path]:
    """The run folders a sweep's ``jobs.tsv`` lists (``num, status, run folder, overrides``) that
    hold a ``metrics.csv``; a relative folder is looked up from the working directory, then from
    each folder above the sweep record (the sweep was launched from one of them)."""
    out = []
    for line in record.read_text().splitlines():
        cells = line.split("\t")
        if len(cells) < 3 or cells[2] in ("", "?"):
            continue
        folder = Path(cells[2])
        bases = [Path.cwd(), *record.resolve().parents] if not folder.is_absolute() else [Path("/")]
        for base in bases:
            if (base / folder / "metrics.csv").is_file():
                out.append((base / folder).resolve())
                break
    return out


def _read_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    return cfg if isinstance(cfg, dict) else {}


def _float(cell: str | None) -> float:
    try:
        return float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan


def load_run(run_dir: str | Path, metric: str = "eval/return") -> RunCurve | None:
    """A run's curve of ``metric``, or None when its ``metrics.csv`` has no such values.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = Path(tmp, "config.yaml").write_text("{run_name: a-s1, env: {task: pong}}")
        ...     _ = Path(tmp, "metrics.csv").write_text("env_step,eval/return\\n200,-19\\n100,-21")
        ...     run = load_run(tmp)
        ...     load_run(tmp, "train/loss") is None
        True
        >>> # the seed from the name (no seed key); the rows sorted by step
        >>> run.name, run.seed, run.game, run.steps.tolist(), run.values.tolist()
        ('a-s1', 1, 'pong', [100.0, 200.0], [-21.0, -19.0])
    """
    run_dir = Path(run_dir)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cfg = _read_config(run_dir)
    name = str(cfg.get("run_name") or run_dir.name)
    seed = cfg.get("seed")
    if seed is None:
        match = _SEED_IN_NAME.search(name)
        seed = int(match.group(1)) if match else None
    env = cfg.get("env") or {}
    game = env.get("task") if isinstance(env, Mapping) else None
    step = np.array([_float(r.get("env_step")) for r in rows])
    value = np.array([_float(r.get(metric)) for r in rows])
    keep = np.isfinite(step) & np.isfinite(value)
    if not keep.any():
        return None
    # an evaluation row has its own clock (eval/minutes); otherwise train/minutes, interpolated
    # from the env step for rows that lack it (evaluations between two training rows)
    at = np.array([_float(r.get("eval/minutes")) for r in rows])[keep]
    if not (metric.startswith("eval/") and np.isfinite(at).all()):
        minutes = np.array([_float(r.get("train/minutes")) for r in rows])
        known = np.isfinite(step) & np.isfinite(minutes)
        at = (np.interp(step[keep], step[known], minutes[known], left=math.nan, right=math.nan)
              if known.sum() >= 2 else np.where(known[keep], minutes[keep], math.nan))
    order = np.argsort(step[keep], kind="stable")
    return RunCurve(path=run_dir, name=name, seed=None if seed is None else int(seed), game=game, config=cfg,
                    steps=step[keep][order], values=value[keep][order], minutes=np.asarray(at)[order])


def readable_name(name: str) -> str:
    """A run name without its ``-s<seed>`` part and trailing config hash.

    Example:
        >>> readable_name("cartpole-CartPole-v1-rssm-s0-3fa9c2d1")
        'cartpole-CartPole-v1-rssm'
    """
    return _HASH_SUFFIX.sub("", _SEED_IN_NAME.sub("", name))


def _identity_leaves(cfg: Mapping, *, drop_task: bool = False) -> dict[str, Any]:
    """The config leaves that define a run, without ``seed`` (and ``env.task``)."""
    from imwm.training.identity import identity_config

    ident = identity_config(cfg)
    ident.pop("seed", None)
    if drop_task and isinstance(ident.get("env"), dict):
        ident["env"].pop("task", None)
    return config_leaves(ident, keep_empty=True)


def _canonical(leaves: Mapping[str, Any]) -> str:
    return json.dumps(leaves, sort_keys=True, default=repr)


def _differing(leaf_sets: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = sorted(set().union(*leaf_sets)) if leaf_sets else []
    return [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=repr) for s in leaf_sets}) > 1]


def _short_keys(keys: Sequence[str], limit: int = 3) -> list[str]:
    """Differing keys worth showing: a group whose selector (``dynamics.name``, ``intrinsic.typ``)
    differs is shown by the selector alone; at most ``limit`` keys."""
    groups_with_selector = {k.rsplit(".", 1)[0] for k in keys if "." in k and k.rsplit(".", 1)[1] in _SELECTORS}
    kept = [k for k in keys if "." not in k or k.rsplit(".", 1)[0] not in groups_with_selector
            or k.rsplit(".", 1)[1] in _SELECTORS]
    return kept[:limit]


def _label_groups(keyed: Mapping[str, list[RunCurve]], base: Mapping[str, str],
                  leaves: Mapping[str, dict]) -> dict[str, str]:
    """``{group key: label}``: the base label, plus ``[k=v, ...]`` where base labels collide."""
    labels = {}
    by_base: dict[str, list[str]] = {}
    for key in keyed:
        by_base.setdefault(base[key], []).append(key)
    for name, keys in by_base.items():
        if len(keys) == 1:
            labels[keys[0]] = name
            continue
        shown = _short_keys(_differing([leaves[k] for k in keys]))
        for key in keys:
            extra = ", ".join(f"{k}={leaves[key].get(k)}" for k in shown)
            labels[key] = f"{name} [{extra}]" if extra else f"{name} [{key[:8]}]"
    return labels


def group_runs(runs: Sequence[RunCurve], by: str = "config") -> dict[str, list[RunCurve]]:
    """Groups runs that differ only in their seed; sets each run's ``group`` (its label; groups
    are per game) and ``method`` (the label with the game taken out, for the Atari aggregate).

    Args:
        by: ``"config"`` (saved config without seed and non-defining keys; by name for runs
            without a ``config.yaml``) or ``"name"`` (:func:`readable_name`; warns when a group's
            configs differ).

    Returns:
        ``{group label: runs}`` in first-seen order.

    Example:
        >>> zero = np.zeros(1)
        >>> curve = lambda name: RunCurve(Path(name), name, None, "pong", {}, zero, zero, zero)
        >>> runs = [curve("pong-rssm-s0"), curve("pong-rssm-s1"), curve("pong-vta-s0")]
        >>> {label: [run.name for run in members] for label, members in group_runs(runs).items()}
        {'pong-rssm': ['pong-rssm-s0', 'pong-rssm-s1'], 'pong-vta': ['pong-vta-s0']}
        >>> runs[0].group, runs[0].method  # no config.yaml: by name; the method has no game
        ('pong-rssm', '*-rssm')
    """
    if by not in ("name", "config"):
        raise UserError(f"--group-by must be name or config, got {by!r}")
    for kind in ("group", "method"):
        keyed: dict[str, list[RunCurve]] = {}
        base: dict[str, str] = {}
        leaves: dict[str, dict] = {}
        for run in runs:
            name = readable_name(run.name)
            if kind == "method" and run.game:
                name = name.replace(run.game, "*")
            own = _identity_leaves(run.config, drop_task=kind == "method") if run.config else {}
            if by == "config" and run.config:
                key = _canonical(own)
            else:
                key = f"name:{name}" if kind == "method" or not run.game else f"name:{run.game}:{name}"
            if kind == "group" and by == "config" and run.config:
                key = f"{run.game}:{key}"
            keyed.setdefault(key, []).append(run)
            base.setdefault(key, name)
            leaves.setdefault(key, own)
        labels = _label_groups(keyed, base, leaves)
        for key, members in keyed.items():
            for run in members:
                setattr(run, kind, labels[key])
            if kind == "group" and by == "name":  # same name, different configs: say so
                differ = _differing([_identity_leaves(r.config) for r in members if r.config])
                if differ:
                    warnings.warn(f"runs grouped as {labels[key]!r} differ in config keys {differ[:6]}; "
                                  "group them with --group-by config", stacklevel=2)
    games_of: dict[str, set] = {}
    for run in runs:
        games_of.setdefault(run.group, set()).add(run.game)
    for run in runs:  # a label shared by runs of several games (a custom run_name) names the game
        if len(games_of[run.group]) > 1:
            run.group = f"{run.game} | {run.group}"
    groups: dict[str, list[RunCurve]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    return groups
