"""Where a VTA model's READs sit around the true changes, and what a minimum segment length does to them.

Three questions a ±1-step F1 does not answer, asked of a trained ``train_vta.py`` model on its
held-out sequences (frame 0 counts as a segment start, as the data marks it, but a READ there is
not counted: every sequence READs its first frame):

- **offsets**: each READ's signed distance ``t - c`` to the nearest true change ``c`` (the earlier
  one on a tie), and the steps since the last change before it, so READs two steps late are told
  apart from READs two steps early (:func:`read_offset_counts`, :func:`reads_by_steps_since_change`);
- **minimum segment length**: the same trained model re-evaluated with its dynamics' ``min_seg_len``
  set to other values (no READ while the running segment is shorter), F1 against the random
  baseline with as many READs (:func:`min_seg_len_sweep`);
- **surprise after a change**: the mean all-COPY surprise (what ``vta.boundary_surprise`` reads) by
  steps since the last change, which shows how long a change stays surprising to a model that
  does not READ (:func:`copy_surprise_by_steps`);
- **the surprise's ceiling**: the F1 of READs at each sequence's ``k`` most surprising steps, ``k``
  its true number of changes and the READs at least ``gap`` steps apart: what a detector that
  reads only this surprise could reach if it knew how many changes there are
  (:func:`surprise_ceiling`, :func:`ceiling_rows`, :func:`spaced_top_k`);
- **the READ count or the placement?**: the F1 of one threshold on the detector's log-odds, or on the
  surprise, set so that the READs number as many as the true changes (:func:`rate_matched_rows`,
  :func:`detector_log_odds`, :func:`threshold_reads`): a detector that ranks the steps well but READs
  too often scores here what its own count loses.

Example:
    >>> true = np.array([[1, 0, 0, 1, 0, 0, 0, 0]], dtype=bool)
    >>> pred = np.array([[1, 0, 0, 1, 0, 1, 0, 0]], dtype=bool)
    >>> read_offset_counts(pred, true)   # frame 0's READ is not counted; 5 is two steps after 3
    {0: 1, 2: 1}
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

import numpy as np
import torch

from imwm.analysis._arrays import as_flags, to_numpy

__all__ = ["nearest_change_offsets", "read_offset_counts", "steps_since_change", "reads_by_steps_since_change", "mean_by_steps_since_change",
           "min_seg_len_sweep", "copy_surprise", "copy_surprise_by_steps", "detector_log_odds", "spaced_top_k",
           "ceiling_rows", "threshold_reads", "rate_matched_rows", "surprise_ceiling"]

#: ``steps_since_change`` where no change lies at or before the step.
NO_CHANGE_YET = -1


def _pair(pred: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    pred_a = np.atleast_2d(as_flags(pred, "pred", ndim=(1, 2)))
    true_a = np.atleast_2d(as_flags(true, "true", ndim=(1, 2)))
    if pred_a.shape != true_a.shape:
        raise ValueError(f"pred and true must have the same shape, got {pred_a.shape} and {true_a.shape}")
    return pred_a, true_a


def nearest_change_offsets(pred: Any, true: Any, *, skip_first: bool = True) -> list[int | None]:
    """``t - c`` for every READ ``t`` (row-major), ``c`` its row's nearest true change (the earlier on a
    tie); None where the row has no change. ``skip_first`` leaves out READs at step 0."""
    pred_a, true_a = _pair(pred, true)
    offsets: list[int | None] = []
    for p, t in zip(pred_a, true_a):
        changes = np.flatnonzero(t)
        for step in np.flatnonzero(p):
            if skip_first and step == 0:
                continue
            if changes.size == 0:
                offsets.append(None)
                continue
            delta = step - changes
            offsets.append(int(delta[np.argmin(np.abs(delta) * 2 + (delta < 0))]))  # ties go to the earlier change
    return offsets


def read_offset_counts(pred: Any, true: Any) -> dict[int, int]:
    """READs after step 0 counted by their offset ``t - c`` from the nearest true change (rows without a
    change are left out), sorted by offset: ``{0: on the change, 2: two steps after, -1: one before}``."""
    counts = Counter(o for o in nearest_change_offsets(pred, true) if o is not None)
    return dict(sorted(counts.items()))


def steps_since_change(true: Any) -> np.ndarray:
    """``[N, T]`` steps since the last true change at or before each step (0 on a change), and
    ``NO_CHANGE_YET`` (-1) before a row's first change.

    Example:
        >>> steps_since_change(np.array([0, 1, 0, 0, 1, 0], dtype=bool))
        array([[-1,  0,  1,  2,  0,  1]])
    """
    true_a = np.atleast_2d(as_flags(true, "true", ndim=(1, 2)))
    since = np.full(true_a.shape, NO_CHANGE_YET, dtype=np.int64)
    for t in range(true_a.shape[1]):
        carried = np.where(since[:, t - 1] >= 0, since[:, t - 1] + 1, NO_CHANGE_YET) if t else NO_CHANGE_YET
        since[:, t] = np.where(true_a[:, t], 0, carried)
    return since


def reads_by_steps_since_change(pred: Any, true: Any) -> dict[int, int]:
    """READs after step 0 counted by steps since the last true change (``NO_CHANGE_YET`` before any)."""
    pred_a, true_a = _pair(pred, true)
    since = steps_since_change(true_a)[:, 1:][pred_a[:, 1:]]
    return dict(sorted(Counter(int(s) for s in since).items()))


def mean_by_steps_since_change(values: Any, true: Any, *, most: int = 8) -> dict[int, float]:
    """Mean of ``values`` ``[N, T]`` over steps after step 0 by steps since the last true change,
    ``0 .. most`` (NaN where no step has that many).

    Example:
        >>> true = np.array([[1, 0, 0, 1, 0]], dtype=bool)
        >>> mean_by_steps_since_change(np.array([[9.0, 1.0, 2.0, 5.0, 3.0]]), true, most=2)
        {0: 5.0, 1: 2.0, 2: 2.0}
    """
    true_a = np.atleast_2d(as_flags(true, "true", ndim=(1, 2)))
    values_a = np.atleast_2d(to_numpy(values, "values")).astype(np.float64)
    if values_a.shape != true_a.shape:
        raise ValueError(f"values and true must have the same shape, got {values_a.shape} and {true_a.shape}")
    since, vals = steps_since_change(true_a)[:, 1:], values_a[:, 1:]
    return {k: float(vals[since == k].mean()) if (since == k).any() else float("nan") for k in range(most + 1)}


def _dynamics_with_min_seg_len(model: torch.nn.Module) -> torch.nn.Module:
    dynamics = getattr(model, "dynamics", None)
    if dynamics is None or not hasattr(dynamics, "min_seg_len"):
        raise ValueError(f"{type(model).__name__} has no dynamics.min_seg_len: the minimum segment length is an "
                         f"option of the dreamer variant (vta=dreamer or vta=surprise)")
    return dynamics


#: the keys of a row scored against random READs without its precision and recall
_BRIEF = ("reads", "f1", "random_f1", "ratio")


def _against_random(pred: np.ndarray, true: np.ndarray, *, draws: int, seed: int) -> dict[str, Any]:
    """READ flags ``pred`` against the true changes ``true`` (both ``[N, T]``, step 0 already left out):
    READ count, precision, recall and F1 (±1 step), the F1 of as many READs per sequence placed at
    random, and the ratio of the two F1s."""
    from imwm.analysis.boundary_truth import boundary_prf, random_baseline_prf

    prf = boundary_prf(pred, true)
    random_f1 = random_baseline_prf(true, pred.sum(1), draws=draws, seed=seed)["f1"]
    return {"reads": int(pred.sum()), "precision": prf["precision"], "recall": prf["recall"], "f1": prf["f1"],
            "random_f1": random_f1, "ratio": prf["f1"] / random_f1 if random_f1 > 0 else float("nan")}


def min_seg_len_sweep(model: torch.nn.Module, data, lengths: Iterable[int], *, draws: int = 50,
                      seed: int = 0) -> list[dict[str, Any]]:
    """The trained ``model`` evaluated on ``data`` with each minimum segment length in ``lengths``
    (its own value is restored afterwards): READ count, precision, recall and F1 (±1 step, steps
    after 0) and the F1 of as many READs placed at random per sequence."""
    from imwm.errors import check_integer
    from imwm.training.vta_run import predict_boundaries

    dynamics = _dynamics_with_min_seg_len(model)
    own, rows = dynamics.min_seg_len, []
    true = data["true_boundary"][:, 1:, 0].numpy()
    try:
        for length in lengths:
            dynamics.min_seg_len = check_integer("min_seg_len", length, 1)
            pred = predict_boundaries(model, data)["boundary"][:, 1:].numpy()
            rows.append({"min_seg_len": length, **_against_random(pred, true, draws=draws, seed=seed)})
    finally:
        dynamics.min_seg_len = own
    return rows


@torch.no_grad()
def _per_step(model: torch.nn.Module, data, read, batch_size: int) -> np.ndarray:
    """``read(dynamics, embed, action, is_first) -> [B, T]`` over ``data`` in eval mode, batched: ``[N, T]``."""
    dynamics = _dynamics_with_min_seg_len(model)
    obs = data["observation"]
    was_training = model.training
    model.eval()
    try:
        parts = [read(dynamics, *model.inputs(obs[i : i + batch_size])[1:]) for i in range(0, len(obs), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts).numpy()


def copy_surprise(model: torch.nn.Module, data, *, batch_size: int = 32) -> np.ndarray:
    """The all-COPY surprise (the first channel of ``dynamics.copy_surprise``) of ``data``, ``[N, T]``:
    one gradient-free pass of the model over every held-out sequence."""
    return _per_step(model, data, lambda dyn, *inputs: dyn.copy_surprise(*inputs)[..., 0], batch_size)


def detector_log_odds(model: torch.nn.Module, data, *, batch_size: int = 32) -> np.ndarray:
    """The posterior detector's READ log-odds ``log q / (1 - q)`` ``[N, T]`` on ``data`` from a fresh state,
    before forcing and the segment limits (``dynamics.detector_logits``): the ranking the model's READs follow."""
    from imwm.vta.boundary import COPY_INDEX, READ_INDEX

    def log_odds(dyn, *inputs):
        logits = dyn.detector_logits(*inputs)
        return logits[..., READ_INDEX] - logits[..., COPY_INDEX]

    return _per_step(model, data, log_odds, batch_size)


