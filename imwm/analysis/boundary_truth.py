"""Predicted boundaries against known true boundaries: precision, recall, F1 and baselines.

On data whose segment changes are known (``imwm.envs.moving_shapes``), a predicted READ
counts as correct when it lies within ``±tolerance`` steps of a true change. Matching is
one-to-one: a true change explains at most one READ and a READ claims at most one change,
so a detector that fires on every step next to a change is not rewarded twice.

Matching rule. Within one sequence, READs are visited in time order and each takes the
earliest still-unmatched true change inside its window ``[t - tolerance, t + tolerance]``.
Because every window has the same width, this greedy rule yields a *maximum* matching (an
exchange argument: any optimal matching can be rewritten, pair by pair, into the greedy one
without losing a pair), so the counts do not depend on tie-breaking.

Baselines with the same number of boundaries tell whether a score is better than chance:
``random_baseline_prf`` places them uniformly at random (without replacement, per sequence),
``periodic_baseline_prf`` spaces them evenly, which is also what a collapsed detector under
``max_seg_len`` forcing produces (READ pushed every ``max_seg_len`` steps).

Example:
    >>> import numpy as np
    >>> true = np.zeros(20, bool); true[[5, 12]] = True
    >>> pred = np.zeros(20, bool); pred[[4, 6, 15]] = True
    >>> r = boundary_prf(pred, true, tolerance=1)
    >>> (r["n_matched"], r["precision"], r["recall"])   # 4 matches 5; 6 has nothing left
    (1, 0.3333333333333333, 0.5)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imwm.analysis._arrays import as_flags
from imwm.errors import check_integer

__all__ = ["boundary_prf", "random_baseline_prf", "periodic_baseline_prf", "frame_difference_baseline_prf",
           "compare_with_truth", "evenly_spaced", "read_offsets", "reads_at_events"]


def evenly_spaced(length: int, count: int) -> np.ndarray:
    """Indices of ``count`` evenly spaced steps in ``range(length)``: ``floor(i * length / count)``.

    The first one is step 0, as a sequence's first step is a segment start, and the spacing
    is ``length / count`` rounded down per position (so ``count == length`` gives every step).

    Example:
        >>> evenly_spaced(10, 3).tolist()  # floor(i * 10 / 3)
        [0, 3, 6]
        >>> evenly_spaced(4, 4).tolist(), evenly_spaced(5, 0).tolist()
        ([0, 1, 2, 3], [])
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if not 0 <= count <= length:
        raise ValueError(f"count must be in [0, length={length}], got {count}")
    return (np.arange(count, dtype=np.int64) * length) // max(count, 1)


def _match_count(pred_idx: np.ndarray, true_idx: np.ndarray, tolerance: int) -> int:
    """Size of the maximum one-to-one matching with |pred - true| <= tolerance (greedy, see module doc)."""
    matched = 0
    j = 0
    n_true = len(true_idx)
    for t in pred_idx:  # both sorted ascending
        while j < n_true and true_idx[j] < t - tolerance:
            j += 1  # this true change is too early for this READ and for every later one
        if j < n_true and true_idx[j] <= t + tolerance:
            matched += 1
            j += 1
    return matched


def _prf(n_matched: int, n_pred: int, n_true: int) -> dict[str, float]:
    precision = n_matched / n_pred if n_pred else float("nan")
    recall = n_matched / n_true if n_true else float("nan")
    if np.isnan(precision) or np.isnan(recall):
        f1 = float("nan")
    elif precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1}


def _check_tolerance(tolerance: int) -> int:
    return check_integer("tolerance", tolerance, 0)


