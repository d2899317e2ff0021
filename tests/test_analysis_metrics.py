import math

import numpy as np
import pytest
import torch
from scipy import stats

from imwm.analysis.metrics import (
    METRIC_KEYS,
    aggregate_episodes,
    boundary_event_metrics,
    cohens_d,
    multi_event_metrics,
    roc_auc,
)


def _flags(length, idx):
    out = np.zeros(length, bool)
    out[list(idx)] = True
    return out


def test_boundaries_exactly_on_events():
    rng = np.random.default_rng(0)
    events = rng.random(300) < 0.08
    m = boundary_event_metrics(events, events, permutations=100, seed=1)
    rate = events.mean()
    assert m["event_at_boundary"] == 1.0
    assert m["event_at_nonboundary"] == 0.0
    assert m["lift_over_event_rate"] == pytest.approx(1.0 / rate)
    assert m["event_rate"] == pytest.approx(rate)
    # no random placement of the same count can beat a perfect one: p hits the floor 1/(P+1)
    assert m["perm_p_value"] == pytest.approx(1 / 101)
    assert m["nan_reasons"] == {"auc_read_prob": "read_prob not given",
                                "cohens_d_frame_delta": "frame_delta not given"}


def test_hand_computed_rates():
    boundary = _flags(10, [0, 3, 6])
    events = _flags(10, [3, 4, 9])
    m = boundary_event_metrics(boundary, events, permutations=10)
    assert m["event_at_boundary"] == pytest.approx(1 / 3)
    assert m["event_at_nonboundary"] == pytest.approx(2 / 7)
    assert m["lift_over_event_rate"] == pytest.approx((1 / 3) / 0.3)
    # evenly spaced, 3 of 10: steps 0, 3, 6 -> one event
    assert m["periodic_baseline"] == pytest.approx(1 / 3)


def test_auc_perfect_constant_reversed_and_ties():
    events = _flags(50, [3, 17, 30, 44])
    perfect = events.astype(float) * 0.5 + 0.25
    assert boundary_event_metrics(events, events, read_prob=perfect)["auc_read_prob"] == 1.0
    constant = np.full(50, 0.3)
    assert boundary_event_metrics(events, events, read_prob=constant)["auc_read_prob"] == 0.5
    assert roc_auc(1 - perfect, events) == 0.0
    # ties against the pairwise definition: P(s_pos > s_neg) + 0.5 P(s_pos == s_neg)
    rng = np.random.default_rng(3)
    score = rng.integers(0, 4, size=60).astype(float)
    label = rng.random(60) < 0.3
    pos, neg = score[label], score[~label]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert roc_auc(score, label) == pytest.approx(pairwise)


def test_periodic_baseline_on_periodic_events():
    events = np.zeros(100, bool)
    events[::10] = True
    ten = _flags(100, [3, 14, 22, 38, 41, 57, 66, 70, 85, 99])  # count 10, positions irrelevant
    assert boundary_event_metrics(ten, events)["periodic_baseline"] == 1.0
    assert boundary_event_metrics(ten, np.roll(events, 5))["periodic_baseline"] == 0.0
    twenty = _flags(100, range(0, 100, 5))  # evenly spaced every 5 steps: half hit
    assert boundary_event_metrics(twenty, events)["periodic_baseline"] == 0.5


def test_permutation_p_agrees_with_exact_hypergeometric_tail():
    rng = np.random.default_rng(5)
    events = rng.random(200) < 0.2
    boundary = np.zeros(200, bool)
    # 30 READs, 12 of them on events: an enrichment with a moderate p-value
    boundary[rng.choice(np.flatnonzero(events), 12, replace=False)] = True
    boundary[rng.choice(np.flatnonzero(~events), 18, replace=False)] = True
    m = boundary_event_metrics(boundary, events, permutations=4000, seed=0)
    exact = stats.hypergeom.sf(12 - 1, 200, int(events.sum()), 30)  # P(hits >= 12)
    assert m["perm_p_value"] == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 4000) + 1e-3)
    assert m["perm_null_event_rate"] == pytest.approx(events.mean(), abs=0.01)


def test_permutation_p_is_uniformish_under_the_null():
    pvals = []
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        boundary = rng.random(1000) < 0.3
        events = rng.random(1000) < 0.5
        pvals.append(boundary_event_metrics(boundary, events, permutations=100, seed=seed)["perm_p_value"])
    pvals = np.array(pvals)
    assert pvals.min() >= 1 / 101  # the +1 correction: never 0
    # binned check: P(p <= a) close to a (valid: never much above a)
    for a in (0.05, 0.1, 0.25, 0.5, 0.75):
        frac = (pvals <= a).mean()
        se = math.sqrt(a * (1 - a) / len(pvals))
        assert frac <= a + 3 * se + 0.01, (a, frac)
        assert frac >= a - 3 * se - 0.05, (a, frac)
    assert stats.kstest(pvals, "uniform").pvalue > 0.001


def test_permutation_p_is_seeded():
    rng = np.random.default_rng(2)
    b, e = rng.random(120) < 0.2, rng.random(120) < 0.3
    a1 = boundary_event_metrics(b, e, permutations=50, seed=7)["perm_p_value"]
    a2 = boundary_event_metrics(b, e, permutations=50, seed=7)["perm_p_value"]
    assert a1 == a2


