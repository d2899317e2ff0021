import matplotlib.image as mpimg
import numpy as np
import pytest

from imwm.analysis.figures import (
    COPY_COLOUR,
    READ_COLOUR,
    plot_all,
    plot_boundary_fired,
    plot_boundary_grid,
    select_window,
)


def _trace(length=40, reads=(0, 9, 20, 31), reward_at=None):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 60, size=(length, 3, 16, 16), dtype=np.uint8)
    boundary = np.zeros(length, bool)
    boundary[list(reads)] = True
    reward = np.zeros(length)
    if reward_at is not None:
        reward[reward_at] = 1.0
    delta = np.r_[np.nan, rng.random(length - 1)]
    return {
        "frames": frames, "boundary": boundary, "read_prob": boundary * 0.8 + 0.1,
        "seg_len": np.arange(length) % 9, "seg_num": np.cumsum(boundary),
        "kl_abs": rng.random(length), "kl_obs": rng.random(length), "reward": reward,
        "frame_delta": delta, "true_boundary": boundary,
    }


def _count_colour(path, colour, tol=0.06):
    img = mpimg.imread(path)[..., :3]
    return int((np.abs(img - np.array(colour)).max(axis=-1) < tol).sum())


def test_select_window():
    tr = _trace(reward_at=25)
    assert select_window(tr, 10, "start") == (0, 10)
    assert select_window(tr, 10, "reward_or_delta") == (20, 30)  # centred on the reward
    no_reward = _trace()
    s, e = select_window(no_reward, 10, "reward_or_delta")
    peak = int(np.nanargmax(no_reward["frame_delta"]))
    assert s <= peak < e and e - s == 10
    assert select_window(tr, 1000, "start") == (0, 40)
    with pytest.raises(ValueError, match="window must be one of"):
        select_window(tr, 10, "middle")


def test_grid_bar_colours_follow_boundaries(tmp_path):
    tr = _trace()
    path = plot_boundary_grid(tr, str(tmp_path / "g.png"), start=0, stop=10)
    red, blue = _count_colour(path, READ_COLOUR), _count_colour(path, COPY_COLOUR)
    assert red > 0 and blue > 0
    assert 3.0 < blue / red < 4.5  # 2 READ bars (t=0, 9) against 8 COPY bars (+1 legend swatch each)
    tr["boundary"][:] = False
    tr["true_boundary"][:] = False
    path = plot_boundary_grid(tr, str(tmp_path / "g2.png"), start=0, stop=10)
    assert _count_colour(path, READ_COLOUR) < 0.05 * red  # only the legend swatch is left


def test_plot_all_writes_three_figures_and_handles_no_reads(tmp_path):
    paths = plot_all(_trace(reward_at=12), str(tmp_path), length=20, window="reward_or_delta", title="unit")
    assert set(paths) == {"boundary_grid", "boundary_internal", "boundary_fired"}
    for p in paths.values():
        assert mpimg.imread(p).shape[0] > 100
    tr = _trace(reads=())
    del tr["kl_abs"], tr["kl_obs"]  # a model without KLs still plots
    p = plot_boundary_fired(tr, str(tmp_path / "f.png"))
    assert mpimg.imread(p).shape[0] > 50
