"""Benchmark: cost of one replay step = sample B slices of length T + priority update of B items.

Side by side, in the same process and on the same storage, at each capacity:

- ``curious``  imwm ``CuriousSampler`` (sum tree, O(log N)): ``sample`` + ``update_priority``;
- ``uniform``  imwm ``UniformSliceSampler`` (same tree, constant mass): ``sample`` only;
- ``torchrl``  TorchRL's uniform ``SliceSampler(slice_len=T, traj_key="traj_ids")``: ``sample``
  only (it has no priorities); it rescans the storage's trajectory ids on every call;
- ``naive``    ``torch.multinomial`` over all N (masked) priorities + an in-place write of the B
  new priorities: what a prioritized slice sampler costs without a tree.

Samplers are timed directly (``sampler.sample(storage, B * T)``), without gathering the records,
which costs the same for every sampler. A storage of 10 million DreamerV3 records (64x64x3
frames) would need ~120 GB, so the storage here holds only ``traj_ids`` (episodes of 200 to 2000
steps) and one float per record; the samplers never read anything else.

Method (``--clock wall`` or ``process``; process time excludes time the OS gave to other jobs):
for each capacity, rounds of ``--block`` calls per method, methods interleaved, repeated
for ``--rounds`` rounds; the table reports the median microseconds per call over rounds. On a
shared machine the numbers are noisy: compare the columns of one run, not runs.

Run: ``.venv/bin/python scripts/bench_replay.py`` (default capacities 1e5 1e6 1e7, 1 thread).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage
from torchrl.data.replay_buffers.samplers import SliceSampler

from imwm.replay import CuriousSampler, UniformSliceSampler


def make_storage(capacity: int, seed: int) -> LazyTensorStorage:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(200, 2001, (capacity // 200 + 1,), generator=g)
    ids = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)[:capacity]
    storage = LazyTensorStorage(capacity)
    data = TensorDict({"traj_ids": ids, "value": torch.zeros(capacity)}, [capacity])
    storage.set(torch.arange(capacity), data)
    return storage


class Naive:
    """Prioritized slice starts by torch.multinomial over every priority (O(N) per call)."""

    def __init__(self, valid: torch.Tensor, priority: torch.Tensor, slice_len: int):
        self.mass = priority * valid
        self.valid = valid
        self.slice_len = slice_len
        self.offsets = torch.arange(slice_len)
        self.n = valid.numel()

    def step(self, batch: int, new_priority: torch.Tensor) -> None:
        starts = torch.multinomial(self.mass, batch, replacement=True)
        index = ((starts.unsqueeze(-1) + self.offsets) % self.n).reshape(-1)
        self.mass[starts] = new_priority * self.valid[starts]
        return index


def bench_capacity(capacity: int, args) -> dict[str, float]:
    B, T = args.batch, args.length
    clock = time.process_time if args.clock == "process" else time.perf_counter
    storage = make_storage(capacity, args.seed)
    g = torch.Generator().manual_seed(args.seed)

    curious = CuriousSampler(capacity, slice_len=T, arity=args.arity)
    curious._rng = g
    curious.extend(torch.arange(capacity))
    curious._refresh(storage)
    valid = curious._valid.clone()
    # steady state: every item has had a loss (no inf pool left)
    losses = torch.rand(capacity, generator=g) * 3
    curious.update_priority(torch.arange(capacity), losses)

    uniform = UniformSliceSampler(capacity, slice_len=T, arity=args.arity)
    uniform._rng = g
    uniform.extend(torch.arange(capacity))
    uniform._refresh(storage)

    torchrl = SliceSampler(slice_len=T, traj_key="traj_ids", strict_length=True,
                           truncated_key=None, init_key=None)
    torchrl._rng = g

    naive = Naive(valid, curious.priorities(torch.arange(capacity)), T)
    new_loss = torch.rand(B, generator=g)

    def step_curious():
        (index,), _ = curious.sample(storage, B * T)
        curious.update_priority(index.view(B, T)[:, 0], new_loss)

    def step_uniform():
        uniform.sample(storage, B * T)

    def step_torchrl():
        torchrl.sample(storage, B * T)

    def step_naive():
        naive.step(B, new_loss.double())

    methods = {"curious": step_curious, "uniform": step_uniform, "torchrl": step_torchrl,
               "naive": step_naive}
    methods = {k: v for k, v in methods.items() if k in args.methods}
    for fn in methods.values():  # warm-up
        for _ in range(3):
            fn()
    per_call = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            block = args.block if name in ("curious", "uniform") else max(1, args.block // 10)
            t0 = clock()
            for _ in range(block):
                fn()
            per_call[name].append((clock() - t0) / block * 1e6)
    return {name: statistics.median(v) for name, v in per_call.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--capacities", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    p.add_argument("--batch", type=int, default=16, help="slices per batch (B)")
    p.add_argument("--length", type=int, default=64, help="slice length (T)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--block", type=int, default=50, help="calls per round (1/10 for O(N) methods)")
    p.add_argument("--arity", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=["wall", "process"], default="wall",
                   help="process = CPU time of this process: less sensitive to other jobs on a "
                        "shared machine (the benchmark is single-threaded by default)")
    p.add_argument("--methods", nargs="+", default=["curious", "uniform", "torchrl", "naive"])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    for cap in args.capacities:
        cap = int(cap)
        t0 = time.perf_counter()
        res = bench_capacity(cap, args)
        rows.append((cap, res))
        print(f"# capacity {cap:.0e} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    names = list(rows[0][1])
    base_cap, base = rows[0]
    print(f"\nreplay step = sample {args.batch} slices of {args.length} (+ update of {args.batch} "
          f"priorities for curious/naive); median us per step ({args.clock} clock); "
          f"torch {torch.__version__}, "
          f"{args.threads} thread(s), sum-tree arity {args.arity}\n")
    header = ["capacity"] + [f"{n} (us)" for n in names]
    header += ["curious growth", "log N growth", "curious / torchrl", "curious / uniform"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cap, res in rows:
        cells = [f"{cap:.0e}"] + [f"{res[n]:,.0f}" for n in names]
        growth = res["curious"] / base["curious"] if "curious" in res else float("nan")
        cells.append(f"{growth:.2f}x")
        cells.append(f"{math.log(cap) / math.log(base_cap):.2f}x")
        cells.append(f"{res['curious'] / res['torchrl']:.2f}" if "torchrl" in res else "-")
        cells.append(f"{res['curious'] / res['uniform']:.2f}" if "uniform" in res else "-")
        print("| " + " | ".join(cells) + " |")
    print("\ncommand: " + " ".join([sys.executable.split("/")[-1], *sys.argv]))


if __name__ == "__main__":
    from imwm.errors import run_main

    run_main(main)  # a user error (bad config value, unknown task) is one line, exit status 2