def copy_surprise_by_steps(model: torch.nn.Module, data, *, most: int = 8, batch_size: int = 32) -> dict[int, float]:
    """Mean all-COPY surprise on ``data`` by steps since the last true change, ``0 .. most``."""
    return mean_by_steps_since_change(copy_surprise(model, data, batch_size=batch_size),
                                      data["true_boundary"][..., 0].numpy(), most=most)


def spaced_top_k(score: Any, k: int, gap: int) -> np.ndarray:
    """``[T]`` flags at the ``k`` highest entries of ``score [T]``, taken greedily from the highest, each
    at least ``gap`` steps from those already taken (fewer than ``k`` where the spacing leaves no room).

    Example:
        >>> spaced_top_k([0.1, 0.9, 0.8, 0.2, 0.7, 0.3], 2, gap=2).astype(int)  # 0.8 sits next to 0.9
        array([0, 1, 0, 0, 1, 0])
    """
    from imwm.errors import check_integer

    score = np.asarray(score, dtype=float)
    if score.ndim != 1:
        raise ValueError(f"score must be [T], got shape {score.shape}")
    k, gap = check_integer("k", k, 0), check_integer("gap", gap, 1)
    taken: list[int] = []
    for t in np.argsort(-score, kind="stable"):
        if len(taken) == k:
            break
        if all(abs(int(t) - c) >= gap for c in taken):
            taken.append(int(t))
    flags = np.zeros(score.shape, dtype=bool)
    flags[taken] = True
    return flags


