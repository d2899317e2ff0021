import math

import numpy as np
import pytest
import torch

from imwm.analysis.events import (
    build_events,
    delta_event_name,
    episode_end_events,
    frame_delta,
    life_loss_events,
    percentile_events,
    reward_events,
    score_change_events,
)


def test_frame_delta_hand_values_uint8_and_float():
    frames = np.zeros((4, 2, 2, 3), np.uint8)
    frames[1, 0, 0, :] = 255  # 3 of 12 values change fully
    frames[2] = frames[1]
    frames[3] = 51  # every value 0.2 from step 2, except the 3 at 1.0 -> 0.8
    d = frame_delta(frames)
    assert math.isnan(d[0])
    assert d[1] == pytest.approx(3 / 12)
    assert d[2] == 0.0
    assert d[3] == pytest.approx((9 * 0.2 + 3 * 0.8) / 12, abs=1e-6)
    as_float = frame_delta(torch.from_numpy(frames).float() / 255)
    np.testing.assert_allclose(as_float[1:], d[1:], atol=1e-6)


def test_percentile_events_top_fraction_and_ties():
    vals = np.arange(100.0)
    ev = percentile_events(vals, 90)
    assert ev.sum() == 10 and ev[90:].all()
    assert percentile_events(vals, 99).sum() == 1
    # a mostly static screen: ties at the top do not become events
    flat = np.zeros(50)
    flat[7] = 1.0
    assert percentile_events(flat, 90).tolist() == (np.arange(50) == 7).tolist()
    with_nan = np.r_[np.nan, np.arange(10.0)]
    ev = percentile_events(with_nan, 80)
    assert not ev[0] and ev.sum() == 2
    assert not percentile_events(np.full(5, np.nan), 90).any()
    with pytest.raises(ValueError, match="percentile must be in"):
        percentile_events(vals, 100)


def test_reward_score_life_and_end_events():
    reward = torch.tensor([[0.0], [1.0], [0.0], [-1.0]])
    assert reward_events(reward).tolist() == [False, True, False, True]
    assert score_change_events([0, 10, 0, 0, 5]).tolist() == [False, True, False, False, True]
    assert life_loss_events([4, 4, 3, 3, 3, 2]).tolist() == [False, False, True, False, False, True]
    # a new episode's counter going back up is not a loss
    assert life_loss_events([1, 0, 5, 5]).tolist() == [False, True, False, False]
    assert episode_end_events([0, 0, 1, 0, 1]).tolist() == [False, False, True, False, True]
    with pytest.raises(ValueError, match="lives must be"):
        life_loss_events(np.zeros((3, 2)))


def test_build_events_names_and_length_check():
    rng = np.random.default_rng(0)
    delta = rng.random(40)
    ev = build_events(frame_delta=delta, percentiles=(90, 95, 99), reward=np.zeros(40),
                      lives=np.full(40, 3))
    assert list(ev) == ["delta_p90", "delta_p95", "delta_p99", "reward", "life_loss"]
    assert ev["delta_p90"].sum() == 4 and ev["delta_p99"].sum() == 1
    assert delta_event_name(99.5) == "delta_p99.5"
    with pytest.raises(ValueError, match="one value per step"):
        build_events(frame_delta=delta, reward=np.zeros(39))
