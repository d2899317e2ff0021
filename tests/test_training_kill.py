"""scripts/train.py under fire: planted pickles, an injected NaN, and (slow) kill -9 at random moments.

Every resume must succeed from an intact checkpoint/replay pair whose replay holds every record up
to that checkpoint (a run of one env writes ``env_steps + episodes started`` records).
"""
import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from imwm.configs import CONFIG_DIR
from imwm.training.build_replay import build_replay
from imwm.training.checkpoint import RunCheckpoint, nonfinite_entries
from script_runner import ROOT, run_script  # noqa: E402  (tests dir is on sys.path)
from test_training_faults import MARKER_NAME, plant_pickles


def train_args(run_dir, *overrides):
    return ["preset=debug", "logger=csv", "threads=1", f"run_dir={run_dir}", *overrides]


def restored(run_dir, replay_overrides: dict):
    """The pair a resume would use, loaded into a fresh buffer."""
    store = RunCheckpoint(run_dir)
    path, saved = store.restore(build_replay(**{**saved_replay(store), **replay_overrides}, seed=0))
    return path, saved


def saved_replay(store) -> dict:
    for path in (store.latest, store.previous):
        if path.exists():
            try:
                return dict(torch.load(path, weights_only=True)["config"]["replay"])
            except Exception:  # noqa: BLE001 - the other file is tried
                continue
    raise AssertionError("no readable checkpoint")


def check_replay_complete(run_dir) -> int:
    store = RunCheckpoint(run_dir)
    replay = saved_replay(store)
    rb = build_replay(**replay, seed=0)
    _, saved = store.restore(rb)
    steps = saved["counters"]["env_steps"]
    assert len(rb) == steps + saved["layout"]["next_traj_id"], "replay lost records"
    assert not nonfinite_entries({k: v for k, v in saved.items() if k != "config"})
    return steps


def test_pickles_planted_in_a_run_folder_never_run_on_resume(tmp_path):
    run_dir = tmp_path / "run"
    first = run_script(tmp_path, "train.py", *train_args(run_dir, "total_env_steps=160"))
    assert first.returncode == 0, first.stderr[-3000:]
    marker = tmp_path / MARKER_NAME
    planted = plant_pickles(run_dir, marker)
    second = run_script(tmp_path, "train.py", *train_args(run_dir, "total_env_steps=200"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "at env step 160" in second.stdout
    assert not marker.exists(), f"code from one of {len(planted)} planted files ran"
    print(f"\n[planted] {len(planted)} pickles in {len({p.parent for p in planted})} folders, none ran")


def test_an_injected_nan_is_skipped_and_never_reaches_a_checkpoint(tmp_path):
    """In-process run whose world-model loss is NaN for two updates: both are skipped, counted in
    metrics.csv, and no checkpoint holds a non-finite value."""
    from hydra import compose, initialize_config_dir

    from imwm.objectives.world_model import WorldModelLoss
    from imwm.training.loop import run

    real_forward = WorldModelLoss.forward
    calls = {"n": 0}

    def poisoned(self, batch):
        out = real_forward(self, batch)
        calls["n"] += 1
        if calls["n"] in (5, 6):
            out.set("loss_image", out.get("loss_image") * float("nan"))
        return out

    run_dir = tmp_path / "run"
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=train_args(run_dir, "total_env_steps=160",
                                                     "eval_every=0", "checkpoint_every=40"))
    WorldModelLoss.forward = poisoned
    try:
        with pytest.warns(UserWarning, match="update skipped"):
            summary = run(cfg)
    finally:
        WorldModelLoss.forward = real_forward
    assert calls["n"] > 6 and summary["updates"] == 30
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    counts = [float(r["train/nonfinite_updates"]) for r in rows if r.get("train/nonfinite_updates")]
    assert counts[-1] == 2
    for name in ("latest.pt", "previous.pt"):
        saved = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert not nonfinite_entries({k: v for k, v in saved.items() if k != "config"})


def _kill_loop(tmp_path, replay: str, kills: int, seed: int):
    """Starts the same run again and again, killing it (SIGKILL, whole process group) after a
    random 3-12 s, until ``kills`` kills hit a run folder that already had a checkpoint; then
    lets it finish. After every kill the pair a resume would use is checked."""
    rng = random.Random(seed)
    run_dir = tmp_path / f"run-{replay}"
    args = train_args(run_dir, f"replay={replay}", "checkpoint_every=50", "log_every=20",
                      "eval_every=0")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "IMWM_PROGRESS": "0"}
    tried, lost = 0, []
    while len(lost) < kills:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args,
                                 "total_env_steps=100000"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        time.sleep(rng.uniform(3.0, 12.0))
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        tried += 1
        if not RunCheckpoint(run_dir).exists():
            continue  # killed before the first checkpoint: the next start is a fresh one
        logged = 0
        if (run_dir / "metrics.csv").exists():
            with open(run_dir / "metrics.csv", newline="") as f:
                logged = max([int(r["env_step"]) for r in csv.DictReader(f)] or [0])
        steps = check_replay_complete(run_dir)
        lost.append(max(0, logged - steps))
    resumed_at = check_replay_complete(run_dir)
    total = resumed_at + 100
    final = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args,
                            f"total_env_steps={total}"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"at env step {resumed_at}" in final.stdout
    assert check_replay_complete(run_dir) == total
    return tried, lost


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("replay", ["uniform", "curious"])
def test_kill_9_at_random_moments_always_resumes_with_the_whole_replay(tmp_path, replay):
    tried, lost = _kill_loop(tmp_path, replay, kills=20, seed=0 if replay == "uniform" else 1)
    print(f"\n[kill loop] replay={replay}: {tried} kills, {len(lost)} after the first checkpoint, "
          f"all {len(lost)} resumed with the whole replay; env steps logged but lost per kill: "
          f"max {max(lost)}, mean {sum(lost) / len(lost):.1f} (checkpoint_every=50)")
