"""What the two scripts do, as functions: collect traces from a restored run, evaluate them
against events (and truth, where known), and print readable tables.

``scripts/vta_boundary_eval.py`` = ``restore_run`` + :func:`collect_traces` +
:func:`evaluate_traces` + :func:`format_report`; ``scripts/vta_boundary_viz.py`` =
``restore_run`` + :func:`collect_traces` + ``figures.plot_all``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from imwm.analysis.boundary_truth import compare_with_truth
from imwm.analysis.events import build_events, widen_events
from imwm.analysis.metrics import METRIC_KEYS, aggregate_episodes, boundary_event_metrics
from imwm.analysis.restore import RestoredRun
from imwm.analysis.rollout import heldout_moving_shapes, rollout_vta_sequences, trace_slice

__all__ = ["collect_traces", "trace_events", "evaluate_traces", "format_report", "boundary_options",
           "to_json"]

TRUE_EVENT = "true_change"


def boundary_options(restored: RestoredRun) -> dict:
    """The boundary options the restored model actually holds (read from the module).

    Example:
        >>> from types import SimpleNamespace as NS
        >>> dynamics = NS(boundary_options=lambda: {"max_seg_len": 10})  # stands for a VTA dynamics
        >>> boundary_options(NS(model=NS(world_model=NS(dynamics=dynamics))))  # an agent's
        {'max_seg_len': 10}
        >>> boundary_options(NS(model=NS()))  # a model without boundary options
        {}
    """
    model = restored.model
    for candidate in (model, getattr(model, "dynamics", None),
                      getattr(getattr(model, "world_model", None), "dynamics", None)):
        if candidate is not None and hasattr(candidate, "boundary_options"):
            return dict(candidate.boundary_options())
    return {}


def collect_traces(restored: RestoredRun, *, episodes: int, seed: int = 0, seq_len: int | None = None,
                   max_steps: int = 1000, policy: str = "agent", window: int | None = None) -> list[dict]:
    """Roll the restored model over ``episodes`` fresh episodes (Atari) or held-out sequences.

    Args:
        restored: from ``restore_run``.
        episodes: number of episodes / held-out sequences.
        seed: env seed of the first episode (Atari; episode i uses ``seed + i``). Held-out
            Moving Shapes sequences are always the first ``episodes`` of the run's held-out split.
        seq_len: held-out sequence length (Moving Shapes; default: the run's training length).
        max_steps: cap on agent steps per Atari episode.
        policy: ``"agent"`` (the trained actor acts) or ``"random"`` (Atari).
        window: agent runs: trace each episode in windows of this many steps, each from a fresh
            state, as the world model is trained (one trace per window).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if window is not None and restored.kind != "agent":
        raise ValueError("--window is for train.py runs (dynamics=vta): a train_vta.py run is already "
                         "evaluated on sequences as long as it was trained on")
    if restored.kind == "vta_run":
        data = heldout_moving_shapes(restored.config["data"], episodes, seq_len=seq_len)
        return rollout_vta_sequences(restored.model, data["observation"], true_boundary=data["true_boundary"])
    if restored.kind == "agent":
        from imwm.analysis.rollout import rollout_agent

        return rollout_agent(restored.model, restored.config, episodes=episodes, seed=seed,
                             max_steps=max_steps, policy=policy, window=window)
    raise ValueError(f"unknown run kind {restored.kind!r}")


def trace_events(trace: Mapping[str, Any], percentiles: Iterable[float]) -> dict[str, np.ndarray]:
    """Every event the trace supports, computed on the whole trace (so a life lost at step 1
    still counts), plus ``true_change`` where the true boundaries are known.

    Example:
        >>> trace = {"frame_delta": np.array([np.nan, 0.0, 0.0, 1.0]), "reward": np.eye(4)[1],
        ...          "true_boundary": np.array([1, 0, 0, 1])}
        >>> {name: flags.nonzero()[0].tolist() for name, flags in trace_events(trace, [50]).items()}
        {'delta_p50': [3], 'reward': [1], 'true_change': [0, 3]}
    """
    events = build_events(frame_delta=trace["frame_delta"], percentiles=tuple(percentiles),
                          reward=trace.get("reward"), raw_reward=trace.get("raw_reward"),
                          lives=trace.get("lives"), is_last=trace.get("is_last"))
    if trace.get("true_boundary") is not None:
        events[TRUE_EVENT] = np.asarray(trace["true_boundary"], dtype=bool)
    return events


def evaluate_traces(traces: Sequence[Mapping[str, Any]], *, percentiles: Iterable[float] = (90,),
                    permutations: int = 200, seed: int = 0, tolerance: int = 1,
                    event_window: int = 0) -> dict:
    """Boundary-vs-event metrics per episode, their aggregate, the pooled episodes, and PRF.

    Step 0 of every trace is left out (a reset, READ by construction; no frame delta).
    ``event_window > 0`` also counts the ``event_window`` steps after each event as that event
    (:func:`~imwm.analysis.events.widen_events`): a segment that starts right after a reward.
    The true-change PRF keeps its own ``tolerance``.

    Returns:
        ``{"episodes": [{event: metrics}], "aggregate": {event: {metric: {mean,min,max,n}}},
        "pooled": {event: metrics}, "truth": {...} or None}``. ``pooled`` concatenates the
        episodes (events still defined per episode); ``truth`` holds ``boundary_prf`` against
        the known changes with the random and evenly spaced baselines of equal counts.
    """
    percentiles = tuple(percentiles)
    if not traces:
        raise ValueError("traces must hold at least one episode")
    per_episode, sliced_b, sliced_e, sliced_p, sliced_d = [], [], [], [], []
    for i, trace in enumerate(traces):
        events = {k: widen_events(v, event_window)[1:] for k, v in trace_events(trace, percentiles).items()}
        body = trace_slice(trace, 1)
        per_episode.append({
            name: boundary_event_metrics(body["boundary"], flags, read_prob=body["read_prob"],
                                         frame_delta=body["frame_delta"], permutations=permutations,
                                         seed=seed + i)
            for name, flags in events.items()})
        sliced_b.append(body["boundary"])
        sliced_e.append(events)
        sliced_p.append(body["read_prob"])
        sliced_d.append(body["frame_delta"])
    names = list(per_episode[0])
    aggregate = {name: aggregate_episodes([ep[name] for ep in per_episode]) for name in names}
    pooled = {name: boundary_event_metrics(np.concatenate(sliced_b), np.concatenate([e[name] for e in sliced_e]),
                                           read_prob=np.concatenate(sliced_p),
                                           frame_delta=np.concatenate(sliced_d),
                                           permutations=permutations, seed=seed)
              for name in names}
    truth = None
    if all(t.get("true_boundary") is not None for t in traces):
        lengths = {len(t["boundary"]) for t in traces}
        if len(lengths) != 1:  # held-out sequences share one length; baselines need a rectangle
            raise ValueError(f"traces with known truth must share one length, got lengths {sorted(lengths)}")
        true = np.stack([np.asarray(t["true_boundary"], bool)[1:] for t in traces])
        truth = compare_with_truth(np.stack(sliced_b), true, np.stack(sliced_d), tolerance=tolerance,
                                   draws=permutations, seed=seed)
    return {"episodes": per_episode, "aggregate": aggregate, "pooled": pooled, "truth": truth,
            "percentiles": list(percentiles), "permutations": permutations, "seed": seed,
            "tolerance": tolerance, "event_window": event_window}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


_HEAD = ("READ", "events", "event@READ", "event@COPY", "lift", "perm p", "periodic", "AUC", "d(delta)")
_COLS = ("n_boundaries", "n_events") + METRIC_KEYS


def format_report(result: Mapping[str, Any], *, title: str = "") -> str:
    """Markdown tables: per event type, one row per episode, the aggregate and the pooled row;
    then precision / recall / F1 against the truth where known. NaN cells are explained below
    each table.

    Example:
        >>> trace = {"boundary": np.array([1, 0, 1, 0, 1]), "reward": np.eye(5)[1],
        ...          "read_prob": np.array([1.0, 0.2, 0.9, 0.1, 0.8]),
        ...          "frame_delta": np.array([np.nan, 0.0, 1.0, 0.2, 0.6])}
        >>> result = evaluate_traces([trace], percentiles=(), permutations=9)
        >>> lines = format_report(result).splitlines()
        >>> lines[0]
        '### events: reward'
        >>> # step 0 left out: READ at 2 and 4, the reward at 1 (a COPY step), periodic at 1 and 3
        >>> lines[4]
        '| 0 | 4 | 2 | 1 | 0.000 | 0.500 | 0.000 | 1.000 | 0.500 | 0.333 | 3.130 |'
    """
    lines = [f"## {title}"] if title else []
    n_ep = len(result["episodes"])
    window = result.get("event_window", 0)
    for name in result["aggregate"]:
        lines += ["", f"### events: {name}" + (f" (and the {window} step(s) after)" if window else ""), "",
                  "| episode | steps | " + " | ".join(_HEAD) + " |",
                  "|---|---|" + "---|" * len(_HEAD)]
        reasons: dict[str, dict[str, int]] = {}
        for i, ep in enumerate(result["episodes"]):
            m = ep[name]
            lines.append(f"| {i} | {m['n_steps']} | " + " | ".join(_fmt(m[c]) for c in _COLS) + " |")
            for key, why in m["nan_reasons"].items():
                if key in METRIC_KEYS:
                    counts = reasons.setdefault(why, {})
                    counts[key] = counts.get(key, 0) + 1
        agg = result["aggregate"][name]
        cells = ["", ""] + [
            f"{_fmt(agg[c]['mean'])} [{_fmt(agg[c]['min'])}, {_fmt(agg[c]['max'])}]" if agg[c]["n"] else "NaN"
            for c in METRIC_KEYS]
        lines.append(f"| mean [min, max] of {n_ep} | | " + " | ".join(cells) + " |")
        pm = result["pooled"][name]
        lines.append(f"| pooled | {pm['n_steps']} | " + " | ".join(_fmt(pm[c]) for c in _COLS) + " |")
        for why, keys in reasons.items():
            where = ", ".join(f"{k} ({n}/{n_ep} episodes)" for k, n in sorted(keys.items()))
            lines.append(f"\nNaN in {where}: {why}")
    truth = result.get("truth")
    if truth:
        lines += ["", f"### boundaries vs true changes (±{result['tolerance']} step, one-to-one)", "",
                  "| placement | precision | recall | F1 | READ / true |", "|---|---|---|---|---|"]
        for key in ("model", "random", "periodic", "frame_difference"):
            r = truth[key]
            std = f" ± {_fmt(r['f1_std'])}" if "f1_std" in r else ""
            lines.append(f"| {key} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])}{std} | "
                         f"{r['n_pred']} / {r['n_true']} |")
        lines.append(f"\nREAD rate {truth['read_rate']:.3f}, true change rate {truth['true_rate']:.3f}; ROC AUC of the "
                     f"frame difference for the true changes {truth['frame_difference']['auc']:.3f}")
    return "\n".join(lines).lstrip("\n")  # without a title the text starts at the first table


def _clean(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def to_json(obj: Any) -> str:
    """JSON text with NaN and infinities written as ``null`` (strict JSON); the reasons stay in ``nan_reasons``.

    Example:
        >>> import json
        >>> json.loads(to_json({"lift": float("nan"), "n": np.int64(3), "ok": np.bool_(True),
        ...                     "x": np.array([0.5, np.nan, np.inf])}))
        {'lift': None, 'n': 3, 'ok': True, 'x': [0.5, None, None]}
    """
    return json.dumps(_clean(obj), indent=2, allow_nan=False)
