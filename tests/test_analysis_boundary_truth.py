import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from imwm.analysis.boundary_truth import (
    read_offsets,
    boundary_prf,
    evenly_spaced,
    frame_difference_baseline_prf,
    periodic_baseline_prf,
    random_baseline_prf,
    reads_at_events,
)


def _flags(length, idx):
    out = np.zeros(length, bool)
    out[list(idx)] = True
    return out


def test_hand_computed_example():
    r = boundary_prf(_flags(20, [4, 6, 15]), _flags(20, [5, 12]), tolerance=1)
    assert r["n_matched"] == 1 and r["n_pred"] == 3 and r["n_true"] == 2
    assert r["precision"] == pytest.approx(1 / 3)
    assert r["recall"] == pytest.approx(1 / 2)
    assert r["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert "reason" not in r


def test_exact_prediction_is_perfect_and_tolerance_zero_requires_exact_steps():
    true = _flags(30, [3, 11, 20])
    assert boundary_prf(true, true, tolerance=0)["f1"] == 1.0
    shifted = _flags(30, [4, 12, 21])
    assert boundary_prf(shifted, true, tolerance=1)["f1"] == 1.0
    assert boundary_prf(shifted, true, tolerance=0)["f1"] == 0.0


def test_matching_is_one_to_one():
    # three READs around one change: only one may count
    r = boundary_prf(_flags(10, [4, 5, 6]), _flags(10, [5]), tolerance=1)
    assert r["n_matched"] == 1
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == 1.0


def test_greedy_matching_is_maximum_against_assignment_solver():
    rng = np.random.default_rng(0)
    for _ in range(200):
        length = int(rng.integers(5, 40))
        pred = rng.random(length) < rng.uniform(0.05, 0.6)
        true = rng.random(length) < rng.uniform(0.05, 0.6)
        tol = int(rng.integers(0, 4))
        p_idx, t_idx = np.flatnonzero(pred), np.flatnonzero(true)
        expected = 0
        if len(p_idx) and len(t_idx):
            ok = np.abs(p_idx[:, None] - t_idx[None, :]) <= tol
            rows, cols = linear_sum_assignment(-ok.astype(float))
            expected = int(ok[rows, cols].sum())
        assert boundary_prf(pred, true, tolerance=tol)["n_matched"] == expected


def test_batched_sequences_do_not_match_across_rows_and_accept_torch_flags():
    # row 0 predicts at its last step, the change is at row 1's first step: no match
    pred = torch.zeros(2, 6, 1)
    true = torch.zeros(2, 6, 1)
    pred[0, 5] = 1
    true[1, 0] = 1
    r = boundary_prf(pred, true, tolerance=2)
    assert r["n_matched"] == 0 and r["n_pred"] == 1 and r["n_true"] == 1
    true[0, 4] = 1
    assert boundary_prf(pred, true, tolerance=2)["n_matched"] == 1


def test_degenerate_inputs_give_nan_with_reason():
    none = np.zeros(10, bool)
    r = boundary_prf(none, _flags(10, [3]))
    assert math.isnan(r["precision"]) and r["recall"] == 0.0 and math.isnan(r["f1"])
    assert "no predicted boundaries" in r["reason"]
    r = boundary_prf(_flags(10, [3]), none)
    assert math.isnan(r["recall"]) and "no true boundaries" in r["reason"]


@pytest.mark.parametrize(
    "pred, true, tol, match",
    [
        (np.array([0, 2, 1]), np.zeros(3), 1, "pred must hold 0/1"),
        (np.zeros(4), np.zeros(5), 1, "same shape"),
        (np.zeros(4), np.zeros(4), -1, "tolerance must be"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), 1, "pred must have 1 or 2 dimension"),
    ],
)
def test_bad_input_is_named(pred, true, tol, match):
    with pytest.raises(ValueError, match=match):
        boundary_prf(pred, true, tolerance=tol)


def test_evenly_spaced_positions():
    assert evenly_spaced(10, 5).tolist() == [0, 2, 4, 6, 8]
    assert evenly_spaced(10, 3).tolist() == [0, 3, 6]
    assert evenly_spaced(4, 4).tolist() == [0, 1, 2, 3]
    assert evenly_spaced(7, 0).tolist() == []
    with pytest.raises(ValueError, match="count must be in"):
        evenly_spaced(5, 6)


def test_periodic_baseline_on_periodic_truth():
    in_phase = np.zeros(100, bool)
    in_phase[::10] = True
    assert periodic_baseline_prf(in_phase, 10, tolerance=0)["f1"] == 1.0
    out_of_phase = np.roll(in_phase, 5)
    assert periodic_baseline_prf(out_of_phase, 10, tolerance=1)["f1"] == 0.0
    # the per-row count form
    both = np.stack([in_phase, out_of_phase])
    r = periodic_baseline_prf(both, [10, 10], tolerance=0)
    assert r["n_matched"] == 10 and r["n_pred"] == 20


