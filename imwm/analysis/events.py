"""Per-step events that a meaningful boundary might coincide with.

Large visual change (the top p% of ``frame_delta``) and ``reward != 0`` are the obvious two;
semantic events are here too: life loss (ALE's ``lives`` counter drops), score change (the raw
game score moves) and episode end. All functions return ``[T]`` bool arrays aligned with the input steps.

Example:
    >>> import numpy as np
    >>> frames = np.zeros((5, 3, 4, 4), np.uint8); frames[3:] = 255
    >>> frame_delta(frames).round(2).tolist()
    [nan, 0.0, 0.0, 1.0, 0.0]
    >>> life_loss_events([3, 3, 2, 2, 1]).tolist()
    [False, False, True, False, True]
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from imwm.analysis._arrays import as_flags, to_numpy

__all__ = [
    "frame_delta",
    "percentile_events",
    "reward_events",
    "score_change_events",
    "life_loss_events",
    "episode_end_events",
    "build_events",
    "delta_event_name",
    "widen_events",
]


def frame_delta(frames: Any) -> np.ndarray:
    """Mean absolute difference between consecutive frames: ``mean |f_t - f_{t-1}|``.

    Args:
        frames: ``[T, ...]`` frames (any pixel layout). uint8 frames are scaled to [0, 1]
            first, so the value is the mean per-pixel change as a fraction of full scale.

    Returns:
        ``[T]`` float64; step 0 has no previous frame and is NaN.

    Example:
        >>> frame_delta(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.5]])).tolist()
        [nan, 0.5, 0.25]
        >>> frame_delta(np.array([[0, 0], [255, 51]], np.uint8)).round(4).tolist()  # (1 + 0.2) / 2
        [nan, 0.6]
    """
    arr = to_numpy(frames, "frames")
    if arr.ndim < 2:
        raise ValueError(f"frames must be [T, ...] with at least one pixel dim, got shape {arr.shape}")
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    arr = arr.astype(np.float32) / scale
    out = np.full(arr.shape[0], np.nan, dtype=np.float64)
    if arr.shape[0] > 1:
        out[1:] = np.abs(np.diff(arr, axis=0)).reshape(arr.shape[0] - 1, -1).mean(axis=1)
    return out


def percentile_events(values: Any, percentile: float) -> np.ndarray:
    """Steps whose value is strictly above the ``percentile``-th percentile of the episode.

    Strictly above, so that an episode with many identical top values (a static screen)
    does not turn most steps into events; NaN steps are never events and do not enter the
    percentile. With continuous values about ``(100 - percentile)%`` of steps are events.

    Example:
        >>> percentile_events(np.arange(10.0), 80).nonzero()[0].tolist()  # 80th percentile: 7.2
        [8, 9]
        >>> # the threshold is 2.0 itself, so ties at it are not events
        >>> percentile_events([np.nan, 2.0, 2.0, 2.0, 7.0], 50).tolist()
        [False, False, False, False, True]
    """
    if not 0 <= percentile < 100:
        raise ValueError(f"percentile must be in [0, 100), got {percentile!r}")
    vals = to_numpy(values, "values").astype(np.float64)
    if vals.ndim != 1:
        raise ValueError(f"values must be [T], got shape {vals.shape}")
    finite = np.isfinite(vals)
    if not finite.any():
        return np.zeros(vals.shape, dtype=bool)
    threshold = np.percentile(vals[finite], percentile)
    return finite & (np.where(finite, vals, -np.inf) > threshold)


def _series(values: Any, name: str, *, finite: bool = True) -> np.ndarray:
    """A per-step float series ``[T]`` (a trailing ``[..., 1]`` is squeezed), every value finite
    unless ``finite=False``."""
    arr = to_numpy(values, name).astype(np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be [T], got shape {arr.shape}")
    if finite and not np.isfinite(arr).all():
        # a NaN reward would otherwise count as an event (NaN != 0) and, summed into a score, every later step too
        raise ValueError(f"{name} must be finite, found {arr[~np.isfinite(arr)][0]} at step "
                         f"{int(np.flatnonzero(~np.isfinite(arr))[0])}")
    return arr


def reward_events(reward: Any) -> np.ndarray:
    """Steps with a non-zero reward (a trailing ``[..., 1]`` is squeezed).

    Example:
        >>> reward_events([[0.0], [1.0], [0.0], [-0.5]]).tolist()
        [False, True, False, True]
    """
    arr = _series(reward, "reward")
    return arr != 0


def score_change_events(raw_reward: Any) -> np.ndarray:
    """Steps at which the game score (the running sum of *raw* env rewards) changes, i.e. the raw
    reward is non-zero (compared per step, so a long game's large score cannot round a change away).

    Equal to ``reward_events`` when the reward the model saw is the raw ALE reward; it
    differs when the stored reward was transformed (clipped, scaled, or with an intrinsic
    reward added), which is why the rollout keeps the raw reward for this event.

    Example:
        >>> score_change_events([0.0, 3.0, 0.0, -1.0]).tolist()  # score 0, 3, 3, 2
        [False, True, False, True]
        >>> score_change_events([0.0, float("nan"), 1.0])
        Traceback (most recent call last):
        ...
        ValueError: raw_reward must be finite, found nan at step 1
    """
    return _series(raw_reward, "raw_reward") != 0


def life_loss_events(lives: Any) -> np.ndarray:
    """Steps at which ALE's ``lives`` counter is lower than at the previous step (NaN lives, as
    recorded for envs without the counter, are never events).

    Example:
        >>> life_loss_events([[3], [2], [2], [3], [2]]).tolist()  # a life gained is no event
        [False, True, False, False, True]
        >>> life_loss_events([float("nan")] * 3).tolist()
        [False, False, False]
    """
    arr = _series(lives, "lives", finite=False)  # NaN: the env has no lives counter, so no event
    out = np.zeros(arr.shape, dtype=bool)
    out[1:] = arr[1:] < arr[:-1]
    return out


def episode_end_events(is_last: Any) -> np.ndarray:
    """The last step of each episode (``is_last`` flags, e.g. of concatenated episodes).

    Example:
        >>> episode_end_events([[0], [0], [1], [0], [1]]).tolist()
        [False, False, True, False, True]
    """
    return as_flags(is_last, "is_last")


def widen_events(flags: Any, after: int) -> np.ndarray:
    """Flags an event's own step and the ``after`` steps that follow it.

    A boundary is where a new segment *starts*, which is often the step after the event that
    ends the old one: in Catch the frame after a reward is the first to show the next object.
    Widening the event by one step lets such a boundary count, without moving it.

    Example:
        >>> widen_events([False, True, False, False, True, False], 1).astype(int).tolist()
        [0, 1, 1, 0, 1, 1]
    """
    if int(after) != after or after < 0:
        raise ValueError(f"after must be an integer >= 0, got {after!r}")
    arr = as_flags(flags, "flags")
    out = arr.copy()
    for k in range(1, int(after) + 1):
        out[k:] |= arr[:-k]
    return out


def delta_event_name(percentile: float) -> str:
    """Name of the frame-change event at ``percentile``: ``delta_p90``, ``delta_p99.5``.

    Example:
        >>> delta_event_name(90.0), delta_event_name(99.5)
        ('delta_p90', 'delta_p99.5')
    """
    return f"delta_p{percentile:g}"


def build_events(*, frame_delta: Any = None, percentiles: Iterable[float] = (90,),
                 reward: Any = None, raw_reward: Any = None, lives: Any = None,
                 is_last: Any = None) -> dict[str, np.ndarray]:
    """All events computable from what is given, by name.

    Returns:
        ``{"delta_p90": ..., "reward": ..., "score_change": ..., "life_loss": ...,
        "episode_end": ...}``: one entry per percentile for ``frame_delta``, the others only
        when their input is given.

    Raises:
        ValueError: inputs of different lengths.

    Example:
        >>> events = build_events(frame_delta=[np.nan, 0.0, 1.0, 0.0], percentiles=(50,),
        ...                       reward=[0, 1, 0, 0], is_last=[0, 0, 0, 1])
        >>> {name: flags.nonzero()[0].tolist() for name, flags in events.items()}
        {'delta_p50': [2], 'reward': [1], 'episode_end': [3]}
        >>> build_events(reward=[0, 1], lives=[3, 3, 2])
        Traceback (most recent call last):
        ...
        ValueError: event inputs must all have one value per step, got lengths {'reward': 2, 'life_loss': 3}
    """
    events: dict[str, np.ndarray] = {}
    if frame_delta is not None:
        for p in percentiles:
            events[delta_event_name(p)] = percentile_events(frame_delta, p)
    if reward is not None:
        events["reward"] = reward_events(reward)
    if raw_reward is not None:
        events["score_change"] = score_change_events(raw_reward)
    if lives is not None:
        events["life_loss"] = life_loss_events(lives)
    if is_last is not None:
        events["episode_end"] = episode_end_events(is_last)
    lengths = {k: v.shape[0] for k, v in events.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"event inputs must all have one value per step, got lengths {lengths}")
    return events