def test_cohens_d_pooled_hand_value():
    g, r = np.array([4.0, 6.0]), np.array([1.0, 2.0, 3.0])
    pooled = math.sqrt((2.0 + 2.0) / 3)  # SS_g = 2, SS_r = 2, dof 3
    assert cohens_d(g, r) == pytest.approx((5.0 - 2.0) / pooled)
    delta = np.array([np.nan, 1.0, 2.0, 4.0, 3.0, 6.0])  # step 0: no previous frame
    boundary = _flags(6, [0, 3, 5])
    m = boundary_event_metrics(boundary, _flags(6, [3]), frame_delta=delta)
    assert m["cohens_d_frame_delta"] == pytest.approx(cohens_d(np.array([4.0, 6.0]), np.array([1.0, 2.0, 3.0])))


@pytest.mark.parametrize(
    "boundary, events, nan_keys",
    [
        (np.zeros(20, bool), _flags(20, [3, 8]),
         {"event_at_boundary", "lift_over_event_rate", "perm_p_value", "periodic_baseline",
          "cohens_d_frame_delta"}),
        (np.ones(20, bool), _flags(20, [3, 8]),
         {"event_at_nonboundary", "perm_p_value", "cohens_d_frame_delta"}),
        (_flags(20, [2, 9]), np.zeros(20, bool),
         {"lift_over_event_rate", "perm_p_value", "auc_read_prob"}),
        (_flags(20, [2, 9]), np.ones(20, bool), {"perm_p_value", "auc_read_prob"}),
    ],
)
def test_degenerate_inputs_give_nan_with_reason(boundary, events, nan_keys):
    prob = np.linspace(0, 1, 20)
    delta = np.arange(20.0)
    m = boundary_event_metrics(boundary, events, read_prob=prob, frame_delta=delta, permutations=20)
    nan_now = {k for k in METRIC_KEYS if math.isnan(m[k])}
    assert nan_now == nan_keys
    for key in nan_keys:
        assert m["nan_reasons"][key]


def test_constant_frame_delta_and_single_step():
    m = boundary_event_metrics(_flags(8, [2]), _flags(8, [2]), frame_delta=np.ones(8))
    assert math.isnan(m["cohens_d_frame_delta"]) and "constant" in m["nan_reasons"]["cohens_d_frame_delta"]
    one = boundary_event_metrics([1], [1], read_prob=[0.9], frame_delta=[0.0])
    assert one["event_at_boundary"] == 1.0 and math.isnan(one["perm_p_value"])


def test_accepts_torch_flags_with_trailing_dim():
    b = torch.zeros(30, 1)
    b[::3] = 1
    m = boundary_event_metrics(b, b.bool(), read_prob=b.float(), permutations=10)
    assert m["event_at_boundary"] == 1.0 and m["auc_read_prob"] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"boundary": np.zeros(5), "events": np.zeros(6)}, "same length"),
        ({"boundary": np.array([0, 0.5]), "events": np.zeros(2)}, "boundary must hold 0/1"),
        ({"boundary": np.zeros(5), "events": np.zeros(5), "read_prob": np.zeros(4)}, r"read_prob must have shape \[5\]"),
        ({"boundary": np.zeros(5), "events": np.zeros(5), "read_prob": np.full(5, np.nan)}, "read_prob must be finite"),
        ({"boundary": np.zeros(5), "events": np.zeros(5), "permutations": 0}, "permutations must be"),
        ({"boundary": np.zeros(0), "events": np.zeros(0)}, "at least one step"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    boundary, events = kwargs.pop("boundary"), kwargs.pop("events")
    with pytest.raises(ValueError, match=match):
        boundary_event_metrics(boundary, events, **kwargs)


def test_multi_event_and_aggregate():
    events = {"a": _flags(20, [1, 5]), "b": np.zeros(20, bool)}
    res = multi_event_metrics(_flags(20, [1, 7]), events, permutations=10)
    assert set(res) == {"a", "b"}
    assert res["a"]["event_at_boundary"] == 0.5 and math.isnan(res["b"]["lift_over_event_rate"])
    agg = aggregate_episodes([{"x": 1.0}, {"x": 3.0}, {"x": float("nan")}], keys=["x"])
    assert agg["x"] == {"mean": 2.0, "min": 1.0, "max": 3.0, "n": 2}
    with pytest.raises(ValueError, match="at least one event type"):
        multi_event_metrics(_flags(4, [1]), {})


def test_permutation_p_value_reads_integer_flags_as_a_mask():
    from imwm.analysis.metrics import permutation_p_value

    events = np.zeros(60, bool)
    events[[0, 1, 30]] = True  # read as indices, 0/1 flags would pick steps 0 and 1: both events
    away = np.zeros(60, int)
    away[[10, 11, 12]] = 1  # READs on steps without events: p must be 1 as with bool flags
    as_bool = permutation_p_value(away.astype(bool), events, permutations=99, seed=0)
    assert permutation_p_value(away, events.astype(int), permutations=99, seed=0) == as_bool
    assert as_bool[0] == 1.0


@pytest.mark.parametrize("boundary, events, permutations, match", [
    (np.zeros(5, bool), np.ones(5, bool), 10, "no READ step"),
    (np.ones(5, bool), np.ones(4, bool), 10, "same shape"),
    (np.ones(5, bool), np.ones(5, bool), 0, "permutations must be an integer >= 1"),
    (np.full(5, 2), np.ones(5, bool), 10, "0/1 flags"),
])
def test_permutation_p_value_rejects_undefined_input(boundary, events, permutations, match):
    from imwm.analysis.metrics import permutation_p_value

    with pytest.raises(ValueError, match=match):
        permutation_p_value(boundary, events, permutations=permutations, seed=0)