def test_random_baseline_matches_chance_rate():
    # tolerance 0: each random READ hits a change with probability n_true / T
    rng = np.random.default_rng(1)
    true = rng.random((4, 200)) < 0.1
    r = random_baseline_prf(true, 20, draws=300, seed=3, tolerance=0)
    assert r["precision"] == pytest.approx(true.mean(), abs=0.01)
    assert r["n_pred"] == 80 and r["draws"] == 300
    again = random_baseline_prf(true, 20, draws=300, seed=3, tolerance=0)
    assert again["f1"] == r["f1"]  # seeded
    with pytest.raises(ValueError, match="n must be in"):
        random_baseline_prf(true, 201, draws=2)
    with pytest.raises(ValueError, match="draws must be"):
        random_baseline_prf(true, 2, draws=0)


def test_frame_difference_baseline_picks_the_largest_changes():
    true = np.zeros((2, 8), bool)
    true[0, [2, 6]] = True
    true[1, 4] = True
    delta = np.array([[0.1, 0.2, 0.9, 0.1, 0.3, 0.2, 0.8, 0.1],   # the two largest are the changes
                      [0.5, 0.1, 0.1, 0.1, 0.2, 0.1, 0.1, 0.1]])  # the largest is 4 steps early
    r = frame_difference_baseline_prf(true, delta, [2, 1], tolerance=1)
    assert (r["n_pred"], r["n_matched"]) == (3, 2)
    assert r["precision"] == 2 / 3 and r["recall"] == 2 / 3
    # AUC over all 16 steps: 3 changes ranked against 13 others, by hand
    others = np.sort(delta[~true])
    wins = sum((others < v).sum() + 0.5 * (others == v).sum() for v in delta[true])
    assert abs(r["auc"] - wins / (3 * 13)) < 1e-12
    # NaN (no previous frame) never places a boundary: row 1 then picks step 4
    nan_first = delta.copy()
    nan_first[:, 0] = np.nan
    assert frame_difference_baseline_prf(true, nan_first, [2, 1], tolerance=0)["n_matched"] == 3


def test_frame_difference_baseline_rejects_a_misaligned_delta():
    with pytest.raises(ValueError, match="frame_delta must have the shape of true"):
        frame_difference_baseline_prf(np.zeros((2, 8), bool), np.zeros((2, 7)), 1)


def test_read_offsets_count_each_read_once_against_its_nearest_change():
    true = _flags(20, [5, 12])
    pred = _flags(20, [4, 5, 9, 13, 19])  # early, on, 3 from change 12, late, far
    assert read_offsets(pred, true) == {"early": 1, "on": 1, "late": 1, "farther": 2}
    assert read_offsets(_flags(20, [3]), _flags(20, [])) == {"early": 0, "on": 0, "late": 0, "farther": 1}
    shifted = np.stack([_flags(20, [4, 11]), _flags(20, [5, 12])])
    both = np.stack([true, true])
    assert read_offsets(shifted, both) == {"early": 2, "on": 2, "late": 0, "farther": 0}
    # a READ between two changes one step away from each counts against the earlier one
    assert read_offsets(_flags(12, [6]), _flags(12, [5, 7])) == {"early": 0, "on": 0, "late": 1, "farther": 0}
    with pytest.raises(ValueError, match="same shape"):
        read_offsets(_flags(20, [1]), _flags(10, [1]))


def test_reads_at_events_hand_computed():
    true, events = _flags(20, [5, 14]), _flags(20, [10])
    # off the changes (±1): every step but 4-6 and 13-15, 14 steps; near the event: 9-11, 3 of them
    pred = _flags(20, [5, 9, 11, 17, 19])  # 5 is on a change; 9 and 11 flank the event; 17, 19 are elsewhere
    r = reads_at_events(pred, true, events)
    assert (r["off_reads"], r["at_event"]) == (4, 2)
    assert r["share"] == pytest.approx(0.5) and r["chance"] == pytest.approx(3 / 14)
    assert r["lift"] == pytest.approx(0.5 / (3 / 14))
    exact = reads_at_events(pred, true, events, tolerance=0)  # off: all but 5 and 14; near: 10 only
    assert (exact["off_reads"], exact["at_event"], exact["chance"]) == (4, 0, pytest.approx(1 / 18))
    none = reads_at_events(_flags(20, [5]), true, events)
    assert none["off_reads"] == 0 and math.isnan(none["share"]) and math.isnan(none["lift"])
    with pytest.raises(ValueError, match="same shape"):
        reads_at_events(pred, true, _flags(19, [3]))


def test_reads_at_events_random_reads_have_lift_one():
    rng = np.random.default_rng(0)
    true, events, pred = (rng.random((400, 30)) < p for p in (0.1, 0.15, 0.2))
    r = reads_at_events(pred, true, events)
    assert r["off_reads"] > 1000 and r["lift"] == pytest.approx(1.0, abs=0.05)
    assert reads_at_events(pred | events, true, events)["lift"] > 1.5  # READs added on the events
