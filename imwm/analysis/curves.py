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

import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from imwm.analysis.run_groups import RunCurve, find_runs, group_runs, load_run, readable_name
from imwm.analysis.scores import (ATARI_RANDOM_HUMAN, atari_key, bootstrap_ci, human_normalized, iqm,
                                  stratified_bootstrap_iqm)
from imwm.errors import UserError

__all__ = ["ATARI_RANDOM_HUMAN", "RunCurve", "human_normalized", "iqm", "bootstrap_ci",
           "stratified_bootstrap_iqm", "find_runs", "load_run", "readable_name", "group_runs", "aggregate_group",
           "plot_learning_curves"]


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
        if atari_key(run.game) is not None:
            by_method.setdefault(run.method, {}).setdefault(atari_key(run.game), []).append(run)
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
