"""Scores across Atari games and seeds: human-normalised scores, the interquartile mean (IQM), and
bootstrap confidence intervals (plain and stratified by game), as ``scripts/plot.py`` aggregates them.

The IQM and its stratified bootstrap follow rliable (Agarwal et al., "Deep Reinforcement Learning
at the Edge of the Statistical Precipice", NeurIPS 2021).

Example:
    >>> iqm([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])  # drops 2 lowest and 2 highest
    3.5
    >>> round(human_normalized(16.0, "breakout"), 4)  # (16 - 1.7) / (30.5 - 1.7)
    0.4965
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["ATARI_RANDOM_HUMAN", "atari_key", "human_normalized", "iqm", "bootstrap_ci", "stratified_bootstrap_iqm"]

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


def atari_key(task: str | None) -> str | None:
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
    key = atari_key(game)
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
