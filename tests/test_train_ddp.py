"""Data-parallel training through torchrun: 2 CPU processes, gloo, averaged gradients."""
import os
import re
import socket
import subprocess
import sys

import torch

from imwm.training.distributed import DistributedContext
from script_runner import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_train_identical_weights_and_rank0_alone_writes(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "IMWM_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "scripts" / "train.py"), "preset=debug", "logger=csv", f"run_dir={run}", "total_env_steps=200"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d)/2: parameters ([0-9a-f]+)", proc.stdout))
    # each rank trains on its own envs: without averaged gradients the weights would part ways
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], proc.stdout[-2000:]
    ckpt = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["counters"]["env_steps"] == 200 and ckpt["counters"]["updates"] == 50
    assert (run / "metrics.csv").exists() and (run / "rank1" / "metrics.csv").exists()
    assert not (run / "rank1" / "checkpoints").exists()


def test_outside_torchrun_there_is_one_process():
    ctx = DistributedContext.from_env({})
    assert not ctx.enabled and ctx.is_main
    ctx.average_gradients([torch.nn.Parameter(torch.ones(2))])  # a no-op without a process group
    assert DistributedContext.from_env({"RANK": "1", "WORLD_SIZE": "2"}).is_main is False
