"""Do learned boundaries coincide with events? Boundary-vs-event statistics for one episode.

Given per-step READ flags and per-step event flags (top-p% frame change, reward, life loss, ...),
compare the event rate at READ steps with the rate elsewhere, with a permutation test, an
evenly spaced baseline of the same boundary count, the ROC AUC of the READ probability and
Cohen's d of the frame change at boundaries.

Every metric that an input makes undefined (no boundaries, every step a boundary, no events,
every step an event, constant frame change) is ``NaN`` and ``nan_reasons[key]`` says why; no
input shape that passes validation makes these functions raise.

Example:
    >>> import numpy as np
    >>> events = np.zeros(100, bool); events[::10] = True
    >>> m = boundary_event_metrics(events, events, permutations=50, seed=0)
    >>> m["event_at_boundary"], m["lift_over_event_rate"], m["periodic_baseline"]
    (1.0, 10.0, 1.0)
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from imwm.analysis._arrays import as_flags, as_series
from imwm.analysis.boundary_truth import evenly_spaced
from imwm.errors import check_integer

__all__ = [
    "boundary_event_metrics",
    "multi_event_metrics",
    "aggregate_episodes",
    "roc_auc",
    "cohens_d",
    "permutation_p_value",
    "METRIC_KEYS",
]

#: The boundary-vs-event statistics, in the order tables print them.
METRIC_KEYS = (
    "event_at_boundary",
    "event_at_nonboundary",
    "lift_over_event_rate",
    "perm_p_value",
    "periodic_baseline",
    "auc_read_prob",
    "cohens_d_frame_delta",
)

_NAN = float("nan")


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC of ``score`` for binary ``label`` (Mann-Whitney U / (n_pos * n_neg)).

    Ties get their average rank, so a constant score gives exactly 0.5. NaN when one class
    is empty.

    Example:
        >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])  # 3 of 4 (event, other) pairs in order
        0.75
        >>> roc_auc([0.5, 0.5, 0.5], [0, 1, 1]), roc_auc([0.3, 0.7], [1, 0])
        (0.5, 0.0)
    """
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label, dtype=bool)
    n_pos = int(label.sum())
    n_neg = label.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return _NAN
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    ranks = np.empty(score.size, dtype=np.float64)
    # average 1-based rank within each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    ends = np.r_[starts[1:], score.size]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + 1 + end) / 2.0
    u = ranks[label].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def cohens_d(group: np.ndarray, rest: np.ndarray) -> float:
    """Cohen's d with the pooled standard deviation: ``(mean_g - mean_r) / s_pooled``.

    ``s_pooled = sqrt(((n_g - 1) s_g^2 + (n_r - 1) s_r^2) / (n_g + n_r - 2))`` with sample
    variances. NaN when a group is empty, when ``n_g + n_r <= 2`` or when ``s_pooled == 0``.

    Example:
        >>> cohens_d([2.0, 4.0, 6.0], [0.0, 2.0, 4.0])  # means 4 and 2, both sample stds 2
        1.0
        >>> cohens_d([1.0, 1.0], [1.0, 1.0])
        nan
    """
    group = np.asarray(group, dtype=np.float64)
    rest = np.asarray(rest, dtype=np.float64)
    n_g, n_r = group.size, rest.size
    if n_g == 0 or n_r == 0 or n_g + n_r <= 2:
        return _NAN
    ss = ((group - group.mean()) ** 2).sum() + ((rest - rest.mean()) ** 2).sum()
    pooled = np.sqrt(ss / (n_g + n_r - 2))
    if pooled == 0:
        return _NAN
    return float((group.mean() - rest.mean()) / pooled)


def _permutation_count(permutations: Any) -> int:
    return check_integer("permutations", permutations)