def ceiling_rows(surprise: Any, true: Any, gaps: Iterable[int] = (1, 2, 3), *, draws: int = 50,
                 seed: int = 0) -> list[dict[str, Any]]:
    """One row per gap from a computed surprise ``[N, T]`` and the true changes ``[N, T]`` (step 0 left
    out of both): READs at each sequence's most surprising steps, as many as its true changes and at
    least ``gap`` apart (:func:`spaced_top_k`), their F1 (±1 step) and the F1 of as many random READs."""
    score, flags = to_numpy(surprise, "surprise"), as_flags(true, "true", ndim=(2,))
    if score.shape != flags.shape:
        raise ValueError(f"surprise and true must both be [N, T], got {score.shape} and {flags.shape}")
    score, flags = score[:, 1:], flags[:, 1:]
    rows = []
    for gap in gaps:
        pred = np.stack([spaced_top_k(s, int(k), gap) for s, k in zip(score, flags.sum(1))])
        scored = _against_random(pred, flags, draws=draws, seed=seed)
        rows.append({"gap": gap, **{k: scored[k] for k in _BRIEF}})
    return rows


def threshold_reads(score: Any, threshold: float, gap: int) -> np.ndarray:
    """``[N, T]`` READ flags where ``score [N, T]`` exceeds ``threshold``, taken in time order, each at least
    ``gap`` steps after the previous READ (step 0 counts as one and is not flagged): how a detector with
    a minimum segment length of ``gap`` READs.

    Example:
        >>> threshold_reads([[9, 5, 0, 6, 7, 0, 5]], 4, gap=2).astype(int)  # 1 is too close to 0, 4 to 3
        array([[0, 0, 0, 1, 0, 0, 1]])
    """
    from imwm.errors import check_integer

    gap = check_integer("gap", gap, 1)
    score = np.atleast_2d(np.asarray(score, dtype=float))
    pred, since = np.zeros(score.shape, dtype=bool), np.zeros(len(score), dtype=int)
    for t in range(1, score.shape[1]):
        since += 1
        pred[:, t] = (score[:, t] > threshold) & (since >= gap)
        since[pred[:, t]] = 0
    return pred


