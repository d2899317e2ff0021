"""Learning curves from run folders: seeds aggregated with bootstrap CIs, per-game panels, and the
human-normalised interquartile mean (IQM) over Atari games. The logic of ``scripts/plot.py``.

A *run* is a folder with a ``metrics.csv`` (``imwm.training.logging``) and, normally, the
``config.yaml`` the trainer saved. Runs are found under any folder given (a run, a parent of runs,
a sweep folder; a sweep record ``runs/sweeps/<date>/jobs.tsv`` stands for the run folders it lists).
Runs of one configuration that differ only in their seed are one *group*:

- ``by="config"`` (default): the saved config without ``seed`` and the keys that do not define a
  run (``imwm.training.identity.EXCLUDED_KEYS``: budget, logging, device, ...); a run without a
  ``config.yaml`` is grouped by name;
- ``by="name"``: the ``run_name`` without its ``-s<seed>`` part and its config hash
  (``cartpole-CartPole-v1-rssm-s0-3fa9c2d1`` and ``...-s1-77b0e4aa`` are ``cartpole-CartPole-v1-rssm``).

A group is labelled by that readable name, plus the config keys in which it differs from other
groups of the same name (``[replay.name=curious]``).

Per game (``env.task``), each group is drawn as the mean over its seeds with a percentile
bootstrap 95% confidence interval of that mean (seeds resampled, numpy, fixed seed). Seeds are put
on a common x grid (the x values inside every seed's range, linear interpolation), by env steps
or wall-clock minutes (``eval/minutes`` for evaluation metrics when logged, else
``train/minutes`` interpolated from the rows that have it).

For Atari games with random and human reference scores (:data:`ATARI_RANDOM_HUMAN`) an aggregate
panel shows, per method (a group with the game taken out), the IQM of human-normalised scores
``(score - random) / (human - random)`` over all runs x games, with a stratified bootstrap 95% CI
(runs resampled within each game), as ``rliable`` computes it (Agarwal et al., "Deep
Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021):
:func:`iqm` is ``scipy.stats.trim_mean(scores, 0.25)`` over the flattened scores.

Example:
    >>> iqm([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])  # drops 2 lowest and 2 highest
    3.5
    >>> round(human_normalized(16.0, "breakout"), 4)  # (16 - 1.7) / (30.5 - 1.7)
    0.4965
"""
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

from imwm.errors import UserError

__all__ = ["ATARI_RANDOM_HUMAN", "RunCurve", "human_normalized", "iqm", "bootstrap_ci",
           "stratified_bootstrap_iqm", "find_runs", "load_run", "group_runs", "aggregate_group",
           "plot_learning_curves"]

#: The 26 Atari 100k games: ``task -> (random score, human score)``. The standard reference scores
#: (random agent and human tester of Mnih et al., "Human-level control through deep reinforcement
#: learning", Nature 2015), as tabulated for Atari 100k by Kaiser et al., "Model-Based
#: Reinforcement Learning for Atari" (ICLR 2020) and used with rliable (Agarwal et al., 2021).
ATARI_RANDOM_HUMAN: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7), "amidar": (5.8, 1719.5), "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3), "bank_heist": (14.2, 753.1), "battle_zone": (2360.0, 37187.5),
    "boxing": (0.1, 12.1), "breakout": (1.7, 30.5), "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4), "demon_attack": (152.1, 1971.0), "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7), "gopher": (257.6, 2412.5), "hero": (1027.0, 30826.4),
    "jamesbond": (29.0, 302.8), "kangaroo": (52.0, 3035.0), "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3), "ms_pacman": (307.3, 6951.6), "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3), "qbert": (163.9, 13455.0), "road_runner": (11.5, 7845.0),
    "seaquest": (68.4, 42054.7), "up_n_down": (533.4, 11693.2),
}

_SEED_IN_NAME = re.compile(r"-s(\d+)(?=$|-)")
_HASH_SUFFIX = re.compile(r"-[0-9a-f]{8}$")  # imwm.training.identity's config hash
_SELECTORS = ("name", "typ", "enable")  # a group's key that implies its other keys


def _atari_key(task: str | None) -> str | None:
    if not task:
        return None
    name = task.strip().lower()
    name = name[len("atari_"):] if name.startswith("atari_") else name
    return name if name in ATARI_RANDOM_HUMAN else None