def boundary_prf(pred: Any, true: Any, tolerance: int = 1) -> dict[str, Any]:
    """Precision, recall and F1 of predicted READ steps against true segment changes.

    Args:
        pred: predicted boundaries (``1`` = READ), shape ``[T]`` or ``[N, T]`` (N sequences;
            a trailing ``[..., 1]`` is allowed). Tensors or arrays.
        true: true segment changes, same shape.
        tolerance: a READ at step ``t`` may match a true change in ``[t - tol, t + tol]``
            (same sequence only). One-to-one, maximum matching (see the module docstring).

    Returns:
        dict with ``precision = n_matched / n_pred``, ``recall = n_matched / n_true``,
        ``f1`` (harmonic mean), ``n_pred``, ``n_true``, ``n_matched``, ``tolerance``.
        Counts are summed over sequences before dividing (micro average). ``precision`` is NaN
        when nothing was predicted, ``recall`` NaN when there are no true changes, ``f1`` NaN
        when either is; the key ``reason`` then says why.

    Example:
        >>> true = np.zeros(10, bool); true[[3, 8]] = True
        >>> pred = np.zeros(10, bool); pred[[1, 2, 9]] = True
        >>> r = boundary_prf(pred, true, tolerance=1)  # 2 -> 3 and 9 -> 8; 1 is 2 steps from 3
        >>> r["n_matched"], round(r["precision"], 4), r["recall"], round(r["f1"], 4)
        (2, 0.6667, 1.0, 0.8)
        >>> boundary_prf(pred, true, tolerance=0)["f1"]
        0.0
    """
    tolerance = _check_tolerance(tolerance)
    pred_a = as_flags(pred, "pred", ndim=(1, 2))
    true_a = as_flags(true, "true", ndim=(1, 2))
    if pred_a.shape != true_a.shape:
        raise ValueError(f"pred and true must have the same shape, got {pred_a.shape} and {true_a.shape}")
    pred_a = np.atleast_2d(pred_a)
    true_a = np.atleast_2d(true_a)
    n_matched = sum(_match_count(np.flatnonzero(p), np.flatnonzero(t), tolerance)
                    for p, t in zip(pred_a, true_a))
    n_pred, n_true = int(pred_a.sum()), int(true_a.sum())
    out: dict[str, Any] = _prf(n_matched, n_pred, n_true)
    out.update(n_pred=n_pred, n_true=n_true, n_matched=int(n_matched), tolerance=tolerance)
    reasons = []
    if n_pred == 0:
        reasons.append("no predicted boundaries (precision undefined)")
    if n_true == 0:
        reasons.append("no true boundaries (recall undefined)")
    if reasons:
        out["reason"] = "; ".join(reasons)
    return out


def _counts_per_row(true_a: Any, n: Any) -> tuple[np.ndarray, np.ndarray]:
    """Normalise ``true`` to [N, T] and ``n`` to one boundary count per row."""
    true_a = np.atleast_2d(as_flags(true_a, "true", ndim=(1, 2)))
    counts = np.asarray(n, dtype=np.int64)
    if counts.ndim == 0:
        counts = np.full(true_a.shape[0], int(counts))
    if counts.shape != (true_a.shape[0],):
        raise ValueError(f"n must be an int or one count per sequence ({true_a.shape[0]}), "
                         f"got shape {counts.shape}")
    length = true_a.shape[1]
    if np.any(counts < 0) or np.any(counts > length):
        raise ValueError(f"n must be in [0, {length}] per sequence, got {counts.tolist()}")
    return true_a, counts


