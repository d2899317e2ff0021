import json
import math

import numpy as np
import pytest

from imwm.analysis.report import evaluate_traces, format_report, to_json


def _trace(seed, length=120, on_events=True):
    rng = np.random.default_rng(seed)
    frames = np.full((length, 3, 8, 8), 10, np.uint8)
    jumps = np.sort(rng.choice(np.arange(2, length), 12, replace=False))
    for t in jumps:  # a big visual change at each jump
        frames[t:] = rng.integers(0, 255, dtype=np.uint8)
    frames += rng.integers(0, 3, size=frames.shape, dtype=np.uint8)  # small noise
    boundary = np.zeros(length, bool)
    boundary[0] = True
    boundary[jumps if on_events else rng.choice(np.arange(1, length), 12, replace=False)] = True
    from imwm.analysis.events import frame_delta
    lives = np.full(length, 3.0)
    lives[70:] = 2.0
    return {"frames": frames, "boundary": boundary, "read_prob": boundary * 0.9 + 0.05,
            "frame_delta": frame_delta(frames), "reward": np.zeros(length), "lives": lives,
            "is_last": np.eye(length, dtype=bool)[-1], "true_boundary": np.isin(np.arange(length), jumps) | (np.arange(length) == 0)}


def test_planted_boundaries_on_scene_changes_score_high():
    res = evaluate_traces([_trace(0), _trace(1)], percentiles=(90,), permutations=100, seed=0)
    m = res["pooled"]["delta_p90"]
    # 12 jumps out of 119 steps per episode = the top 10% frame changes, all on READ
    assert m["event_at_boundary"] > 0.9 and m["lift_over_event_rate"] > 8
    assert m["perm_p_value"] == pytest.approx(1 / 101) and m["cohens_d_frame_delta"] > 2
    assert res["truth"]["model"]["f1"] == 1.0
    assert res["truth"]["random"]["f1"] < 0.4
    # the planted READs are the scene jumps, so the largest frame changes find them too
    assert res["truth"]["frame_difference"]["f1"] == 1.0 and res["truth"]["frame_difference"]["auc"] > 0.95
    # reward is all zero: NaN with a reason, never a fake number
    assert math.isnan(res["aggregate"]["reward"]["lift_over_event_rate"]["mean"])
    assert res["episodes"][0]["reward"]["nan_reasons"]["perm_p_value"] == "no events"
    assert res["episodes"][0]["life_loss"]["n_events"] == 1
    text = format_report(res, title="planted")
    assert "### events: delta_p90" in text and "| pooled | 238 |" in text and "NaN in" in text
    json.loads(to_json(res))  # strict JSON


def test_random_boundaries_score_at_chance():
    res = evaluate_traces([_trace(s, on_events=False) for s in range(4)], permutations=100, seed=1)
    agg = res["aggregate"]["delta_p90"]
    assert agg["lift_over_event_rate"]["mean"] < 3
    assert res["pooled"]["delta_p90"]["perm_p_value"] > 0.01


def test_evaluate_rejects_nothing_and_ragged_truth():
    with pytest.raises(ValueError, match="at least one episode"):
        evaluate_traces([])
    with pytest.raises(ValueError, match="share one length"):
        evaluate_traces([_trace(0, 50), _trace(1, 60)], permutations=5)


def _catch_like_trace(seed, length=80, period=8):
    """Rewards every ``period`` steps; the model READs on the step after each reward."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, size=(length, 3, 8, 8), dtype=np.uint8)
    from imwm.analysis.events import frame_delta
    reward = np.zeros(length)
    reward[period - 1::period] = rng.choice([-1.0, 1.0], size=len(reward[period - 1::period]))
    boundary = np.zeros(length, bool)
    boundary[0] = True
    boundary[period::period] = True
    return {"frames": frames, "boundary": boundary, "read_prob": boundary * 0.8 + 0.1,
            "frame_delta": frame_delta(frames), "reward": reward}


def test_event_window_counts_a_segment_that_starts_after_the_reward():
    traces = [_catch_like_trace(s) for s in range(3)]
    exact = evaluate_traces(traces, permutations=100, seed=0)["pooled"]["reward"]
    assert exact["event_at_boundary"] == 0.0  # every READ is one step late for an exact match
    res = evaluate_traces(traces, permutations=100, seed=0, event_window=1)
    widened = res["pooled"]["reward"]
    # events now cover 2 of every 8 steps; every READ is on one of them
    assert widened["event_at_boundary"] == 1.0 and widened["lift_over_event_rate"] > 3
    assert widened["perm_p_value"] < 0.05 and res["event_window"] == 1
    assert "### events: reward (and the 1 step(s) after)" in format_report(res)


def test_widen_events_rejects_a_negative_window():
    from imwm.analysis.events import widen_events
    assert widen_events([True, False, False], 5).tolist() == [True, True, True]
    with pytest.raises(ValueError, match="after must be an integer >= 0"):
        widen_events([True, False], -1)