def human_normalized(score: Any, game: str) -> Any:
    """``(score - random) / (human - random)`` for an Atari 100k game (snake case, e.g.
    ``"ms_pacman"``); works on arrays.

    Raises:
        KeyError: a game without reference scores.

    Example:
        >>> # pong: random -20.7, human 14.6
        >>> human_normalized([-20.7, 14.6, 32.25], "pong").round(4).tolist()
        [0.0, 1.0, 1.5]
    """
    key = _atari_key(game)
    if key is None:
        raise KeyError(f"no random/human reference scores for {game!r}; known: {sorted(ATARI_RANDOM_HUMAN)}")
    random_score, human_score = ATARI_RANDOM_HUMAN[key]
    out = (np.asarray(score, dtype=float) - random_score) / (human_score - random_score)
    return float(out) if out.ndim == 0 else out


def iqm(scores: Any, axis: int | None = None) -> Any:
    """Interquartile mean: the mean of the middle 50% of ``scores`` (all of them when ``axis`` is
    None), cutting ``floor(0.25 * n)`` values at each end, as ``scipy.stats.trim_mean(x, 0.25)``
    and rliable's ``aggregate_iqm`` do.

    Example:
        >>> iqm([1, 2, 3, 4, 5, 6, 7, 8])  # mean of 3, 4, 5, 6
        4.5
        >>> iqm([1, 2, 9])  # floor(0.75) = 0: nothing is cut
        4.0
        >>> iqm([[1, 10], [2, 20], [3, 30], [400, 40]], axis=0).tolist()
        [2.5, 25.0]
    """
    x = np.asarray(scores, dtype=float)
    if axis is None:
        x, axis = x.reshape(-1), 0
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    if n == 0:
        raise ValueError("iqm of no scores")
    cut = int(0.25 * n)
    out = np.sort(x, axis=0)[cut:n - cut].mean(axis=0)
    return float(out) if np.ndim(out) == 0 else out


