"""scripts/train.py through the real Hydra entry point: a debug run, then a resume that continues.

These runs name their folder (``run_dir=``), so ``resume=auto`` (the default) decides whether a start
continues it; tests/test_sweeps.py covers the default, hashed run folders."""
import csv

import torch

from script_runner import run_script  # noqa: E402  (tests dir is on sys.path)


def train(tmp_path, *overrides, timeout=300):
    return run_script(tmp_path, "train.py", "preset=debug", "logger=csv", f"run_dir={tmp_path / 'run'}",
                      *overrides, timeout=timeout)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_debug_run_then_resume_continues_the_step_counter(tmp_path):
    first = train(tmp_path, "total_env_steps=200")
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    ckpt_path = run / "checkpoints" / "latest.pt"
    for path in (run / "config.yaml", run / "metrics.csv", ckpt_path, run / "replay"):
        assert path.exists(), path
    assert f"checkpoint: {ckpt_path}" in first.stdout
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["counters"]["env_steps"] == 200
    updates_first = ckpt["counters"]["updates"]
    # prefill 100 then 0.5 updates per env step for the remaining 100 steps.
    assert updates_first == 50
    assert ckpt["config"]["model"]["deter"] == 32
    assert not list(run.rglob("*.tmp"))
    evals = [r for r in rows(run / "metrics.csv") if r.get("eval/return")]
    assert evals and float(evals[-1]["eval/return"]) > 0

    second = train(tmp_path, "total_env_steps=300")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed" in second.stdout and "at env step 200" in second.stdout
    assert "resuming with changed config: total_env_steps: 200 -> 300" in second.stdout
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["counters"]["env_steps"] == 300
    assert ckpt["counters"]["updates"] == updates_first + 50
    steps = [int(r["env_step"]) for r in rows(run / "metrics.csv")]
    assert steps == sorted(steps) and steps[-1] == 300
    # The replay kept the first run's records: ids continue, nothing was lost.
    assert ckpt["layout"]["next_traj_id"] > 0

    # A model-shape change is refused, naming the key, whatever resume says.
    third = train(tmp_path, "total_env_steps=400", "model.deter=64", "resume=true")
    assert third.returncode == 2
    assert "model.deter: saved 32, now 64" in third.stderr

    # resume=auto (the default) refuses another hyperparameter in the same folder, in one line ...
    changed = train(tmp_path, "total_env_steps=300", "agent.entropy_coef=1e-3")
    assert changed.returncode == 2 and changed.stderr.count("\n") == 1, changed.stderr
    assert changed.stderr.startswith("imwm: error: refusing to resume") and "resume=auto" in changed.stderr
    assert "agent.entropy_coef: 0.0003 -> 0.001" in changed.stderr and "resume=true" in changed.stderr
    # ... resume=true continues it anyway (nothing left to train here) and records the change ...
    forced = train(tmp_path, "total_env_steps=300", "agent.entropy_coef=1e-3", "resume=true")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "resumed" in forced.stdout and "nothing to train" in forced.stdout
    # its summary reports the run's last evaluation, kept in the checkpoint (not NaN)
    last = float([r for r in rows(run / "metrics.csv") if r.get("eval/return")][-1]["eval/return"])
    assert f"last eval return: {last:.1f}" in forced.stdout
    record = (run / "config.changes-2.yaml").read_text()
    assert "agent.entropy_coef: 0.0003 -> 0.001" in record
    # ... and resume=false refuses any checkpoint.
    refused = train(tmp_path, "resume=false")
    assert refused.returncode == 2 and "already holds a checkpoint and resume=false" in refused.stderr


def test_bad_config_fails_fast_naming_the_key(tmp_path):
    # (An unknown group option such as env=atary is Hydra's error: test_training_config.py.)
    out = train(tmp_path, "replay.batch_size=-1")
    assert out.returncode != 0 and "replay.batch_size: must be an integer >= 1" in out.stderr
    assert not list(tmp_path.iterdir())  # no run folder, no Hydra log or outputs/ folder


def test_lexa_style_runs_on_a_vector_env(tmp_path):
    """intrinsic=lexa_style on the one-hot SparseChain: the vector decoder learns a std and the
    reward reads it (no agent.learned_std needed: lexa_style switches it on)."""
    out = train(tmp_path, "intrinsic=lexa_style", "env.name=gym", "env.task=imwm/SparseChain-v0",
                "total_env_steps=150", "prefill=100")
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["config"]["intrinsic"]["typ"] == "lexa_style"
    decoder = {k: v for k, v in ckpt["agent"].items() if k.startswith("world_model.decoder.")}
    last_bias = [v for k, v in decoder.items() if k.endswith(".bias")][-1]
    assert last_bias.shape == (2 * 20,)  # mean and std for each of the 20 one-hot dims
    logged = [r for r in rows(tmp_path / "run" / "metrics.csv") if r.get("intrinsic/visual")]
    assert logged, "no update logged the intrinsic reward"
    for r in logged:
        assert float(r["intrinsic/visual"]) > 0.1  # mean std is above min_std = 0.1
        assert float(r["intrinsic/baseline"]) > 0.1  # the config centres the bonus: its running mean
        assert abs(float(r["intrinsic_reward"])) < float(r["intrinsic/baseline"])  # centred: near 0 on average
        assert float(r["imagined_total_reward"]) != float(r["imagined_reward"])


def test_resume_restores_the_intrinsic_state_and_ensemble_optimiser(tmp_path):
    """intrinsic=disagreement: the ensemble, its Adam moments and the centring baseline survive a resume."""
    first = train(tmp_path, "intrinsic=disagreement", "total_env_steps=160")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt_path = tmp_path / "run" / "checkpoints" / "latest.pt"
    one = torch.load(ckpt_path, weights_only=True)
    adam_steps = one["intrinsic_optimizer"]["state"][0]["step"].item()
    assert adam_steps == one["counters"]["updates"] > 0  # one ensemble step per update
    second = train(tmp_path, "intrinsic=disagreement", "total_env_steps=200")
    assert second.returncode == 0, second.stderr[-3000:]
    two = torch.load(ckpt_path, weights_only=True)
    # resumed, not restarted: the Adam step count continues from the first run's
    assert two["intrinsic_optimizer"]["state"][0]["step"].item() == two["counters"]["updates"] > adam_steps
    assert two["agent"]["intrinsic.baseline"] != 0
