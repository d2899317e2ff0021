"""The viz / eval scripts on a real (tiny) train_vta run folder: the config restore contract."""

import importlib.util
import json
import math
import os

import pytest
from hydra import compose, initialize_config_dir

from imwm.analysis.restore import restore_run
from imwm.training.vta_run import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vta_run(tmp_path_factory):
    """A tiny original-VTA run trained with NON-default max_seg_len=37 and force scale 3.5."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny_vta"
    with initialize_config_dir(config_dir=os.path.join(ROOT, "configs"), version_base="1.3"):
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
    viz = _script("vta_boundary_viz")
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
    viz = _script("vta_boundary_viz")
    with pytest.raises(ValueError, match=r"vta.belief_dim=32 \(trained: 16\) change the model's shapes"):
        viz.main(["--run", vta_run, "--out_dir", str(tmp_path), "vta.belief_dim=32"])
    with pytest.raises(ValueError, match="'vta.max_seg_lenn' is not a key"):
        viz.main(["--run", vta_run, "--out_dir", str(tmp_path), "vta.max_seg_lenn=5"])
    with pytest.raises(SystemExit):  # a stray word is neither a flag nor key=value
        viz.main(["--run", vta_run, "stray"])


def test_eval_script_writes_json_with_truth_and_several_percentiles(vta_run, tmp_path):
    ev = _script("vta_boundary_eval")
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
    with initialize_config_dir(config_dir=os.path.join(ROOT, "configs"), version_base="1.3"):
        cfg = compose("train_vta", overrides=[
            "vta=dreamer", f"run_dir={run_dir}", "vta.max_seg_len=3", "vta.max_seg_num=100",
            "vta.boundary_force_scale=1000.0", "vta.cnn_depth=4", "vta.embed_dim=16",
            "vta.abs_belief_dim=16", "vta.obs_belief_dim=16", "vta.abs_stoch_dim=4", "vta.obs_stoch_dim=4",
            "vta.hidden=16", "vta.boundary_hidden=8", "train.updates=1", "train.eval_every=0",
            "data.batch_size=2", "data.seq_len=12", "data.heldout_sequences=2",
        ])
    train(cfg)
    ev = _script("vta_boundary_eval")
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
    with initialize_config_dir(config_dir=os.path.join(ROOT, "configs"), version_base="1.3"):
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
    ev = _script("vta_boundary_eval")
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


def test_atari_vta_run_viz(atari_vta_run, tmp_path):
    viz = _script("vta_boundary_viz")
    out = viz.main(["--run", atari_vta_run, "--length", "10", "--max_steps", "15", "--out_dir", str(tmp_path),
                    "--policy", "random"])
    assert out["trace"]["frames"].shape[1:] == (3, 64, 64) and out["trace"]["seg_len"].max() <= 4
    assert os.path.getsize(out["paths"]["boundary_grid"]) > 1000


def test_atari_vta_run_refuses_shape_changes_and_notes_resolved_interpolations(atari_vta_run, capsys):
    viz = _script("vta_boundary_viz")
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
