"""scripts/evaluate.py and scripts/plot.py: a real debug run evaluated (stats + GIF), agents of every
dynamics / intrinsic choice rebuilt and filmed, learning curves of synthetic runs, the bootstrap CI
and the human-normalised IQM."""
import csv
import importlib.machinery
import json
import runpy
import sys
import types
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from imwm.analysis.curves import (ATARI_RANDOM_HUMAN, bootstrap_ci, human_normalized, iqm, plot_learning_curves,
                                  readable_name, stratified_bootstrap_iqm)
from imwm.analysis.play import evaluate_run, load_agent, play_episodes
from imwm.analysis.terminals import training_episodes
from imwm.analysis.video import FrameSource, choose_frame_source, write_video
from imwm.configs import CONFIG_DIR
from script_runner import ROOT, run_script


# ----------------------------------------------------------------------------- statistics
def test_iqm_hand_computed_and_as_scipy():
    # 8 scores: floor(0.25 * 8) = 2 cut at each end (-50, 0 and 5, 100): the mean of 1, 2, 3, 4
    assert iqm([100.0, 0.0, 5.0, 1.0, 4.0, 2.0, 3.0, -50.0]) == 2.5
    # runs x games of human-normalised scores: breakout 1.7 -> 0, 30.5 -> 1; pong -3.05 -> 0.5,
    # 85.2 -> 3.0; sorted 0, 0.5, 1, 3 -> IQM (0.5 + 1) / 2
    scores = np.array([[human_normalized(1.7, "breakout"), human_normalized(-3.05, "pong")],
                       [human_normalized(30.5, "breakout"), human_normalized(85.2, "pong")]])
    np.testing.assert_allclose(scores, [[0.0, 0.5], [1.0, 3.0]], atol=1e-12)
    assert iqm(scores) == pytest.approx(0.75)
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 5, 10, 26):
        x = rng.normal(size=(n, 3))
        np.testing.assert_allclose(iqm(x, axis=0), scipy_stats.trim_mean(x, 0.25, axis=0))
    assert len(ATARI_RANDOM_HUMAN) == 26 and ATARI_RANDOM_HUMAN["pong"] == (-20.7, 14.6)


def test_bootstrap_ci_contains_the_mean_and_is_reproducible():
    rng = np.random.default_rng(1)
    samples = rng.normal(loc=[0.0, 10.0, 20.0], scale=2.0, size=(5, 3))
    mean, low, high = bootstrap_ci(samples, seed=0)
    np.testing.assert_allclose(mean, samples.mean(axis=0))
    assert (low < mean).all() and (mean < high).all()
    assert (high - low < 4 * 2.0).all()  # a CI of the mean, not of the spread
    again = bootstrap_ci(samples, seed=0)
    np.testing.assert_array_equal(again[1], low)
    one = bootstrap_ci(samples[:1])
    np.testing.assert_array_equal(one[1], one[2])  # one seed: no interval
    point, lo, hi = stratified_bootstrap_iqm([samples[:, :2], samples[:3, :2]], n_boot=200)
    assert (lo <= point).all() and (point <= hi).all()


def test_stratified_bootstrap_iqm_names_a_game_without_runs_or_a_different_width():
    with pytest.raises(ValueError, match=r"game\(s\) \[1\] have no runs"):
        stratified_bootstrap_iqm([[[1.0], [2.0]], []])
    with pytest.raises(ValueError, match="different numbers of points"):
        stratified_bootstrap_iqm([[[1.0], [2.0]], [[1.0, 2.0]]])


