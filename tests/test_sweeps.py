"""Run identity and sweeps through the real entry point (scripts/train.py, Hydra ``-m``).

Every distinct configuration gets its own run folder (a readable name plus a hash of the keys that
define the run, ``imwm.training.identity``); a sweep never collides, leaves nothing empty and no
``multirun/`` folder, and a rerun of one job resumes it. Each debug job costs ~10 s of CPU: the
joblib / submitit launchers and the changed-hyperparameter run are ``slow``.
"""
import csv
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from imwm.configs import CONFIG_DIR
from imwm.training.identity import EXCLUDED_KEYS, config_hash, identity_changes
from script_runner import run_script  # noqa: E402  (tests dir is on sys.path)

CONFIGS = str(CONFIG_DIR)
BASE = ("preset=debug", "logger=csv", "threads=1", "total_env_steps=150")


def composed(*overrides) -> dict:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)),
                                      resolve=True)


def train(tmp_path, *args, timeout=600):
    return run_script(tmp_path, "train.py", *args, timeout=timeout)


def run_folders(launch: Path) -> dict[str, Path]:
    """Run folders under ``launch/runs`` (those with a config.yaml) by their seed suffix ``s<k>``."""
    return {p.name.split("-")[-2]: p for p in sorted((launch / "runs").iterdir())
            if (p / "config.yaml").exists()}


