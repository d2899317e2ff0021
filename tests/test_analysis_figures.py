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


def test_vector_observations_get_a_timeline_and_the_frame_figures_are_skipped_with_a_reason(tmp_path):
    from imwm.analysis.figures import has_frames, skipped_figures

    tr = _trace(reward_at=12)
    assert has_frames(tr) and skipped_figures(tr) == {}
    tr["frames"] = np.random.default_rng(0).normal(size=(40, 4))  # CartPole-like [T, D]
    assert not has_frames(tr)
    out_dir = tmp_path / "viz"
    paths = plot_all(tr, str(out_dir), length=20)
    assert set(paths) == {"boundary_timeline", "boundary_internal"}
    assert sorted(p.name for p in out_dir.iterdir()) == ["boundary_internal.png", "boundary_timeline.png"]
    # the READ / COPY bar is drawn under the observation: 2 READ (t=0, 9) of the first 20 steps, 18 COPY
    red, blue = _count_colour(paths["boundary_timeline"], READ_COLOUR), _count_colour(paths["boundary_timeline"],
                                                                                      COPY_COLOUR)
    assert red > 0 and 5 < blue / red < 12
    reasons = skipped_figures(tr)
    assert set(reasons) == {"boundary_grid.png", "boundary_fired.png"}
    assert all("vectors of shape (4,), not images" in why and "\n" not in why for why in reasons.values())
    tr["frames"] = np.random.default_rng(0).normal(size=(40, 20))  # many components: a heat map
    assert mpimg.imread(plot_all(tr, str(tmp_path / "wide"), length=20)["boundary_timeline"]).shape[0] > 100


def test_plot_all_leaves_no_empty_folder_when_drawing_fails(tmp_path, monkeypatch):
    import imwm.analysis.figures as figures

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(figures, "plot_boundary_grid", broken)
    out_dir = tmp_path / "viz"
    with pytest.raises(RuntimeError, match="no display"):
        plot_all(_trace(), str(out_dir), length=20)
    assert not out_dir.exists()
    out_dir.mkdir()  # a folder the user made is kept
    with pytest.raises(RuntimeError):
        plot_all(_trace(), str(out_dir), length=20)
    assert out_dir.is_dir()
