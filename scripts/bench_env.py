"""Benchmark: Atari env steps/s through TorchRL's Collector vs raw gymnasium ALE, same run.

Rows:
- ``raw gymnasium``: ``gym.make("ALE/<Game>-v5", frameskip=4)`` (sticky 0.25), random actions in a
  plain Python loop, native 210x160 frames, no resize, no TorchRL: the baseline.
- ``imwm vector (n envs)``: ``make_atari_env(task, backend="vector", num_envs=n)`` (ale-py's C++
  vector env: frame skip 4 + max-pool, sticky 0.25, 64x64 RGB) + InitTracker/RewardSum/StepCounter,
  collected by ``torchrl.collectors.Collector`` with random actions.
- ``imwm gym``: ``make_atari_env(task, backend="gym")`` (``GymEnv`` + interpolate resize) through
  the same Collector.

Each configuration runs ``--repeats`` times, interleaved; the median is reported. Prints a markdown
table and the command line. Example::

    OMP_NUM_THREADS=1 python scripts/bench_env.py --game pong --steps 4000 --repeats 3 --num-envs 1 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def bench_raw(game_id: str, steps: int, seed: int) -> float:
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    env = gym.make(game_id, frameskip=4, repeat_action_probability=0.25)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    n_actions = env.action_space.n
    actions = rng.integers(0, n_actions, size=steps)
    t0 = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def bench_collector(task: str, backend: str, num_envs: int, steps: int, seed: int) -> float:
    from torchrl.collectors import Collector

    from imwm.envs import make_atari_env

    env = make_atari_env(task, num_envs=num_envs, backend=backend, seed=seed)
    frames_per_batch = 64 * num_envs
    collector = Collector(env, None, frames_per_batch=frames_per_batch, total_frames=-1)
    it = iter(collector)
    next(it)  # warm-up batch: first reset, spec checks, thread start
    done = 0
    t0 = time.perf_counter()
    while done < steps:
        batch = next(it)
        done += batch.numel()
    dt = time.perf_counter() - t0
    collector.shutdown()  # also closes the env
    return done / dt


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="pong", help="snake-case Atari task (pong, breakout, ...)")
    parser.add_argument("--steps", type=int, default=4000, help="env steps timed per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 8],
                        help="vector-backend batch sizes to measure")
    parser.add_argument("--no-gym", action="store_true", help="skip the GymEnv backend row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from imwm.envs.atari import atari_gym_id

    game_id = atari_gym_id(args.game)
    configs = [("raw gymnasium (1 env, 210x160, no resize)", lambda: bench_raw(game_id, args.steps, args.seed))]
    for n in args.num_envs:
        configs.append((f"imwm vector backend, Collector ({n} env{'s' if n > 1 else ''}, 64x64)",
                        lambda n=n: bench_collector(args.game, "vector", n, args.steps, args.seed)))
    if not args.no_gym:
        configs.append(("imwm gym backend, Collector (1 env, GymEnv + resize 64x64)",
                        lambda: bench_collector(args.game, "gym", 1, args.steps, args.seed)))
    results: dict[str, list[float]] = {name: [] for name, _ in configs}
    for _ in range(args.repeats):
        for name, fn in configs:  # interleaved so load changes hit every row alike
            results[name].append(fn())

    raw = statistics.median(results[configs[0][0]])
    print(f"\n`{' '.join(['python', 'scripts/bench_env.py'] + (argv or sys.argv[1:]))}`  "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs, "
          f"game {game_id}, {args.steps} steps x {args.repeats} repeats, median)\n")
    print("| pipeline | env steps/s (median) | min | max | vs raw |")
    print("|---|---:|---:|---:|---:|")
    for name, _ in configs:
        vals = results[name]
        med = statistics.median(vals)
        print(f"| {name} | {med:,.0f} | {min(vals):,.0f} | {max(vals):,.0f} | {med / raw:.2f}x |")


if __name__ == "__main__":
    from imwm.errors import run_main

    run_main(main)  # a user error (bad config value, unknown task) is one line, exit status 2