def assert_nothing_empty_or_stray(launch: Path) -> None:
    """Only ``runs/`` in the launch dir (no multirun/, outputs/, .hydra, *.log) and no empty folder."""
    assert sorted(p.name for p in launch.iterdir()) == ["runs"]
    empty = [str(p) for p in launch.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert not empty, empty
    assert not list(launch.rglob("*.log")) and not list(launch.rglob(".hydra"))


def sweep_jobs(launch: Path) -> list[list[str]]:
    """Rows of the sweep record's jobs.tsv: num, status, run folder, overrides."""
    (record,) = (launch / "runs" / "sweeps").iterdir()
    assert (record / "multirun.yaml").exists()
    with open(record / "jobs.tsv") as f:
        return sorted(csv.reader(f, delimiter="\t"))


# ---------------------------------------------------------------------------- identity (in-process)
def test_the_hash_is_a_fixed_function_of_the_run_defining_keys():
    """sha256 of canonical JSON: the same value in every process, on every machine (a golden value),
    blind to key order, float spelling and the excluded keys."""
    cfg = {"seed": 0, "agent": {"entropy_coef": 3e-4, "compile": False},
           "replay": {"typ": "uniform", "capacity": 10}, "total_env_steps": 100, "logger": {"backend": "csv"}}
    assert config_hash(cfg) == "3562f1a6"
    same = {"replay": {"capacity": 10, "typ": "uniform"}, "logger": {"backend": "wandb"}, "seed": 0,
            "agent": {"compile": True, "entropy_coef": 0.0003}, "total_env_steps": 5, "device": "cuda"}
    assert config_hash(same) == "3562f1a6"
    assert config_hash({**cfg, "seed": 1}) != "3562f1a6"
    assert identity_changes(cfg, same) == []
    assert identity_changes(cfg, {**cfg, "seed": 1}) == ["seed: 0 -> 1"]


def _with(plain: dict, key: str, value) -> dict:
    cfg = OmegaConf.create(plain)
    OmegaConf.update(cfg, key, value, force_add=True)
    return OmegaConf.to_container(cfg)


def test_which_keys_make_a_new_run_folder():
    base = composed("preset=debug")
    name = base["run_name"]
    assert name.startswith("cartpole-CartPole-v1-rssm-s0-") and len(name.rsplit("-", 1)[1]) == 8
    assert base["run_dir"] == f"runs/{name}"
    assert name.endswith(config_hash(base))  # the resolver hashes the config validation sees
    # through Hydra: a hyperparameter is a new folder, a budget is not, explicit names are kept
    assert composed("preset=debug", "agent.entropy_coef=1e-3")["run_dir"] != base["run_dir"]
    assert composed("preset=debug", "total_env_steps=1000", "eval_every=7")["run_dir"] == base["run_dir"]
    assert composed("preset=debug", "run_name=mine")["run_dir"] == "runs/mine"
    assert composed("preset=debug", "run_dir=/tmp/x")["run_dir"] == "/tmp/x"
    # every other key, on the plain config (what the resolver hashes)
    digest = config_hash(base)
    for key, value in [("seed", 1), ("replay.batch_size", 8), ("model.deter", 64), ("prefill", 50),
                       ("train_ratio", 8), ("num_envs", 2), ("intrinsic.enable", True),
                       ("dormant.enable", True), ("env.kwargs", {"length": 3})]:
        assert config_hash(_with(base, key, value)) != digest, key
    for key, value in [("total_env_steps", 10**6), ("resume", False), ("logger.backend", "wandb"),
                       ("threads", 2), ("device", "cuda"), ("agent.compile", True), ("agent.compile_scope", "step"),
                       ("eval_every", 7),
                       ("eval_episodes", 2), ("eval_max_steps", 9), ("checkpoint_every", 5),
                       ("log_every", 5), ("run_name", "x"), ("run_dir", "y")]:
        assert config_hash(_with(base, key, value)) == digest, key
    assert {"total_env_steps", "resume", "run_name", "run_dir", "logger"} <= set(EXCLUDED_KEYS)


# ---------------------------------------------------------------------------- sweeps (subprocesses)
def test_seed_sweep_makes_one_run_per_seed_and_a_rerun_continues_it(tmp_path):
    """-m seed=0,1: two folders, each with its own checkpoint, nothing else left in the launch dir;
    the same command for seed 0 with a larger budget (and other eval settings) resumes that run."""
    sweep = train(tmp_path, "-m", *BASE, "seed=0,1")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    folders = run_folders(tmp_path)
    assert sorted(folders) == ["s0", "s1"]
    for seed, folder in folders.items():
        ckpt = torch.load(folder / "checkpoints" / "latest.pt", weights_only=True)
        assert ckpt["counters"]["env_steps"] == 160 and ckpt["config"]["seed"] == int(seed[1:])
        rel = f"runs/{folder.name}"
        assert sweep.stdout.count(f"[imwm] run folder: {rel}") == 2  # at the start and at the end
    jobs = sweep_jobs(tmp_path)
    assert [(j[0], j[1], j[2]) for j in jobs] == [
        ("0", "completed", f"runs/{folders['s0'].name}"), ("1", "completed", f"runs/{folders['s1'].name}")]
    assert f"#1 completed: runs/{folders['s1'].name}" in sweep.stdout
    assert_nothing_empty_or_stray(tmp_path)

    again = train(tmp_path, *BASE[:-1], "seed=0", "total_env_steps=200", "eval_every=40")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stdout and "at env step 160" in again.stdout
    assert "resuming with changed config: eval_every: 100 -> 40; total_env_steps: 150 -> 200" in again.stdout
    assert run_folders(tmp_path) == folders  # no new folder
    ckpt = torch.load(folders["s0"] / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["counters"]["env_steps"] == 200
    assert (folders["s0"] / "config.changes-1.yaml").exists()


def test_a_sweep_runs_its_other_jobs_after_a_refused_one_and_leaves_no_run_folder(tmp_path):
    sweep = train(tmp_path, "-m", "preset=debug", "replay.batch_size=-1,-2")
    assert sweep.returncode == 1
    for bad in (-1, -2):  # one line each: the second job ran after the first was refused
        assert f"imwm: error: replay.batch_size: must be an integer >= 1 (got {bad})" in sweep.stderr
    assert [j[1] for j in sweep_jobs(tmp_path)] == ["failed", "failed"]
    assert not run_folders(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["sweeps"]


@pytest.mark.slow
def test_a_changed_hyperparameter_starts_a_new_run(tmp_path):
    first = train(tmp_path, *BASE)
    assert first.returncode == 0, first.stderr[-3000:]
    changed = train(tmp_path, *BASE, "agent.entropy_coef=1e-3")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "resumed" not in changed.stdout
    dirs = [p for p in (tmp_path / "runs").iterdir()]
    assert len(dirs) == 2 and all((p / "checkpoints" / "latest.pt").exists() for p in dirs)
    coefs = sorted(torch.load(p / "checkpoints" / "latest.pt", weights_only=True)["config"]["agent"]
                   ["entropy_coef"] for p in dirs)
    assert coefs == [3e-4, 1e-3]


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_in_parallel(tmp_path):
    out = train(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *BASE, "seed=0,1")
    assert out.returncode == 0, out.stderr[-3000:]
    folders = run_folders(tmp_path)
    assert sorted(folders) == ["s0", "s1"]
    spans = []  # (start, end): config.yaml is written when a run starts, the checkpoint at its end
    for folder in folders.values():
        assert torch.load(folder / "checkpoints" / "latest.pt", weights_only=True)["counters"]["env_steps"] == 160
        spans.append((os.path.getmtime(folder / "config.yaml"),
                      os.path.getmtime(folder / "checkpoints" / "latest.pt")))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the two jobs did not overlap: {spans}"
    assert [j[1] for j in sweep_jobs(tmp_path)] == ["completed", "completed"]
    assert_nothing_empty_or_stray(tmp_path)


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job(tmp_path):
    out = train(tmp_path, "-m", "hydra/launcher=submitit_local", *BASE, "seed=3")
    assert out.returncode == 0, out.stderr[-3000:]
    (folder,) = run_folders(tmp_path).values()
    assert torch.load(folder / "checkpoints" / "latest.pt", weights_only=True)["counters"]["env_steps"] == 160
    assert f"#0 completed: runs/{folder.name}" in out.stdout  # the job ran elsewhere: its table
    (record,) = (tmp_path / "runs" / "sweeps").iterdir()
    logs = "".join(p.read_text() for p in record.glob(".submitit/*/*_log.out"))
    assert f"[imwm] run folder: runs/{folder.name}" in logs
    assert_nothing_empty_or_stray(tmp_path)  # (submitit's empty .submitit/%j is removed)