def bootstrap_ci(samples: Any, *, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs and its percentile bootstrap CI, per column.

    Args:
        samples: ``[n_runs, n_points]`` (or ``[n_runs]``).
        n_boot: bootstrap resamples of the runs.
        level: confidence level.
        seed: numpy seed (the same input gives the same interval).

    Returns:
        ``(mean, low, high)``, each ``[n_points]`` (scalars for 1-D input). One run gives a
        zero-width interval.

    Example:
        >>> mean, low, high = bootstrap_ci([[1.0, 10.0], [3.0, 30.0]])
        >>> mean.tolist(), bool((low <= mean).all() and (mean <= high).all())
        ([2.0, 20.0], True)
    """
    x = np.asarray(samples, dtype=float)
    flat = x.ndim == 1
    x = x[:, None] if flat else x
    n = x.shape[0]
    if n == 0:
        raise ValueError("bootstrap_ci of no runs")
    mean = x.mean(axis=0)
    if n == 1:
        low, high = mean.copy(), mean.copy()
    else:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_boot, n))
        means = x[idx].mean(axis=1)  # [n_boot, n_points]
        alpha = (1.0 - level) / 2
        low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    if flat:
        return mean[0], low[0], high[0]
    return mean, low, high


def stratified_bootstrap_iqm(scores_by_game: Sequence[Any], *, n_boot: int = 2000, level: float = 0.95,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM over runs x games and its stratified percentile bootstrap CI (runs resampled within each
    game), per column.

    Args:
        scores_by_game: one ``[n_runs_g, n_points]`` array per game (normalised scores; the
            number of runs may differ between games).

    Returns:
        ``(iqm, low, high)``, each ``[n_points]``.

    Example:
        >>> games = [[[0.0], [1.0]], [[2.0], [3.0]]]  # 2 games x 2 runs x 1 point
        >>> point, low, high = stratified_bootstrap_iqm(games, n_boot=200)
        >>> # a resample keeps 2 runs per game, so its IQM is (max of game 1 + min of game 2) / 2
        >>> point.tolist(), low.tolist(), high.tolist()
        ([1.5], [1.0], [2.0])
    """
    if not len(scores_by_game):
        raise ValueError("stratified_bootstrap_iqm of no games")
    empty = [i for i, g in enumerate(scores_by_game) if len(g) == 0]
    if empty:
        raise ValueError(f"stratified_bootstrap_iqm: game(s) {empty} have no runs; drop them or add runs")
    games = [np.asarray(g, dtype=float).reshape(len(g), -1) for g in scores_by_game]
    widths = {g.shape[1] for g in games}
    if len(widths) > 1:
        raise ValueError(f"stratified_bootstrap_iqm: games have different numbers of points {sorted(widths)}")
    point = iqm(np.concatenate(games, axis=0), axis=0)
    rng = np.random.default_rng(seed)
    stats = np.empty((n_boot, point.shape[0]))
    for b in range(n_boot):
        resampled = [g[rng.integers(0, g.shape[0], size=g.shape[0])] for g in games]
        stats[b] = iqm(np.concatenate(resampled, axis=0), axis=0)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(stats, [alpha, 1.0 - alpha], axis=0)
    return point, low, high


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


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _identity_leaves(cfg: Mapping, *, drop_task: bool = False) -> dict[str, Any]:
    """The config leaves that define a run, without ``seed`` (and ``env.task``)."""
    from imwm.training.identity import identity_config

    ident = identity_config(cfg)
    ident.pop("seed", None)
    if drop_task and isinstance(ident.get("env"), dict):
        ident["env"].pop("task", None)
    return _leaves(ident)


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


def _common_grid(xs: Sequence[np.ndarray]) -> np.ndarray:
    """The x values of all runs that lie inside every run's range (NaN x dropped)."""
    xs = [x[np.isfinite(x)] for x in xs]
    if any(len(x) == 0 for x in xs):
        return np.array([])
    lo, hi = max(x.min() for x in xs), min(x.max() for x in xs)
    grid = np.unique(np.concatenate(xs))
    return grid[(grid >= lo) & (grid <= hi)]


def _on_grid(run: RunCurve, axis: str, grid: np.ndarray) -> np.ndarray:
    x = run.x(axis)
    ok = np.isfinite(x)
    return np.interp(grid, x[ok], run.values[ok])


def aggregate_group(runs: Sequence[RunCurve], *, axis: str = "env_step", n_boot: int = 2000,
                    seed: int = 0) -> dict[str, Any]:
    """Mean over a group's seeds and its bootstrap 95% CI on a common x grid.

    Returns:
        ``{"x", "mean", "low", "high", "n"}`` (``n``: seeds; empty arrays when the seeds' x
        ranges do not overlap).

    Example:
        >>> curve = lambda v: RunCurve(Path("r"), "r", None, None, {}, np.arange(len(v)) * 100,
        ...                            np.array(v, float), np.full(len(v), np.nan))
        >>> out = aggregate_group([curve([1, 3, 5]), curve([3, 5])])  # common x: steps 0 and 100
        >>> out["x"].tolist(), out["mean"].tolist(), out["n"]
        ([0.0, 100.0], [2.0, 4.0], 2)
        >>> out["low"].tolist(), out["high"].tolist()  # resampled seeds average 1, 2 or 3 at x=0
        ([1.0, 3.0], [3.0, 5.0])
    """
    grid = _common_grid([r.x(axis) for r in runs])
    if grid.size == 0:
        empty = np.array([])
        return {"x": empty, "mean": empty, "low": empty, "high": empty, "n": len(runs)}
    values = np.stack([_on_grid(r, axis, grid) for r in runs])
    mean, low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"x": grid, "mean": mean, "low": low, "high": high, "n": len(runs)}


def _aggregate_methods(runs: Sequence[RunCurve], *, axis: str, n_boot: int, seed: int) -> dict[str, dict]:
    """Per method: human-normalised IQM over the Atari runs x games with a stratified CI."""
    by_method: dict[str, dict[str, list[RunCurve]]] = {}
    for run in runs:
        if _atari_key(run.game) is not None:
            by_method.setdefault(run.method, {}).setdefault(_atari_key(run.game), []).append(run)
    out = {}
    for method, games in by_method.items():
        grid = _common_grid([r.x(axis) for members in games.values() for r in members])
        if grid.size == 0:
            continue
        scores = [np.stack([human_normalized(_on_grid(r, axis, grid), game) for r in members])
                  for game, members in games.items()]
        point, low, high = stratified_bootstrap_iqm(scores, n_boot=n_boot, seed=seed)
        out[method] = {"x": grid, "mean": point, "low": low, "high": high, "games": sorted(games),
                       "n": sum(len(m) for m in games.values())}
    return out