# ----------------------------------------------------------------------------- synthetic runs
def write_run(folder: Path, *, seed: int, task: str, curve, env_name="atari", replay="uniform",
              minutes_per_step=1e-3, name=None) -> Path:
    """A run folder as the trainer writes it: config.yaml (the keys grouping reads) + metrics.csv."""
    folder.mkdir(parents=True)
    cfg = {"seed": seed, "run_name": name or f"{env_name}-{task}-rssm-s{seed}-{seed:08x}",
           "env": {"name": env_name, "task": task}, "dynamics": {"name": "rssm"},
           "replay": {"name": replay}, "total_env_steps": 1000, "logger": {"backend": "csv"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env_step", "eval/return", "train/minutes"])
        for step, value in curve:
            writer.writerow([step, value, step * minutes_per_step])
        writer.writerow([int(curve[-1][0]) + 50, "", 1.0])  # a training-only row: no eval value
    return folder


def test_plot_two_seeds_groups_them_with_a_ci_around_the_mean(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "a", seed=0, task="CartPole-v1", env_name="cartpole", curve=[(100, 10.0), (200, 30.0)])
    write_run(runs / "b", seed=1, task="CartPole-v1", env_name="cartpole", curve=[(100, 20.0), (200, 50.0)])
    # the same readable name, another replay: its own group, labelled by the differing key
    write_run(runs / "c", seed=0, task="CartPole-v1", env_name="cartpole", replay="curious",
              curve=[(100, 5.0), (200, 6.0)])
    summary = plot_learning_curves([runs], tmp_path / "curves.png", n_boot=500)
    groups = summary["groups"]
    assert set(groups) == {"cartpole-CartPole-v1-rssm [replay.name=uniform]",
                           "cartpole-CartPole-v1-rssm [replay.name=curious]"}
    two = groups["cartpole-CartPole-v1-rssm [replay.name=uniform]"]
    assert two["n"] == 2 and two["x_last"] == 200 and two["final_mean"] == 40.0
    assert two["final_low"] <= 40.0 <= two["final_high"] and two["final_low"] < two["final_high"]
    assert not summary["aggregate"]  # CartPole has no human reference score
    image = Image.open(tmp_path / "curves.png")
    assert image.format == "PNG" and image.size[0] > 300
    # grouped by name: the seed and the config hash are stripped, the replay runs merge (with a warning)
    with pytest.warns(UserWarning, match="differ in config keys"):
        by_name = plot_learning_curves([runs], tmp_path / "by_name.png", by="name", x="minutes")
    assert list(by_name["groups"]) == ["cartpole-CartPole-v1-rssm"]
    assert by_name["groups"]["cartpole-CartPole-v1-rssm"]["n"] == 3
    assert readable_name("atari-pong-vta-s12-0123abcd") == "atari-pong-vta"


def test_plot_atari_panels_and_human_normalised_iqm(tmp_path):
    runs = tmp_path / "sweep"
    for seed, (b, p) in enumerate([(1.7, -3.05), (30.5, 85.2)]):
        write_run(runs / f"breakout-{seed}", seed=seed, task="breakout", curve=[(100, 1.7), (200, b)])
        write_run(runs / f"pong-{seed}", seed=seed, task="pong", curve=[(100, -20.7), (200, p)])
    out = run_script(tmp_path, "plot.py", str(runs), "--out", str(tmp_path / "atari.png"), "--bootstrap", "300")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "atari-*-rssm: human-normalised IQM 0.750" in out.stdout  # the hand-computed case above
    assert "atari-breakout-rssm: eval/return" in out.stdout and "atari-pong-rssm: eval/return" in out.stdout
    assert (tmp_path / "atari.png").stat().st_size > 10_000


def test_plot_and_evaluate_user_errors_are_one_line(tmp_path, monkeypatch, capsys):
    for script, args in (("plot.py", [str(tmp_path / "missing")]),
                         ("plot.py", [str(tmp_path), "--out", "x.pdf"]),
                         ("evaluate.py", ["--run", str(tmp_path / "missing")]),
                         ("evaluate.py", ["--logdir", str(tmp_path)]),
                         ("evaluate.py", ["--run", str(tmp_path), "--video", "x.avi"])):
        monkeypatch.setattr(sys, "argv", [script, *args])
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (script, err)
        assert err.startswith("imwm: error: ") and err.count("\n") == 1, err


# ----------------------------------------------------------------------------- evaluate a real run
def test_evaluate_and_plot_a_real_debug_run(tmp_path):
    run = tmp_path / "run"
    trained = run_script(tmp_path, "train.py", "preset=debug", "logger=csv", "threads=1", f"run_dir={run}",
                         "total_env_steps=200")
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = run_script(tmp_path, "evaluate.py", "--logdir", str(run), "--episodes", "3", "--max-steps", "60",
                     "--video", str(tmp_path / "ep.gif"), "--json", str(tmp_path / "eval.json"), "--terminals")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    # how the 3 episodes ended, and the continue head over the run's replay by terminal cause
    assert sum(result["ends"].values()) == 3 and set(result["ends"]) <= {"pole", "edge", "cap"}
    groups = result["continue"]
    assert set(groups) <= {"non_terminal", "pole", "edge", "other"} and groups["non_terminal"]["count"] >= 200
    assert groups["pole"]["count"] >= 1  # 100 random prefill steps end CartPole episodes by the pole
    assert all(0.0 <= g["continue"] <= 1.0 for g in groups.values())
    assert f"continue head over the replay, pole: {groups['pole']['continue']:.3f}" in out.stdout
    # the episodes played while training, read back from the replay snapshot
    (played,) = training_episodes(load_agent(run))
    assert len(played) >= 2 and played[-1]["env_step"] <= 200
    assert [e["env_step"] for e in played] == sorted({e["env_step"] for e in played})
    assert all(e["return"] == e["length"] > 0 and e["end"] in {"pole", "edge", "cap"} for e in played)
    assert played[0]["env_step"] == played[0]["length"]  # the first episode starts the stream
    assert result["env_step"] == 200 and result["episodes"] == 3 and len(result["returns"]) == 3
    assert result["return_mean"] == pytest.approx(np.mean(result["returns"]))
    assert result["return_std"] == pytest.approx(np.std(result["returns"]))
    assert f"return {result['return_mean']:.2f} +- {result['return_std']:.2f}" in out.stdout
    gif = Image.open(tmp_path / "ep.gif")
    assert gif.format == "GIF" and gif.size == (600, 400) and gif.n_frames > 3
    # episode 1's frames: the reset frame and one per step (identical frames may merge)
    assert gif.n_frames <= result["lengths"][0] + 1
    plotted = run_script(tmp_path, "plot.py", str(run), "--out", str(tmp_path / "curve.png"))
    assert plotted.returncode == 0, plotted.stderr[-3000:]
    assert "cartpole-CartPole-v1-rssm" in plotted.stdout and (tmp_path / "curve.png").is_file()


def _fake_run(run_dir: Path, overrides: list[str]) -> Path:
    """A run folder with an untrained agent (and intrinsic reward) as train.py checkpoints it."""
    from hydra import compose, initialize_config_dir

    from imwm.envs import make_env
    from imwm.training.build_intrinsic import build_intrinsic
    from imwm.training.build_model import build_agent
    from imwm.training.checkpoint import save_checkpoint
    from imwm.training.config import to_plain

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["preset=debug", "logger=none", f"run_dir={run_dir}", *overrides])
    plain = to_plain(cfg)
    env = make_env(**plain["env"], num_envs=1, seed=0)
    obs_shape, action_dim = tuple(env.observation_spec["observation"].shape[1:]), int(env.action_spec.shape[-1])
    env.close()
    agent = build_agent(plain, obs_shape=obs_shape, action_dim=action_dim)
    agent.intrinsic = build_intrinsic(plain["intrinsic"], agent)
    save_checkpoint(run_dir / "checkpoints" / "latest.pt",
                    {"agent": agent.state_dict(), "config": plain, "counters": {"env_steps": 7},
                     "logger": {"run_id": None}})
    return run_dir


@pytest.mark.parametrize("overrides, size", [
    (["dynamics=vta", "intrinsic=disagreement", "env=atari", "env.task=pong", "model.cnn_depth=4"], (256, 256)),
    (["dynamics=rssm", "intrinsic=adaptive"], (600, 400)),
    (["dynamics=vta", "intrinsic=lexa_style"], (600, 400)),
])
def test_evaluate_rebuilds_every_dynamics_and_intrinsic(tmp_path, overrides, size):
    run = _fake_run(tmp_path / "run", overrides)
    result = evaluate_run(run, episodes=2, mode="sample", max_steps=12, video=tmp_path / "ep.gif", printer=None)
    assert result["env_step"] == 7 and len(result["returns"]) == 2 and result["mode"] == "sample"
    gif = Image.open(tmp_path / "ep.gif")
    assert gif.size == size and 1 < gif.n_frames <= 13


def test_vector_env_without_renderer_says_no_video(tmp_path):
    source = choose_frame_source({"name": "gym", "task": "imwm/SparseChain-v0"}, (20,), torch.float32)
    assert source.kind is None and source.reason.startswith("no video can be made: imwm/SparseChain-v0")
    run = _fake_run(tmp_path / "run", ["env.name=gym", "env.task=imwm/SparseChain-v0"])
    lines = []
    result = evaluate_run(run, episodes=1, max_steps=5, printer=lines.append)
    assert result["video"] is None and any("no video can be made" in line for line in lines)


def test_evaluate_logs_the_statistics_to_wandb_without_a_video(tmp_path, monkeypatch):
    """``--wandb`` with no video (a vector env without a renderer) still logs the return statistics."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = _fake_run(tmp_path / "run", ["env.name=gym", "env.task=imwm/SparseChain-v0", "logger=wandb"])
    lines = []
    result = evaluate_run(run, episodes=1, max_steps=5, wandb=True, printer=lines.append)
    assert result["video"] is None and isinstance(result["wandb_run"], str) and result["wandb_run"]
    assert any("no video to log; logging the return statistics only" in line for line in lines)
    assert any(f"wandb: logged to run {result['wandb_run']}" in line for line in lines)
    assert list((run / "wandb").glob(f"offline-run-*-{result['wandb_run']}"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    lines.clear()
    assert evaluate_run(run, episodes=1, max_steps=5, wandb=True, printer=lines.append)["wandb_run"] is None
    assert any("wandb: disabled" in line for line in lines)


class _Rendered(gym.Env):
    """Vector observations and an rgb_array render that shows the step count; ends after 5 steps."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 7}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(3, np.float32), 1.0, self.t >= 5, False, {}

    def render(self):
        return np.full((4, 6, 3), self.t, np.uint8)


def test_gymnasium_render_films_the_terminal_frame(tmp_path):
    from imwm.envs import make_env

    if "imwm_test/Rendered-v0" not in gym.registry:
        gym.register("imwm_test/Rendered-v0", entry_point=_Rendered)
    source = choose_frame_source({"name": "gym", "task": "imwm_test/Rendered-v0"}, (3,), torch.float32)
    assert source.kind == "render" and source.fps == 7 and source.env_kwargs == {"render_mode": "rgb_array"}
    env = make_env(name="gym", task="imwm_test/Rendered-v0", kwargs=source.env_kwargs, num_envs=2, seed=0)

    def policy(td):
        return td.set("action", torch.nn.functional.one_hot(torch.zeros(2, dtype=torch.long), 2))

    out = play_episodes(env, policy, max_steps=20, frames=source)
    env.close()
    assert out["returns"].tolist() == [5.0, 5.0]
    assert [int(f[0, 0, 0]) for f in out["frames"]] == [0, 1, 2, 3, 4, 5]  # reset ... terminal


def test_mp4_goes_through_imageio_ffmpeg(tmp_path, monkeypatch):
    """MP4 when imageio-ffmpeg is installed (faked here: it is optional); odd sides are padded."""
    sent = {}

    def write_frames(path, size, **kwargs):
        sent.update(path=path, size=size, kwargs=kwargs, frames=[])
        while True:
            frame = yield
            if frame is not None:
                sent["frames"].append(frame.shape)

    fake = types.ModuleType("imageio_ffmpeg")
    fake.__spec__ = importlib.machinery.ModuleSpec("imageio_ffmpeg", None)
    fake.write_frames = write_frames
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", fake)
    frames = [np.zeros((5, 7, 3), np.uint8)] * 3
    write_video(frames, tmp_path / "a.mp4", fps=15)
    assert sent["size"] == (8, 6) and sent["frames"] == [(6, 8, 3)] * 3 and sent["kwargs"]["fps"] == 15
    write_video(frames, tmp_path / "b.mp4", fps=15, scale=2)  # upscaled as encoded: even sides, no pad
    assert sent["size"] == (14, 10) and sent["frames"] == [(10, 14, 3)] * 3
    assert FrameSource("observation").kind == "observation"