def random_baseline_prf(true: Any, n: Any, *, draws: int = 200, seed: int = 0,
                        tolerance: int = 1) -> dict[str, Any]:
    """PRF of ``n`` boundaries placed uniformly at random (no replacement), averaged over draws.

    Args:
        true: true changes ``[T]`` or ``[N, T]``.
        n: boundary count per sequence: an int (same for all) or ``[N]`` (e.g. the predicted
            counts ``pred.sum(-1)``, so the baseline fires exactly as often as the model).
        draws: random placements to average over (``numpy.random.default_rng(seed)``).
        tolerance: as in :func:`boundary_prf`.

    Returns:
        dict with the mean ``precision``, ``recall``, ``f1`` over draws (NaN draws ignored),
        their standard deviations ``precision_std``, ``recall_std``, ``f1_std``, ``n_pred``
        (per draw), ``n_true``, ``draws``, ``tolerance``.

    Example:
        >>> true = np.zeros(10, bool); true[[2, 7]] = True
        >>> r = random_baseline_prf(true, 10, draws=5)  # all 10 steps: every draw is the same
        >>> r["precision"], r["recall"], r["precision_std"]
        (0.2, 1.0, 0.0)
    """
    check_integer("draws", draws)
    tolerance = _check_tolerance(tolerance)
    true_a, counts = _counts_per_row(true, n)
    rng = np.random.default_rng(seed)
    n_rows, length = true_a.shape
    results = []
    for _ in range(int(draws)):
        pred = np.zeros_like(true_a)
        for row in range(n_rows):
            pred[row, rng.choice(length, size=int(counts[row]), replace=False)] = True
        results.append(boundary_prf(pred, true_a, tolerance))
    out: dict[str, Any] = {}
    for key in ("precision", "recall", "f1"):
        vals = np.array([r[key] for r in results], dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        out[key] = float(finite.mean()) if finite.size else float("nan")
        out[f"{key}_std"] = float(finite.std()) if finite.size else float("nan")
    out.update(n_pred=int(counts.sum()), n_true=int(true_a.sum()), draws=int(draws),
               tolerance=tolerance)
    if counts.sum() == 0 or true_a.sum() == 0:
        out["reason"] = results[0].get("reason", "")
    return out


def periodic_baseline_prf(true: Any, n: Any, tolerance: int = 1) -> dict[str, Any]:
    """PRF of ``n`` evenly spaced boundaries per sequence (:func:`evenly_spaced`: step 0 first).

    Args:
        true: true changes ``[T]`` or ``[N, T]``.
        n: boundary count per sequence, an int or ``[N]``.
        tolerance: as in :func:`boundary_prf`.

    Returns:
        the :func:`boundary_prf` dict of that deterministic placement.

    Example:
        >>> true = np.zeros(12, bool); true[[4, 9]] = True
        >>> r = periodic_baseline_prf(true, 3)  # READs at 0, 4, 8; 8 is within 1 of 9
        >>> r["n_matched"], round(r["precision"], 4), r["recall"]
        (2, 0.6667, 1.0)
        >>> periodic_baseline_prf(true, 3, tolerance=0)["n_matched"]
        1
    """
    true_a, counts = _counts_per_row(true, n)
    pred = np.zeros_like(true_a)
    for row in range(true_a.shape[0]):
        pred[row, evenly_spaced(true_a.shape[1], int(counts[row]))] = True
    return boundary_prf(pred, true_a, tolerance)


def frame_difference_baseline_prf(true: Any, frame_delta: Any, n: Any, tolerance: int = 1) -> dict[str, Any]:
    """PRF of a detector without learning: the ``n`` steps of largest frame change per sequence.

    The pixel heuristic a learned boundary detector should beat: ``frame_delta`` is ``mean |f_t -
    f_{t-1}|`` (:func:`imwm.analysis.events.frame_delta`) aligned with ``true``. It finds changes of
    colour or scene that move many pixels and misses changes that only a model of the motion sees
    (a turn of a moving object changes as many pixels as its straight flight).

    Args:
        true: true changes ``[T]`` or ``[N, T]``.
        frame_delta: frame change per step, the shape of ``true`` (NaN counts as no change).
        n: boundary count per sequence, an int or ``[N]``.
        tolerance: as in :func:`boundary_prf`.

    Returns:
        the :func:`boundary_prf` dict of that placement, plus ``auc``: ROC AUC of the frame change
        for the true changes (0.5 = no signal).

    Example:
        >>> true = np.array([[False, True, False, False, True, False]])
        >>> delta = np.array([[0.0, 0.9, 0.1, 0.2, 0.8, 0.1]])
        >>> r = frame_difference_baseline_prf(true, delta, 2)
        >>> r["f1"], r["auc"]
        (1.0, 1.0)
    """
    from imwm.analysis.metrics import roc_auc

    true_a, counts = _counts_per_row(true, n)
    delta = np.atleast_2d(np.asarray(frame_delta, np.float64))
    if delta.shape != true_a.shape:
        raise ValueError(f"frame_delta must have the shape of true {true_a.shape}, got {delta.shape}")
    ranked = np.argsort(-np.nan_to_num(delta, nan=-np.inf), axis=1, kind="stable")
    pred = np.zeros_like(true_a)
    for row in range(true_a.shape[0]):
        pred[row, ranked[row, : int(counts[row])]] = True
    out = boundary_prf(pred, true_a, tolerance)
    out["auc"] = float(roc_auc(np.nan_to_num(delta, nan=0.0).ravel(), true_a.ravel()))
    return out


def compare_with_truth(pred: Any, true: Any, frame_delta: Any, *, tolerance: int = 1, draws: int = 200,
                       seed: int = 0) -> dict[str, Any]:
    """Predicted READs ``[N, T]`` against the true changes, next to every baseline of the same count.

    Returns ``model``, ``random``, ``periodic`` and ``frame_difference`` (the PRF dicts of
    :func:`boundary_prf` and the three baselines), ``read_rate`` and ``true_rate``.

    Example:
        >>> true = np.array([[False, True, False, False, True, False]])
        >>> r = compare_with_truth(true.copy(), true, true.astype(float), draws=10)
        >>> r["model"]["f1"], r["frame_difference"]["f1"], sorted(r)[:2]
        (1.0, 1.0, ['frame_difference', 'model'])
    """
    pred_a = np.atleast_2d(as_flags(pred, "pred", ndim=(1, 2)))
    counts = pred_a.sum(-1)
    return {
        "model": boundary_prf(pred_a, true, tolerance=tolerance),
        "random": random_baseline_prf(true, counts, draws=draws, seed=seed, tolerance=tolerance),
        "periodic": periodic_baseline_prf(true, counts, tolerance=tolerance),
        "frame_difference": frame_difference_baseline_prf(true, frame_delta, counts, tolerance=tolerance),
        "read_rate": float(pred_a.mean()),
        "true_rate": float(as_flags(true, "true", ndim=(1, 2)).mean()),
    }


def read_offsets(pred: Any, true: Any) -> dict[str, int]:
    """Where READs sit relative to the nearest true change of their sequence.

    A ±1-step F1 cannot tell a detector that fires on the first frame of a new segment from one
    that fires a step before it; these counts can. For each READ at ``t`` the nearest true change
    ``c`` (the earlier one on a tie) gives ``early`` (``c = t + 1``), ``on`` (``c = t``), ``late``
    (``c = t - 1``) or ``farther`` (further away, or no change in the sequence).

    Example:
        >>> true = np.array([[0, 0, 1, 0, 0, 0, 1, 0]], dtype=bool)
        >>> pred = np.array([[0, 1, 0, 0, 0, 0, 1, 1]], dtype=bool)
        >>> read_offsets(pred, true)
        {'early': 1, 'on': 1, 'late': 1, 'farther': 0}
    """
    from imwm.analysis.read_placement import nearest_change_offsets

    counts = {"early": 0, "on": 0, "late": 0, "farther": 0}
    names = {-1: "early", 0: "on", 1: "late"}
    for offset in nearest_change_offsets(pred, true, skip_first=False):
        counts[names.get(offset, "farther")] += 1
    return counts


def _near(flags: np.ndarray, tolerance: int) -> np.ndarray:
    """``[N, T]``: True where a flag of the same row lies within ``±tolerance`` steps."""
    near = flags.copy()
    for k in range(1, tolerance + 1):
        near[:, k:] |= flags[:, :-k]
        near[:, :-k] |= flags[:, k:]
    return near


def reads_at_events(pred: Any, true: Any, events: Any, tolerance: int = 1) -> dict[str, Any]:
    """Whether the READs away from every true change sit at other known events (e.g. wall bounces).

    A READ is *off the changes* when no true change lies within ``±tolerance`` steps of it. Of
    those, ``at_event`` lie within ``±tolerance`` of an event; ``chance`` is the same share over
    every step off the changes, so ``lift = share / chance`` is 1 for READs placed there at random.

    Returns:
        dict with ``off_reads``, ``at_event``, ``share`` (``at_event / off_reads``; NaN without such
        READs), ``chance`` and ``lift``.

    Example:
        >>> true = np.array([[0, 0, 0, 1, 0, 0, 0, 0, 0]], dtype=bool)
        >>> bounce = np.array([[0, 0, 0, 0, 0, 0, 1, 0, 0]], dtype=bool)
        >>> pred = np.array([[0, 0, 0, 1, 0, 0, 0, 1, 1]], dtype=bool)   # 3 is on the change; 7 is next to the bounce
        >>> r = reads_at_events(pred, true, bounce)
        >>> r["off_reads"], r["at_event"], r["chance"], r["lift"]   # 3 of the 6 steps off the change are near it
        (2, 1, 0.5, 1.0)
    """
    tolerance = _check_tolerance(tolerance)
    pred_a, true_a, event_a = (np.atleast_2d(as_flags(x, name, ndim=(1, 2)))
                               for x, name in ((pred, "pred"), (true, "true"), (events, "events")))
    if not pred_a.shape == true_a.shape == event_a.shape:
        raise ValueError(f"pred, true and events must have the same shape, got {pred_a.shape}, "
                         f"{true_a.shape} and {event_a.shape}")
    off = ~_near(true_a, tolerance)
    near_event = _near(event_a, tolerance)
    off_reads = int((pred_a & off).sum())
    at_event = int((pred_a & off & near_event).sum())
    share = at_event / off_reads if off_reads else float("nan")
    chance = float(near_event[off].mean()) if off.any() else float("nan")
    lift = share / chance if chance > 0 else float("nan")
    return {"off_reads": off_reads, "at_event": at_event, "share": share, "chance": chance, "lift": lift}