def rate_matched_rows(scores: dict[str, Any], true: Any, gap: int, *, draws: int = 50,
                      seed: int = 0) -> list[dict[str, Any]]:
    """One row per named score ``[N, T]``: READs above one threshold for all sequences
    (:func:`threshold_reads`), set so that they number as many as the true changes after step 0 (the
    fewest above that where ties allow no threshold that count), their F1 (±1 step) and the F1 of as
    many random READs per sequence. Unlike :func:`ceiling_rows` no sequence's own count is known, only
    the overall rate: a detector's ranking at the true rate, to tell a wrong READ count from a wrong
    placement."""
    flags = as_flags(true, "true", ndim=(2,))
    target, rows = int(flags[:, 1:].sum()), []
    for name, score in scores.items():
        score = to_numpy(score, name)
        if score.shape != flags.shape:
            raise ValueError(f"{name} and true must both be [N, T], got {score.shape} and {flags.shape}")
        levels = np.unique(score[:, 1:])
        lo, hi = 0, len(levels) - 1  # reads(levels[i]) falls as i rises: the highest level that READs >= target
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if threshold_reads(score, levels[mid], gap).sum() >= target else (lo, mid - 1)
        scored = _against_random(threshold_reads(score, levels[lo], gap)[:, 1:], flags[:, 1:], draws=draws, seed=seed)
        rows.append({"score": name, "threshold": float(levels[lo]), "true": target, **{k: scored[k] for k in _BRIEF}})
    return rows


def surprise_ceiling(model: torch.nn.Module, data, gaps: Iterable[int] = (1, 2, 3), *, draws: int = 50,
                     seed: int = 0, batch_size: int = 32) -> list[dict[str, Any]]:
    """:func:`ceiling_rows` of the model's all-COPY surprise on ``data``: what a detector reading this
    surprise alone reaches if it knows each sequence's number of changes (not a bound: one threshold at
    the overall true rate, :func:`rate_matched_rows`, can place more of them)."""
    return ceiling_rows(copy_surprise(model, data, batch_size=batch_size), data["true_boundary"][..., 0].numpy(),
                        gaps, draws=draws, seed=seed)