def plot_learning_curves(paths: Iterable[str | Path], out: str | Path, *, metric: str = "eval/return",
                         x: str = "env_step", by: str = "config", n_boot: int = 2000, seed: int = 0,
                         title: str | None = None, aggregate: bool = True) -> dict[str, Any]:
    """Finds runs, groups seeds, draws one panel per game (+ the Atari IQM panel) into a PNG.

    Args:
        paths: run folders, parents of runs or sweep folders.
        out: the PNG file.
        metric: the ``metrics.csv`` column to draw.
        x: ``"env_step"`` or ``"minutes"`` (wall clock: ``eval/minutes`` / ``train/minutes``).
        by: grouping (:func:`group_runs`).
        n_boot, seed: bootstrap resamples and numpy seed.
        title: figure title.
        aggregate: draw the human-normalised IQM panel when Atari games with reference scores
            are present.

    Returns:
        ``{"out", "runs", "skipped", "groups": {label: {"game", "n", "final_mean", "final_low",
        "final_high", "x_last"}}, "aggregate": {method: {...}}}``.

    Raises:
        UserError: no runs, no run with ``metric``, a bad ``x`` / ``by``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in ("env_step", "minutes"):
        raise UserError(f"--x must be env_step or minutes, got {x!r}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file, got {out}")
    runs, skipped = [], []
    for run_dir in find_runs(paths):
        run = load_run(run_dir, metric)
        (runs if run is not None else skipped).append(run if run is not None else str(run_dir))
    if not runs:
        raise UserError(f"none of the {len(skipped)} run(s) found logged {metric!r}")
    if x == "minutes" and all(not np.isfinite(r.minutes).any() for r in runs):
        raise UserError("--x minutes: no run logged eval/minutes or train/minutes")
    groups = group_runs(runs, by)
    games = list(dict.fromkeys(r.game or "unknown" for r in runs))
    agg = _aggregate_methods(runs, axis=x, n_boot=n_boot, seed=seed) if aggregate else {}
    panels = len(games) + (1 if agg else 0)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.6 * rows), squeeze=False)
    colours = {}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    summary: dict[str, Any] = {"out": str(out), "runs": [str(r.path) for r in runs], "skipped": skipped,
                               "groups": {}, "aggregate": {}}
    xlabel = "env steps" if x == "env_step" else "wall-clock minutes"
    for i, game in enumerate(games):
        ax = axes[i // cols][i % cols]
        for label, members in groups.items():
            if (members[0].game or "unknown") != game:
                continue
            colour = colours.setdefault(members[0].method, cycle[len(colours) % len(cycle)])
            curve = aggregate_group(members, axis=x, n_boot=n_boot, seed=seed)
            if curve["x"].size == 0:
                warnings.warn(f"{label}: its seeds' {xlabel} ranges do not overlap; not drawn", stacklevel=2)
                continue
            marker = "o" if curve["x"].size == 1 else None
            ax.plot(curve["x"], curve["mean"], color=colour, marker=marker, label=f"{label} (n={curve['n']})")
            ax.fill_between(curve["x"], curve["low"], curve["high"], color=colour, alpha=0.2, linewidth=0)
            summary["groups"][label] = {"game": game, "n": curve["n"], "x_last": float(curve["x"][-1]),
                                        "final_mean": float(curve["mean"][-1]),
                                        "final_low": float(curve["low"][-1]),
                                        "final_high": float(curve["high"][-1])}
        ax.set_title(game)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if agg:
        ax = axes[len(games) // cols][len(games) % cols]
        for method, curve in agg.items():
            colour = colours.setdefault(method, cycle[len(colours) % len(cycle)])
            ax.plot(curve["x"], curve["mean"], color=colour,
                    label=f"{method} ({len(curve['games'])} games, {curve['n']} runs)")
            ax.fill_between(curve["x"], curve["low"], curve["high"], color=colour, alpha=0.2, linewidth=0)
            summary["aggregate"][method] = {"games": curve["games"], "n": curve["n"],
                                            "final_iqm": float(curve["mean"][-1]),
                                            "final_low": float(curve["low"][-1]),
                                            "final_high": float(curve["high"][-1])}
        ax.set_title("Atari: human-normalised IQM (95% stratified bootstrap CI)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("IQM of (score - random) / (human - random)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for j in range(panels, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(title or f"{metric}: mean over seeds, 95% bootstrap CI", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return summary
