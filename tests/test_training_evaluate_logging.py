"""Greedy evaluation on a real env, and metrics.csv writing/resume trimming."""
import csv

import pytest
import torch
from torchrl.envs.utils import ExplorationType, exploration_type

from imwm.envs import make_gym_env
from imwm.training.evaluate import evaluate
from imwm.training.logging import RunLogger


class ConstantPolicy:
    """Always pushes the cart left; records the exploration type it was called under."""

    def __init__(self, n):
        self.n, self.types = n, set()

    def __call__(self, td):
        self.types.add(exploration_type())
        return td.set("action", torch.nn.functional.one_hot(torch.zeros(self.n, dtype=torch.long), 2))


def test_evaluate_one_episode_per_env_greedy():
    env = make_gym_env("CartPole-v1", num_envs=3, seed=0)
    policy = ConstantPolicy(3)
    out = evaluate(env, policy, max_steps=500)
    # Pushing one way topples the pole in ~8-11 steps; every step pays 1.
    assert out["returns"].shape == (3,) and not out["truncated"].any()
    assert torch.equal(out["returns"], out["lengths"])
    assert ((out["returns"] >= 7) & (out["returns"] <= 12)).all()
    assert policy.types == {ExplorationType.DETERMINISTIC}
    capped = evaluate(env, ConstantPolicy(3), max_steps=3)
    assert capped["truncated"].all() and capped["returns"].tolist() == [3.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="max_steps"):
        evaluate(env, policy, max_steps=0)


def test_metrics_csv_columns_grow_and_resume_drops_later_rows(tmp_path):
    log = RunLogger(tmp_path, backend="none", project="p", mode="offline", run_name="r",
                    total_env_steps=10, progress=False)
    log.log({"train/loss": torch.tensor(1.5)}, 10)
    log.log({"train/loss": 1.0, "eval/return": 20.0}, 20)
    log.log({"train/loss": 0.5}, 30)
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["env_step"] for r in rows] == ["10", "20", "30"]
    assert rows[0]["eval/return"] == "" and float(rows[1]["eval/return"]) == 20.0
    # Resuming from a checkpoint taken at step 20: the row logged at 30 is dropped.
    log = RunLogger(tmp_path, backend="csv", project="p", mode="offline", run_name="r",
                    total_env_steps=10, start_step=20, progress=False)
    log.log({"train/loss": 0.25}, 30)
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["env_step"], r["train/loss"]) for r in rows] == [("10", "1.5"), ("20", "1.0"), ("30", "0.25")]
    # logger=csv writes metrics.csv and nothing else (no TorchRL CSVLogger copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_metrics_csv_one_row_per_step_sorted_columns_nan_kept(tmp_path):
    """A training row and an evaluation at the same step share one row; columns are env_step then
    sorted names whatever order they came in; NaN is written as nan; a kill loses no row."""
    log = RunLogger(tmp_path, backend="csv", project="p", mode="offline", run_name="r",
                    total_env_steps=10, progress=False)
    log.log({"train/updates": 4.0, "loss_a": float("nan")}, 50)
    log.log({"eval/return": 9.0}, 50)
    log.log({"train/updates": 8.0, "loss_a": 0.5, "eval/return": 11.0}, 100)
    log.log({"eval/length": 30.0}, 100)  # a new column at the same step
    # no close(): what a killed run leaves on disk
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "env_step,eval/length,eval/return,loss_a,train/updates"
    assert lines[1:] == ["50,,9.0,nan,4.0", "100,30.0,11.0,0.5,8.0"]
    log.close()


def test_debug_run_metrics_csv_has_one_row_per_logged_step(tmp_path):
    """A real debug run: the final evaluation joins the last training row; no csv/ folder."""
    from script_runner import run_script

    out = run_script(tmp_path, "train.py", "preset=debug", "logger=csv", "threads=1",
                     f"run_dir={tmp_path / 'run'}", "total_env_steps=180", "eval_every=1000")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    steps = [int(r["env_step"]) for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 180
    assert rows[-1]["eval/return"] and rows[-1]["train/updates"]  # one row, training + final eval
    assert not (tmp_path / "run" / "csv").exists()


def test_metric_means_average_each_key_over_its_own_measurements():
    from imwm.training.loop import _MetricMeans

    means = _MetricMeans()
    means.add({"loss": torch.tensor(1.0)})
    means.add({"loss": torch.tensor(3.0), "dormant/actor_all": torch.tensor(0.25)})
    means.add({"loss": 5.0})
    assert means.pop() == {"loss": 3.0, "dormant/actor_all": 0.25}
    assert means.pop() == {}
