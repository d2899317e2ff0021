"""The viz / eval scripts on a real (tiny) train_vta run folder: the config restore contract."""

import json
import math
import os

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from imwm.analysis.restore import restore_run
from imwm.configs import CONFIG_DIR
from imwm.training.vta_run import train
from script_runner import load_script, run_script  # tests dir is on sys.path


@pytest.fixture(scope="module")
def vta_run(tmp_path_factory):
    """A tiny original-VTA run trained with NON-default max_seg_len=37 and force scale 3.5."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny_vta"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train_vta", overrides=[
            f"run_dir={run_dir}", "vta.max_seg_len=37", "vta.boundary_force_scale=3.5",
            "vta.cnn_depth=4", "vta.embed_dim=16", "vta.belief_dim=16", "vta.hidden_dim=16",
            "vta.state_dim=4", "train.updates=2", "train.eval_every=0", "data.batch_size=2",
            "data.seq_len=12", "data.heldout_sequences=3",
        ])
    train(cfg)
    return str(run_dir)


def test_restore_uses_the_training_config_not_defaults(vta_run, capsys):
    restored = restore_run(vta_run)
    assert restored.model.max_seg_len == 37 and restored.model.boundary_force_scale == 3.5
    assert not restored.model.training
    restored = restore_run(vta_run, ["vta.boundary_force_scale=0.0"])
    assert restored.model.boundary_force_scale == 0.0 and restored.model.max_seg_len == 37
    assert "override vta.boundary_force_scale: 3.5 -> 0.0" in capsys.readouterr().out


def test_viz_script_restores_max_seg_len_and_writes_three_figures(vta_run, tmp_path, capsys):
    viz = load_script("vta_boundary_viz")
    out = viz.main(["--run", vta_run, "--length", "8", "--out_dir", str(tmp_path), "--window", "reward_or_delta"])
    assert out["boundary_options"]["max_seg_len"] == 37
    assert out["restored"].model.max_seg_len == 37
    for name in ("boundary_grid", "boundary_internal", "boundary_fired"):
        assert os.path.getsize(out["paths"][name]) > 1000
    assert "max_seg_len=37" in capsys.readouterr().out
    # an analysis-time override wins, and is reported with the value it replaces
    restored = restore_run(vta_run, ["vta.max_seg_len=5"])
    assert restored.model.max_seg_len == 5
    assert "override vta.max_seg_len: 37 -> 5" in capsys.readouterr().out


def test_shape_changing_and_unknown_overrides_are_refused(vta_run, tmp_path):
    viz = load_script("vta_boundary_viz")
    with pytest.raises(ValueError, match=r"vta.belief_dim=32 \(trained: 16\) change the model's shapes"):
        viz.main(["--run", vta_run, "--out_dir", str(tmp_path), "vta.belief_dim=32"])
    with pytest.raises(ValueError, match="'vta.max_seg_lenn' is not a key"):
        viz.main(["--run", vta_run, "--out_dir", str(tmp_path), "vta.max_seg_lenn=5"])
    with pytest.raises(SystemExit):  # a stray word is neither a flag nor key=value
        viz.main(["--run", vta_run, "stray"])


def test_eval_script_writes_json_with_truth_and_several_percentiles(vta_run, tmp_path):
    ev = load_script("vta_boundary_eval")
    out_json = tmp_path / "eval.json"
    ev.main(["--run", vta_run, "--episodes", "3", "--delta_percentile", "80", "95",
             "vta.boundary_force_scale=0.0", "--permutations", "20", "--out_json", str(out_json)])
    data = json.loads(out_json.read_text())  # strict JSON: NaN became null
    assert data["boundary_options"]["boundary_force_scale"] == 0.0
    assert data["boundary_options"]["max_seg_len"] == 37
    assert data["overrides"] == [{"key": "vta.boundary_force_scale", "saved": 3.5, "used": 0.0}]
    assert set(data["episodes"][0]) == {"delta_p80", "delta_p95", "true_change"}
    assert len(data["episodes"]) == 3 and data["episode_lengths"] == [12, 12, 12]
    truth = data["truth"]
    assert set(truth) >= {"model", "random", "periodic"} and truth["model"]["n_true"] > 0
    m = data["pooled"]["true_change"]
    assert m["n_steps"] == 33
    for key, value in m.items():
        if value is None:
            assert key in m["nan_reasons"]
        elif isinstance(value, float):
            assert not math.isnan(value)


def test_dreamer_variant_run_restores_its_options(tmp_path, capsys):
    """vta=dreamer (VTADynamics inside a small world model): the eval restores max_seg_len=3 and
    the forced boundaries obey it (posterior forcing with the trained force scale)."""
    run_dir = tmp_path / "tiny_dreamer"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train_vta", overrides=[
            "vta=dreamer", f"run_dir={run_dir}", "vta.max_seg_len=3", "vta.max_seg_num=100",
            "vta.boundary_force_scale=1000.0", "vta.cnn_depth=4", "vta.embed_dim=16",
            "vta.abs_belief_dim=16", "vta.obs_belief_dim=16", "vta.abs_stoch_dim=4", "vta.obs_stoch_dim=4",
            "vta.hidden=16", "vta.boundary_hidden=8", "train.updates=1", "train.eval_every=0",
            "data.batch_size=2", "data.seq_len=12", "data.heldout_sequences=2",
        ])
    train(cfg)
    ev = load_script("vta_boundary_eval")
    out = ev.main(["--run", str(run_dir), "--episodes", "2", "--permutations", "10",
                   "--out_json", str(tmp_path / "e.json")])
    assert out["boundary_options"]["max_seg_len"] == 3
    assert out["kind"] == "vta_run"
    # forced READ once seg_len reaches 3: no segment in the restored model's traces is longer
    from imwm.analysis.report import collect_traces

    traces = collect_traces(restore_run(str(run_dir), printer=None), episodes=2)
    assert max(t["seg_len"].max() for t in traces) <= 3


@pytest.fixture(scope="module")
def atari_vta_run(tmp_path_factory):
    """A run folder as scripts/train.py writes it (resolved config.yaml + checkpoints/latest.pt
    with ``agent``) for a tiny, untrained dynamics=vta agent on PrivateEye, max_seg_len=4."""
    import yaml

    from imwm.envs import make_env
    from imwm.training.build_model import build_agent
    from imwm.training.checkpoint import save_checkpoint
    from imwm.training.config import to_plain

    run_dir = tmp_path_factory.mktemp("runs") / "atari_vta"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            "env=atari", "env.task=private_eye", "dynamics=vta", "logger=none", f"run_dir={run_dir}",
            "model.deter=16", "model.hidden=16", "model.stoch=4", "model.classes=4", "model.cnn_depth=4",
            "model.mlp_units=16", "model.mlp_layers=1", "dynamics.boundary_hidden=8",
            "dynamics.max_seg_len=4", "dynamics.max_seg_num=1000", "dynamics.boundary_force_scale=1000.0",
        ])
    plain = to_plain(cfg)
    env = make_env(**plain["env"], num_envs=1, seed=0)
    obs_shape, action_dim = tuple(env.observation_spec["observation"].shape[1:]), int(env.action_spec.shape[-1])
    env.close()
    agent = build_agent(plain, obs_shape=obs_shape, action_dim=action_dim)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(plain))
    save_checkpoint(run_dir / "checkpoints" / "latest.pt", {"agent": agent.state_dict(), "config": plain})
    return str(run_dir)


def test_atari_vta_run_eval_on_fresh_episodes(atari_vta_run, tmp_path, capsys):
    ev = load_script("vta_boundary_eval")
    out = ev.main(["--run", atari_vta_run, "--episodes", "2", "--max_steps", "40", "--permutations", "20",
                   "--delta_percentile", "90", "99", "--out_json", str(tmp_path / "e.json"),
                   "dynamics.boundary_force_scale=500.0"])
    assert out["kind"] == "agent"
    assert out["boundary_options"]["max_seg_len"] == 4
    assert out["boundary_options"]["boundary_force_scale"] == 500.0
    assert "override dynamics.boundary_force_scale: 1000.0 -> 500.0" in capsys.readouterr().out
    assert set(out["episodes"][0]) == {"delta_p90", "delta_p99", "reward", "score_change", "life_loss",
                                       "episode_end"}
    assert all(n <= 41 for n in out["episode_lengths"])
    # forcing at seg_len >= 4 with an overwhelming scale: at least one READ in every 4 steps
    m = out["pooled"]["delta_p90"]
    assert m["n_boundaries"] >= m["n_steps"] // 4


def test_eval_in_training_windows_traces_each_window_from_a_fresh_state(atari_vta_run, tmp_path):
    from imwm.analysis.rollout import boundary_trace, episode_windows, play_episode, rollout_agent
    from imwm.envs import make_env

    ev = load_script("vta_boundary_eval")
    whole = ev.main(["--run", atari_vta_run, "--episodes", "1", "--max_steps", "21", "--permutations", "5",
                     "--out_json", str(tmp_path / "whole.json")])
    parts = ev.main(["--run", atari_vta_run, "--episodes", "1", "--max_steps", "21", "--permutations", "5",
                     "--window", "8", "--out_json", str(tmp_path / "parts.json")])
    n = whole["episode_lengths"][0]
    assert parts["window"] == 8 and parts["episode_lengths"] == [8] * (n // 8) + ([n % 8] if n % 8 >= 2 else [])
    # every window's first step is left out, as an episode's is: 1 step per window fewer to score
    assert parts["pooled"]["reward"]["n_steps"] == n - len(parts["episode_lengths"]) - (1 if n % 8 == 1 else 0)
    # a window's trace is the trace of that slice alone: its state starts fresh
    restored = restore_run(atari_vta_run, [])
    env = make_env(**restored.config["env"], num_envs=1, seed=0)
    torch.manual_seed(0)
    episode = play_episode(env, policy=restored.model.policy(1), max_steps=21)
    env.close()
    second = episode_windows(episode, 8)[1]
    torch.manual_seed(0)
    traced = rollout_agent(restored.model, restored.config, episodes=1, max_steps=21, window=8)[1]
    assert np.allclose(traced["read_prob"], boundary_trace(restored.model.world_model, second)["read_prob"])
    with pytest.raises(ValueError, match="window must be an integer >= 2"):
        episode_windows(episode, 1)


def test_atari_vta_run_viz(atari_vta_run, tmp_path):
    viz = load_script("vta_boundary_viz")
    out = viz.main(["--run", atari_vta_run, "--length", "10", "--max_steps", "15", "--out_dir", str(tmp_path),
                    "--policy", "random"])
    assert out["trace"]["frames"].shape[1:] == (3, 64, 64) and out["trace"]["seg_len"].max() <= 4
    assert os.path.getsize(out["paths"]["boundary_grid"]) > 1000


def test_atari_vta_run_refuses_shape_changes_and_notes_resolved_interpolations(atari_vta_run, capsys):
    viz = load_script("vta_boundary_viz")
    with pytest.raises(ValueError, match="env.size=96 refused"):
        viz.main(["--run", atari_vta_run, "env.size=96"])
    with pytest.raises(ValueError, match=r"dynamics.abs_belief_dim=32 \(trained: 16\) change the model's shapes"):
        viz.main(["--run", atari_vta_run, "dynamics.abs_belief_dim=32"])
    # config.yaml is resolved: dynamics.*_belief_dim were ${model.deter}; an override of model.deter
    # alone cannot reach them, and the restore says so instead of staying silent
    restore_run(atari_vta_run, ["model.deter=24"])
    out = capsys.readouterr().out
    assert "override model.deter: 16 -> 24" in out
    assert "note: " in out and "dynamics.abs_belief_dim" in out and "override them too" in out


# --- the scripts on run folders as scripts/train.py writes them (real training, real scripts) ---

def _train(tmp_path_factory, name, *overrides):
    """``scripts/train.py preset=debug <overrides>``, shortened (120 env steps, no evaluation)."""
    run_dir = tmp_path_factory.mktemp("runs") / name
    done = run_script(run_dir.parent, "train.py", "preset=debug", *overrides, "threads=1", "logger=csv",
                      "total_env_steps=120", "eval_every=0", f"run_dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    return str(run_dir)


def _run(tmp_path, script, *args):
    """The script as a user runs it (a subprocess)."""
    return run_script(tmp_path, f"{script}.py", *args)


def _as_script(name, argv, capsys):
    """The script's ``__main__`` in this process (cheaper than a subprocess): ``main`` inside
    ``run_main`` with the script's ``USER_ERRORS``. Returns ``(exit status, stdout, stderr)``."""
    from imwm.errors import run_main

    module = load_script(name)
    capsys.readouterr()
    try:
        run_main(module.main, argv, also=module.USER_ERRORS)
        code = 0
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, out, err):
    """Failed as a user error: exit status 2 and exactly one ``imwm: error:`` line on stderr."""
    assert code == 2, (out[-2000:], err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imwm: error: "), err[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def intrinsic_run(tmp_path_factory):
    """``train.py preset=debug intrinsic=adaptive``: the agent's checkpoint holds intrinsic.* tensors."""
    return _train(tmp_path_factory, "intrinsic", "intrinsic=adaptive")


@pytest.fixture(scope="module")
def vector_vta_run(tmp_path_factory):
    """``train.py preset=debug dynamics=vta dynamics.boundary_grad=local``: a VTA agent on CartPole's
    vector observations whose boundary detector learns from the world-model loss's cost differences
    (the PrivateEye run above keeps the straight-through default)."""
    return _train(tmp_path_factory, "vector_vta", "dynamics=vta", "dynamics.boundary_grad=local")


def test_intrinsic_run_restores_with_its_intrinsic_reward(intrinsic_run, tmp_path, capsys):
    import torch

    from imwm.intrinsic import AdaptiveIntrinsicReward

    restored = restore_run(intrinsic_run, printer=None)
    assert isinstance(restored.model.intrinsic, AdaptiveIntrinsicReward)
    saved = torch.load(os.path.join(intrinsic_run, "checkpoints", "latest.pt"), weights_only=True)["agent"]
    own = restored.model.state_dict()
    names = [k for k in saved if k.startswith("intrinsic.")]
    assert names and all(torch.equal(own[k], saved[k]) for k in names)  # loaded, not just tolerated
    # an RSSM run has no boundary: both scripts answer in one line, and leave no folder behind
    out_dir = tmp_path / "viz"
    done = _run(tmp_path, "vta_boundary_viz", "--run", intrinsic_run, "--max_steps", "20", "--out_dir", str(out_dir))
    line = _one_line_error(done.returncode, done.stdout, done.stderr)
    assert "no boundary" in line and "dynamics=vta" in line and "intrinsic" not in line
    line = _one_line_error(*_as_script("vta_boundary_eval", ["--run", intrinsic_run, "--max_steps", "20",
                                                             "--out_json", str(tmp_path / "e.json")], capsys))
    assert "no boundary" in line and "dynamics=vta" in line
    assert not out_dir.exists() and not (tmp_path / "e.json").exists()


def test_intrinsic_reward_that_cannot_be_rebuilt_is_skipped_knowingly(intrinsic_run, tmp_path, capsys):
    import shutil

    import yaml

    import torch

    from imwm.training.checkpoint import save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(intrinsic_run, run, ignore=shutil.ignore_patterns("replay*", "csv"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["intrinsic"]["adaptive"]["retired_option"] = 1.0  # a key today's intrinsic checks reject
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    state["config"]["intrinsic"]["adaptive"]["retired_option"] = 1.0
    save_checkpoint(run / "checkpoints" / "latest.pt", state, keep_previous=False)
    restored = restore_run(str(run))
    assert restored.model.intrinsic is None
    out = capsys.readouterr().out
    assert "note: 13 intrinsic.* tensor(s) of the checkpoint not loaded" in out
    assert "intrinsic.adaptive.retired_option" in out


def test_vta_with_intrinsic_reward_eval(tmp_path):
    """dynamics=vta + intrinsic=disagreement (an ensemble: intrinsic.* parameters, not only
    statistics): the eval runs end to end on the restored agent."""
    import torch
    import yaml

    from imwm.envs import make_env
    from imwm.training.build_intrinsic import build_intrinsic
    from imwm.training.build_model import build_agent
    from imwm.training.checkpoint import save_checkpoint
    from imwm.training.config import to_plain

    run_dir = tmp_path / "vta_disagreement"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        plain = to_plain(compose("config", overrides=[
            "preset=debug", "dynamics=vta", "intrinsic=disagreement", "logger=none", f"run_dir={run_dir}"]))
    env = make_env(**plain["env"], num_envs=1, seed=0)
    obs_shape, action_dim = tuple(env.observation_spec["observation"].shape[1:]), int(env.action_spec.shape[-1])
    env.close()
    agent = build_agent(plain, obs_shape=obs_shape, action_dim=action_dim)
    agent.intrinsic = build_intrinsic(plain["intrinsic"], agent)
    with torch.no_grad():
        next(agent.intrinsic.parameters()).add_(0.5)  # a trained ensemble differs from a fresh one
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(plain))
    save_checkpoint(run_dir / "checkpoints" / "latest.pt", {"agent": agent.state_dict(), "config": plain})
    ev = load_script("vta_boundary_eval")
    out = ev.main(["--run", str(run_dir), "--episodes", "1", "--max_steps", "20", "--permutations", "5",
                   "--out_json", str(tmp_path / "e.json")])
    assert out["kind"] == "agent" and out["episode_lengths"][0] >= 2
    restored = restore_run(str(run_dir), printer=None)
    for name, value in agent.intrinsic.state_dict().items():
        assert (restored.model.intrinsic.state_dict()[name] == value).all(), name


def test_viz_on_a_vector_run_draws_what_it_can(vector_vta_run, tmp_path):
    out_dir = tmp_path / "viz"
    done = _run(tmp_path, "vta_boundary_viz", "--run", vector_vta_run, "--max_steps", "40", "--length", "20",
                "--out_dir", str(out_dir), "--wandb")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "logged 2 figure(s) to wandb run" in done.stdout  # WANDB_MODE=disabled in tests
    written = sorted(os.listdir(out_dir))
    assert written == ["boundary_internal.png", "boundary_timeline.png"]
    assert all(os.path.getsize(out_dir / name) > 5000 for name in written)
    skipped = [line for line in done.stdout.splitlines() if line.startswith("skipped ")]
    assert [line.split(":")[0] for line in skipped] == ["skipped boundary_grid.png", "skipped boundary_fired.png"]
    assert all("vectors of shape (4,), not images" in line for line in skipped)


def test_source_command_line_on_a_vector_run(vector_vta_run, tmp_path, capsys):
    """DreamerV3-style spelling: --logdir, --task / --configs, --vta_<option> <value>."""
    out_json = tmp_path / "eval.json"
    done = _run(tmp_path, "vta_boundary_eval", "--logdir", vector_vta_run, "--task", "cartpole",
                "--configs", "debug", "extra_preset", "--episodes", "2", "--max_steps", "30",
                "--delta_percentile", "90", "--permutations", "20", "--out_json", str(out_json),
                "--vta_max_seg_len", "50", "--vta_max_seg_num=200", "--vta_boundary_temp", "2.0",
                "--vta_boundary_force_scale", "0.0")
    assert done.returncode == 0, done.stderr[-3000:]
    notes = [line for line in done.stdout.splitlines() if line.startswith("note: --task")]
    assert len(notes) == 1 and "--configs debug extra_preset" in notes[0] and "saved config" in notes[0]
    assert "--vta_max_seg_len 50 -> override dynamics.max_seg_len=50" in done.stdout
    assert "override dynamics.max_seg_len: 10 -> 50" in done.stdout
    data = json.loads(out_json.read_text())
    assert data["overrides"] == [
        {"key": "dynamics.max_seg_len", "saved": 10, "used": 50},
        {"key": "dynamics.max_seg_num", "saved": 5, "used": 200},
        {"key": "dynamics.boundary_temp", "saved": 1.0, "used": 2.0},
        {"key": "dynamics.boundary_force_scale", "saved": 10.0, "used": 0.0},
    ]
    assert data["boundary_options"]["max_seg_len"] == 50 and data["boundary_options"]["boundary_force_scale"] == 0.0
    # a task that is not the run's, a --vta_ option the run does not have, a shape change: one line each
    line = _one_line_error(*_as_script("vta_boundary_eval", ["--logdir", vector_vta_run,
                                                             "--task", "atari_private_eye"], capsys))
    assert "--task atari_private_eye does not match this run" in line and "env.task=CartPole-v1" in line
    viz = ["--logdir", vector_vta_run, "--out_dir", str(tmp_path / "viz")]
    line = _one_line_error(*_as_script("vta_boundary_viz", viz + ["--vta_max_seg_lenn", "5"], capsys))
    assert "dynamics.max_seg_lenn is not a key" in line and "max_seg_len" in line
    line = _one_line_error(*_as_script("vta_boundary_viz", viz + ["--vta_obs_belief_dim", "64"], capsys))
    assert "dynamics.obs_belief_dim=64 (trained: 32) change the model's shapes and are refused" in line
    assert not (tmp_path / "viz").exists()


def test_source_flags_map_to_the_run_kinds_own_keys(vta_run, tmp_path, capsys):
    """A train_vta.py run keeps its options under vta.*: --vta_max_seg_len maps there; --task
    and --configs get the note (Moving Shapes has no env.task to contradict)."""
    viz = load_script("vta_boundary_viz")
    out = viz.main(["--logdir", vta_run, "--length", "6", "--out_dir", str(tmp_path), "--configs", "x",
                    "--vta_max_seg_len", "5", "--vta.boundary_force_scale=0.0"])
    assert out["boundary_options"]["max_seg_len"] == 5 and out["boundary_options"]["boundary_force_scale"] == 0.0
    printed = capsys.readouterr().out
    assert "--vta_max_seg_len 5 -> override vta.max_seg_len=5" in printed
    assert "note: --configs x: not needed" in printed and "Moving Shapes" in printed
    assert set(out["paths"]) == {"boundary_grid", "boundary_internal", "boundary_fired"} and out["skipped"] == {}


def _copy_run(run, dest):
    import shutil

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("replay*", "csv", "boundary_viz"))
    return dest


def test_resumed_run_with_other_values_restores_the_checkpoints_config(vector_vta_run, tmp_path, capsys):
    """config.yaml keeps the first start's config; a resume with other values (resume=true)
    trains on, and the checkpoint holds the config it was trained with: that one is restored."""
    import torch

    from imwm.training.checkpoint import save_checkpoint

    run = _copy_run(vector_vta_run, tmp_path / "run")
    path = run / "checkpoints" / "latest.pt"
    state = torch.load(path, weights_only=True)
    state["config"]["dynamics"]["max_seg_len"] = 50
    state["config"]["total_env_steps"] = 400
    save_checkpoint(path, state, keep_previous=False)
    restored = restore_run(str(run), ["dynamics.boundary_force_scale=0.0"])
    assert restored.model.world_model.dynamics.boundary_options()["max_seg_len"] == 50
    assert restored.config["dynamics"]["boundary_force_scale"] == 0.0
    out = capsys.readouterr().out
    assert "resumed with other values than config.yaml's at dynamics.max_seg_len, total_env_steps" in out


def test_unreadable_latest_checkpoint_falls_back_to_previous(vector_vta_run, tmp_path, capsys):
    run = _copy_run(vector_vta_run, tmp_path / "run")
    assert (run / "checkpoints" / "previous.pt").is_file()
    (run / "checkpoints" / "latest.pt").write_bytes(b"not a checkpoint")
    restore_run(str(run))
    out = capsys.readouterr().out
    assert "latest.pt: unreadable checkpoint" in out and "previous.pt (the generation before)" in out
    (run / "checkpoints" / "previous.pt").write_bytes(b"")
    line = _one_line_error(*_as_script("vta_boundary_eval", ["--run", str(run)], capsys))
    assert "previous.pt: empty file" in line
