#!/usr/bin/env python
"""Time the ``make train`` model's update at earlier commits beside today's, in one run.

A speed goal stated as "N times faster than the code was" needs the code as it was, on the same
machine, in the same run: re-quoting an old number from another machine or another load would
compare the machines. For each ``COMMIT[:OVERRIDE,...]`` this checks the commit out into a
temporary ``git worktree``, composes that commit's own Hydra config with ``preset=laptop`` and the
overrides, builds the agent with that commit's ``imwm.training.build_model.build_agent`` and
times ``agent.train_step`` on one fixed CartPole-shaped batch (16 x 16, 4-dim observations,
2 actions), each variant in its own process, one after another. The commits must share that
API (every commit since the first benchmark has).

The workload is each commit's own ``preset=laptop`` update, so a later recipe that does more work
per update (a replay-value critic, LaProp) is timed as it is; add ``agent=default`` to time
today's code on the older recipe.

Usage:
    python scripts/bench_update_history.py --variants 224a1aa HEAD:agent.compile=false HEAD \
        --threads 1 2 --repeats 30 --warmup 3

Prints a markdown table: median and min wall ms per update, process CPU ms per update, and the
speed-up of each row over the first row with the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_GLIBC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184"


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"abc123:agent.compile=false,agent=default"`` -> ``("abc123", ["agent.compile=false", "agent=default"])``.

    >>> parse_variant("HEAD")
    ('HEAD', [])
    >>> parse_variant("224a1aa:agent.compile=false,threads=1")
    ('224a1aa', ['agent.compile=false', 'threads=1'])
    """
    commit, _, overrides = text.partition(":")
    return commit, [o for o in overrides.split(",") if o]


def time_update(overrides: list[str], threads: int, repeats: int, warmup: int) -> dict:
    """Build the laptop agent of the checkout on ``sys.path`` and time its update (worker side)."""
    import torch
    from hydra import compose, initialize_config_dir
    from tensordict import TensorDict

    import imwm
    from imwm.training.build_model import build_agent

    torch.set_num_threads(threads)
    with initialize_config_dir(str(Path.cwd() / "configs"), version_base=None):
        cfg = compose("config", overrides=["preset=laptop", *overrides])
    torch.manual_seed(0)
    agent = build_agent(cfg, obs_shape=(4,), action_dim=2)
    # built here, not with bench_update.imwm_batch: that module imports parts of imwm an older commit lacks
    g = torch.Generator().manual_seed(0)
    b, t = 16, 16
    is_first = torch.zeros(b, t, 1, dtype=torch.bool)
    is_first[:, 0] = True
    data = TensorDict({
        "observation": torch.randn(b, t, 4, generator=g),
        "action": torch.nn.functional.one_hot(torch.randint(2, (b, t), generator=g), 2).float(),
        "reward": torch.ones(b, t, 1),
        "is_first": is_first,
        "is_terminal": torch.zeros(b, t, 1, dtype=torch.bool),
        "is_last": torch.zeros(b, t, 1, dtype=torch.bool),
    }, [b, t])

    def step() -> None:
        metrics, _ = agent.train_step(data)
        float(next(iter(metrics.values())))  # one host sync, as a training loop's logging makes

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    warm_s = time.perf_counter() - start
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(1e3 * (time.perf_counter() - w0))
        cpu.append(1e3 * (time.process_time() - c0))
    return {"imwm": str(Path(imwm.__file__).parent), "warmup_s": warm_s, "median_ms": statistics.median(wall),
            "min_ms": min(wall), "cpu_ms": statistics.median(cpu)}


def short_sha(commit: str) -> str:
    """The commit's short hash, or one line naming it when the repository has no such commit."""
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--short", f"{commit}^{{commit}}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench_update_history.py: --variants names {commit!r}, which is no commit of {REPO}")
    return proc.stdout.strip()


def run_variant(commit: str, overrides: list[str], threads: int, args) -> dict:
    """Check ``commit`` out into a temporary worktree and time it in a fresh process there."""
    with tempfile.TemporaryDirectory(prefix="imwm_hist_") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(tree), commit], check=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree), "GLIBC_TUNABLES": _GLIBC, "WANDB_MODE": "disabled"}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(overrides),
                   "--threads", str(threads), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
            out = subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=True)
    result = json.loads(out.strip().splitlines()[-1])
    if not result["imwm"].startswith(str(tree)):
        raise RuntimeError(f"imported imwm from {result['imwm']}, not from the worktree of {commit}")
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["HEAD:agent.compile=false", "HEAD"],
                        help="COMMIT[:OVERRIDE,...], each timed in its own worktree and process")
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(time_update(json.loads(args.worker), args.threads[0], args.repeats, args.warmup)))
        return
    shas = {text: short_sha(parse_variant(text)[0]) for text in args.variants}
    rows = []
    for threads in args.threads:
        for text in args.variants:
            commit, overrides = parse_variant(text)
            sha = shas[text]
            rows.append((threads, text, sha, run_variant(commit, overrides, threads, args)))
            print(f"# {text} ({sha}), {threads} threads: {rows[-1][3]['median_ms']:.1f} ms", file=sys.stderr)
    print("| variant | commit | threads | median ms | min ms | CPU ms | warm-up s | speed-up vs first row |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for threads, text, sha, r in rows:
        base = next(r0 for t0, _, _, r0 in rows if t0 == threads)
        print(f"| `{text}` | {sha} | {threads} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['cpu_ms']:.1f} "
              f"| {r['warmup_s']:.0f} | {base['median_ms'] / r['median_ms']:.2f}x |")
    print(f"\n`python scripts/bench_update_history.py {' '.join(sys.argv[1:] if argv is None else argv)}`")


if __name__ == "__main__":
    main()