def permutation_p_value(boundary: np.ndarray, events: np.ndarray, *, permutations: int,
                        seed: int) -> tuple[float, float]:
    """One-sided permutation test: are events more frequent at the READ steps than by chance?

    The statistic is the number of events at READ steps. Under the null the same number of
    READs sits at a uniformly random subset of the steps (positions permuted, count fixed).
    ``p = (1 + #{draws >= observed}) / (permutations + 1)`` (the +1 counts the observed
    placement as one draw, so p is never 0 and the test keeps its level).

    Args:
        boundary: ``[T]`` READ flags (bool or 0/1), at least one READ.
        events: ``[T]`` event flags (bool or 0/1).
        permutations: random placements drawn (>= 1).
        seed: seed of the placements.

    Returns:
        ``(p_value, null_mean_event_rate)``.

    Raises:
        ValueError: flags that are not 0/1, shapes that differ, no READ, or ``permutations`` not an
            integer >= 1.

    Example:
        >>> events = np.zeros(100, bool); events[[10, 50, 90]] = True
        >>> # a random 3 of 100 steps holds all 3 events once in 161700 draws: p = 1 / (99 + 1)
        >>> permutation_p_value(events, events, permutations=99, seed=0)[0]
        0.01
        >>> permutation_p_value(np.arange(100) < 3, events, permutations=99, seed=0)[0]
        1.0
        >>> permutation_p_value(events.astype(int), events.astype(int), permutations=99, seed=0)[0]
        0.01
    """
    # integer 0/1 flags would index positions 0 and 1 instead of masking: make them bool first
    boundary, events = as_flags(boundary, "boundary"), as_flags(events, "events")
    if boundary.shape != events.shape:
        raise ValueError(f"boundary and events must have the same shape, got {boundary.shape} and {events.shape}")
    permutations = _permutation_count(permutations)
    length = boundary.size
    n_b = int(boundary.sum())
    if n_b == 0:
        raise ValueError("boundary has no READ step: the test is undefined")
    observed = int(events[boundary].sum())
    rng = np.random.default_rng(seed)
    # chunk the [draws, T] key matrix so memory stays ~32 MB for long episodes
    chunk = max(1, min(permutations, 4_000_000 // max(length, 1)))
    hits = []
    done = 0
    while done < permutations:
        k = min(chunk, permutations - done)
        keys = rng.random((k, length))
        subset = np.argpartition(keys, n_b - 1, axis=1)[:, :n_b]  # a uniform n_b-subset per row
        hits.append(events[subset].sum(axis=1))
        done += k
    hits_all = np.concatenate(hits)
    p_value = (1 + int((hits_all >= observed).sum())) / (permutations + 1)
    return float(p_value), float(hits_all.mean() / n_b)


def boundary_event_metrics(boundary: Any, events: Any, *, read_prob: Any = None,
                           frame_delta: Any = None, permutations: int = 200,
                           seed: int = 0) -> dict[str, Any]:
    """Statistics of READ steps against event steps in one episode.

    Args:
        boundary: ``[T]`` READ flags (1 = READ, a new segment starts), tensor or array; a
            trailing ``[..., 1]`` is allowed.
        events: ``[T]`` event flags (see ``imwm.analysis.events``).
        read_prob: optional ``[T]`` posterior READ probability, for ``auc_read_prob``.
        frame_delta: optional ``[T]`` frame change, for ``cohens_d_frame_delta``; NaN entries
            (step 0 has no previous frame) are left out of that statistic only.
        permutations: random placements for ``perm_p_value`` (>= 1).
        seed: seed of the permutation generator (``numpy.random.default_rng``).

    Returns:
        dict with
        ``event_at_boundary`` = P(event | READ), ``event_at_nonboundary`` = P(event | COPY),
        ``lift_over_event_rate`` = event_at_boundary / P(event),
        ``perm_p_value`` (see :func:`permutation_p_value`), ``perm_null_event_rate`` (the
        mean event rate of the random placements, ~P(event)),
        ``periodic_baseline`` = event rate at the same number of evenly spaced steps
        (``evenly_spaced``: ``floor(i * T / n)``, step 0 first, as forced boundaries would be),
        ``auc_read_prob`` = ROC AUC of read_prob for events (ties averaged),
        ``cohens_d_frame_delta`` = Cohen's d of frame_delta at READ vs COPY steps (pooled std),
        the counts ``n_steps``, ``n_boundaries``, ``n_events``, the rates ``boundary_rate``,
        ``event_rate``, and ``nan_reasons``: {metric: why it is NaN}.

    Example:
        >>> m = boundary_event_metrics([0, 1, 0, 1], [0, 1, 0, 0], read_prob=[0.1, 0.9, 0.2, 0.4])
        >>> # periodic READs at steps 0 and 2 miss the event at step 1
        >>> [m[k] for k in ("event_at_boundary", "lift_over_event_rate", "periodic_baseline",
        ...                 "auc_read_prob")]
        [0.5, 2.0, 0.0, 1.0]
        >>> m["nan_reasons"]
        {'cohens_d_frame_delta': 'frame_delta not given'}
    """
    permutations = _permutation_count(permutations)
    b = as_flags(boundary, "boundary")
    e = as_flags(events, "events")
    if b.shape != e.shape:
        raise ValueError(f"boundary and events must have the same length, got {b.shape} and {e.shape}")
    length = b.size
    if length == 0:
        raise ValueError("boundary must hold at least one step, got an empty array")
    prob = as_series(read_prob, "read_prob", length) if read_prob is not None else None
    if prob is not None and not np.all(np.isfinite(prob)):
        raise ValueError("read_prob must be finite at every step")
    delta = as_series(frame_delta, "frame_delta", length) if frame_delta is not None else None

    n_b, n_e = int(b.sum()), int(e.sum())
    reasons: dict[str, str] = {}
    out: dict[str, Any] = {
        "n_steps": length,
        "n_boundaries": n_b,
        "n_events": n_e,
        "boundary_rate": n_b / length,
        "event_rate": n_e / length,
    }

    out["event_at_boundary"] = float(e[b].mean()) if n_b else _NAN
    if not n_b:
        reasons["event_at_boundary"] = "no READ steps"
    out["event_at_nonboundary"] = float(e[~b].mean()) if n_b < length else _NAN
    if n_b == length:
        reasons["event_at_nonboundary"] = "every step is READ (no COPY steps)"

    if n_b and n_e:
        out["lift_over_event_rate"] = out["event_at_boundary"] / out["event_rate"]
    else:
        out["lift_over_event_rate"] = _NAN
        reasons["lift_over_event_rate"] = "no events" if not n_e else "no READ steps"

    if n_b == 0 or n_b == length or n_e == 0 or n_e == length:
        out["perm_p_value"] = out["perm_null_event_rate"] = _NAN
        why = ("no READ steps" if n_b == 0 else "every step is READ (all placements identical)"
               if n_b == length else "no events" if n_e == 0 else "every step is an event")
        reasons["perm_p_value"] = reasons["perm_null_event_rate"] = why
    else:
        out["perm_p_value"], out["perm_null_event_rate"] = permutation_p_value(
            b, e, permutations=permutations, seed=seed)

    if n_b:
        out["periodic_baseline"] = float(e[evenly_spaced(length, n_b)].mean())
    else:
        out["periodic_baseline"] = _NAN
        reasons["periodic_baseline"] = "no READ steps (a baseline with 0 boundaries is undefined)"

    if prob is None:
        out["auc_read_prob"] = _NAN
        reasons["auc_read_prob"] = "read_prob not given"
    else:
        out["auc_read_prob"] = roc_auc(prob, e)
        if np.isnan(out["auc_read_prob"]):
            reasons["auc_read_prob"] = "no events" if not n_e else "every step is an event"

    if delta is None:
        out["cohens_d_frame_delta"] = _NAN
        reasons["cohens_d_frame_delta"] = "frame_delta not given"
    else:
        finite = np.isfinite(delta)
        out["cohens_d_frame_delta"] = cohens_d(delta[finite & b], delta[finite & ~b])
        if np.isnan(out["cohens_d_frame_delta"]):
            g, r = int((finite & b).sum()), int((finite & ~b).sum())
            reasons["cohens_d_frame_delta"] = (
                f"too few steps (READ {g}, COPY {r})" if g == 0 or r == 0 or g + r <= 2
                else "frame_delta is constant within READ and within COPY steps (pooled std 0)")
    out["nan_reasons"] = reasons
    return out


def multi_event_metrics(boundary: Any, events: Mapping[str, Any], **kwargs: Any) -> dict[str, dict]:
    """:func:`boundary_event_metrics` for each named event type (same boundary, same kwargs).

    Example:
        >>> events = {"reward": [0, 1, 0, 0], "life_loss": [1, 0, 0, 0]}
        >>> m = multi_event_metrics([0, 1, 0, 1], events)
        >>> {name: metrics["event_at_boundary"] for name, metrics in m.items()}
        {'reward': 0.5, 'life_loss': 0.0}
        >>> multi_event_metrics([0, 1], {})
        Traceback (most recent call last):
        ...
        ValueError: events must name at least one event type, got an empty mapping
    """
    if not events:
        raise ValueError("events must name at least one event type, got an empty mapping")
    return {name: boundary_event_metrics(boundary, flags, **kwargs) for name, flags in events.items()}


def aggregate_episodes(per_episode: Iterable[Mapping[str, Any]],
                       keys: Iterable[str] = METRIC_KEYS) -> dict[str, dict[str, float]]:
    """Mean, min and max of each metric over episodes, ignoring NaN episodes.

    Returns:
        ``{key: {"mean", "min", "max", "n"}}`` where ``n`` counts the episodes with a finite
        value; mean/min/max are NaN when ``n == 0``.

    Example:
        >>> rows = [{"auc_read_prob": v} for v in (0.5, 0.75, float("nan"))]
        >>> aggregate_episodes(rows, keys=["auc_read_prob"])
        {'auc_read_prob': {'mean': 0.625, 'min': 0.5, 'max': 0.75, 'n': 2}}
    """
    rows = list(per_episode)
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        vals = np.array([row[key] for row in rows], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[key] = {"mean": float(vals.mean()), "min": float(vals.min()),
                        "max": float(vals.max()), "n": int(vals.size)}
        else:
            out[key] = {"mean": _NAN, "min": _NAN, "max": _NAN, "n": 0}
    return out
