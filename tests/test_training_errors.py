"""One clean line per user error: ``imwm: error: <full.key>: <what> (got <value>)``, exit status 2.

Most bad inputs go in-process through exactly what the scripts run (``imwm.errors.user_errors``
around ``imwm.training.loop.run`` / ``imwm.training.vta_run.train``); a few go through the real
entry points as subprocesses, and ``IMWM_DEBUG=1`` must bring the traceback back.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from imwm.configs import CONFIG_DIR
from imwm.errors import (ConfigError, UserError, check_integer, config_keys, format_user_error, is_integer, run_main,
                         user_errors)
from script_runner import ROOT  # noqa: E402  (tests dir is on sys.path)

CONFIGS = str(CONFIG_DIR)


def _compose(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def _answer(capsys, fn, *args) -> str:
    """Runs ``fn(*args)`` the way the scripts do; returns the one stderr line (checked)."""
    with pytest.raises(SystemExit) as exit_info:
        with user_errors():
            fn(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("imwm: error: ")
    return lines[0]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("IMWM_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)


@pytest.fixture
def no_cuda_build(monkeypatch):
    """A CPU-only torch (whatever this machine has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


# (overrides after preset=debug logger=csv, the full key the line must name, a phrase it must hold)
TRAIN_CASES = [
    (["replay.batch_size=-1"], "replay.batch_size", "must be an integer >= 1 (got -1)"),
    (["agent.gamma=1.5"], "agent.gamma", "must be a number in [0, 1] (got 1.5)"),
    (["+model.foo=1"], "model.foo", "unknown config key"),
    (["+agent.foo=1"], "agent.foo", "unknown config key"),
    (["device=banana"], "device", "must be cpu, cuda, cuda:N or mps (got 'banana')"),
    (["env.task=pong"], "env.task", "ignored by env.name=cartpole"),
    (["env.frame_skip=4"], "env.frame_skip", "ignored by env.name=cartpole"),
    (["env=atari", "env.task=pongg"], "env.task", "unknown Atari task 'pongg'"),
    (["env.name=gym", "env.task=NoSuchEnv-v0"], "env.task", "not a registered gymnasium id"),
    (["replay=curious", "replay.curious.beta=2"], "replay.curious.beta", "(got 2)"),
    (["replay=curious", "replay.curious.beta=0"], "replay.curious.beta", "must be in (0, 1] (got 0)"),
    (["replay=curious", "replay.curious.alpha=-1"], "replay.curious.alpha", "must be a finite number >= 0"),
    (["replay=curious", "+replay.curious.gamma=1"], "replay.curious.gamma", "unknown config key"),
    (["replay=curious", "replay.fracs.uniform=0.5"], "replay.fracs", "must sum to 1"),
    (["replay=explore_exploit", "replay.trend.slow=0.5"], "replay.trend.slow", "must be <= replay.trend.fast"),
    (["num_envs=2", "replay.capacity=10"], "replay.capacity", "records per ring"),
    (["dynamics=vta", "dynamics.boundary_temp=0"], "dynamics.boundary_temp", "must be a finite number > 0"),
    (["dynamics=vta", "dynamics.boundary_force_schedule=cosine"], "dynamics.boundary_force_schedule",
     "(got 'cosine')"),
    (["dynamics=vta", "dynamics.boundary_scale=1.0"], "dynamics.boundary_rate", "when boundary_scale > 0"),
    (["dynamics.blocks=7"], "dynamics.blocks", "must divide dynamics.deter (32)"),
    (["intrinsic=adaptive", "intrinsic.adaptive.clip_min=50"], "intrinsic.adaptive.clip_min", "must be <="),
    (["dormant.enable=false", "dormant.redo.enable=true"], "dormant.redo.enable", "needs dormant.enable=true"),
    (["num_envs=3"], "frames_per_batch", "must be a multiple of num_envs (3) (got 20)"),
    (["run_name=${env.nope}"], "run_name", "env.nope"),
]


@pytest.mark.parametrize("overrides, key, phrase", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_config_errors_are_one_line_naming_the_key(tmp_path, capsys, overrides, key, phrase):
    from imwm.training.loop import run

    cfg = _compose("config", ["preset=debug", "logger=csv", f"run_dir={tmp_path / 'run'}", *overrides])
    line = _answer(capsys, run, cfg)
    assert line.startswith(f"imwm: error: {key}: ") and phrase in line, line
    assert not (tmp_path / "run").exists()  # refused before anything was built or written


def test_cuda_on_a_cpu_only_torch_says_how_to_get_cuda(tmp_path, capsys, no_cuda_build):
    from imwm.training.loop import run

    cfg = _compose("config", ["preset=debug", "logger=csv", f"run_dir={tmp_path / 'run'}", "device=cuda"])
    line = _answer(capsys, run, cfg)
    version = torch.__version__.split("+")[0]
    assert line.startswith("imwm: error: device: this torch build has no CUDA")
    assert f"install a CUDA build of torch=={version}" in line and "use device=cpu" in line
    assert line.endswith("(got 'cuda')")


def test_cuda_index_beyond_the_device_count(tmp_path, capsys, one_gpu):
    from imwm.training.loop import run

    cfg = _compose("config", ["preset=debug", "logger=csv", f"run_dir={tmp_path / 'run'}", "device=cuda:3"])
    line = _answer(capsys, run, cfg)
    assert line == "imwm: error: device: no such CUDA device: 1 visible (cuda:0 .. cuda:0) (got 'cuda:3')"


VTA_CASES = [
    (["vta.boundary_temp=0"], "vta.boundary_temp", "must be a finite number > 0"),
    (["vta=dreamer", "vta.boundary_temp=-1.0"], "vta.boundary_temp", "(got -1.0)"),
    (["vta=dreamer", "vta.boundary_diff=maybe"], "vta.boundary_diff", "must be true or false (got 'maybe')"),
    (["vta.boundary_causal=1"], "vta.boundary_causal", "must be true or false (got 1)"),
    (["vta.obs_feedback=no"], "vta.obs_feedback", "must be true or false (got 'no')"),
    (["vta.boundary_force_schedule=cosine"], "vta.boundary_force_schedule", "must be one of"),
    (["vta.boundary_force_schedule=linear"], "vta.boundary_force_decay_updates", "must be >= 1"),
    (["+vta.foo=1"], "vta.foo", "unknown config key"),
    (["vta.variant=hrl"], "vta.variant", "(got 'hrl')"),
    (["vta.max_seg_len=0"], "vta.max_seg_len", "must be an integer >= 1 (got 0)"),
    (["train.updates=0"], "train.updates", "must be an integer >= 1 (got 0)"),
    (["+train.foo=1"], "train.foo", "unknown config key"),
    (["data.max_seg_len=2"], "data.max_seg_len", "must be >= data.min_seg_len (4)"),
    (["data.image_size=40"], "vta.image_size", "multiple of 16"),
]


@pytest.mark.parametrize("overrides, key, phrase", VTA_CASES, ids=[" ".join(c[0]) for c in VTA_CASES])
def test_train_vta_config_errors_are_one_line_naming_the_key(tmp_path, capsys, overrides, key, phrase):
    from imwm.training.vta_run import train

    cfg = _compose("train_vta", [f"run_dir={tmp_path / 'run'}", *overrides])
    line = _answer(capsys, train, cfg)
    assert line.startswith(f"imwm: error: {key}: ") and phrase in line, line
    assert not (tmp_path / "run").exists()


def test_analysis_script_reports_a_missing_run_folder(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import vta_boundary_eval
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    with pytest.raises(SystemExit) as exit_info:
        run_main(vta_boundary_eval.main, ["--run", str(tmp_path / "nope")], also=(ValueError, FileNotFoundError))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imwm: error: run folder") and "does not exist" in err and "\n" not in err


@pytest.mark.parametrize("value", [True, False, 2.0, 1.5, "3", None, float("nan"), float("inf"), torch.tensor(3)])
def test_check_integer_refuses_what_is_not_an_integer(value):
    with pytest.raises(ValueError, match=r"^horizon must be an integer >= 0, got "):
        check_integer("horizon", value, 0)
    assert not is_integer(value)


def test_check_integer_accepts_integers_at_or_above_the_minimum():
    import numpy as np

    assert [check_integer("n", v, 2) for v in (2, 7, np.int64(3), np.uint8(2))] == [2, 7, 3, 2]
    assert all(type(check_integer("n", v, 0)) is int for v in (0, np.int32(5)))
    with pytest.raises(ValueError, match="n must be an integer >= 2, got 1"):
        check_integer("n", 1, 2)
    assert is_integer(-4) and not is_integer(-4, 0)
    with pytest.raises(ConfigError, match=r"^agent\.horizon: must be an integer >= 1 \(got 0\)$"):
        with config_keys("agent", given={"horizon": 0}):
            check_integer("horizon", 0)


def test_config_error_format_and_helpers(monkeypatch, capsys):
    err = ConfigError("replay.curious.beta", "must be in (0, 1]", 2.0)
    assert str(err) == "replay.curious.beta: must be in (0, 1] (got 2.0)"
    assert (err.key, err.what, err.got) == ("replay.curious.beta", "must be in (0, 1]", 2.0)
    assert isinstance(err, ValueError) and isinstance(err, UserError)
    assert str(ConfigError("vta", "missing config section")) == "vta: missing config section"
    assert str(ConfigError("x", "must be set", None)) == "x: must be set (got None)"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.got == 2.0
    assert str(err.under("a")) == "a.replay.curious.beta: must be in (0, 1] (got 2.0)"
    # bare sampler / model messages get the full key
    with pytest.raises(ConfigError, match=r"^replay.curious.beta: must be in \(0, 1\] \(got 2.0\)$"):
        with config_keys("replay.curious", {"beta": 2.0}):
            raise ValueError("beta must be in (0, 1], got 2.0")
    with pytest.raises(ValueError, match="^something else$"):  # not a config message: unchanged
        with config_keys("replay.curious", {"beta": 2.0}):
            raise ValueError("something else")
    assert format_user_error(UserError("two\n  lines")) == "imwm: error: two; lines"
    monkeypatch.setenv("IMWM_DEBUG", "1")
    # user_errors sets HYDRA_FULL_ERROR for the dying process; keep it from outliving this test
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(ConfigError):  # debug: the exception itself, for the traceback
        with user_errors():
            raise err
    assert capsys.readouterr().err == ""


# -- the real entry points, as a user runs them --------------------------------------------------
def _script(tmp_path: Path, script: str, *args: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("IMWM_DEBUG", "HYDRA_FULL_ERROR")}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled", IMWM_PROGRESS="0")
    if debug:
        env["IMWM_DEBUG"] = "1"
    cmd = [sys.executable, str(ROOT / "scripts" / script), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def _one_line(proc: subprocess.CompletedProcess, key: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"imwm: error: {key}: "), proc.stderr[-3000:]
    return last


# Each subprocess costs ~5 s (importing torch): one runs by default, the others with `-m slow`.
@pytest.mark.parametrize("script, args, key", [
    ("train.py", ["device=banana"], "device"),
    pytest.param("train.py", ["replay=curious", "replay.curious.alpha=-1"], "replay.curious.alpha",
                 marks=pytest.mark.slow),
    pytest.param("train_vta.py", ["vta.boundary_temp=0"], "vta.boundary_temp", marks=pytest.mark.slow),
])
def test_entry_points_print_one_line_and_exit_2(tmp_path, script, args, key):
    base = ["preset=debug", "logger=csv"] if script == "train.py" else []
    _one_line(_script(tmp_path, script, *base, f"run_dir={tmp_path / 'run'}", *args), key)
    assert not (tmp_path / "run" / "config.yaml").exists()  # (Hydra itself makes the folder and its log)


@pytest.mark.slow
def test_imwm_debug_brings_the_traceback_back(tmp_path):
    proc = _script(tmp_path, "train.py", "preset=debug", "logger=csv", f"run_dir={tmp_path / 'run'}",
                   "env.task=pong", debug=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError: env.task: is ignored by env.name=cartpole" in proc.stderr
    assert "imwm: error:" not in proc.stderr
