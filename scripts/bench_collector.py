#!/usr/bin/env python
"""Sync vs async collection, side by side: wall time, env steps/s, updates/s, learner waiting.

Each configuration is one real training run (``imwm.training.loop.run``, CSV logger, no
evaluation) with ``collector=sync`` and then ``collector=async``, on the same overrides. The
run's own counters say how long the learner waited for the collector's next batch
(``train/collector_wait``, a share of wall time) and how long it spent storing batches and
updating (``train/learner_busy``). With async collection the wall time should approach the
larger of collection and learning instead of their sum, and the wait should drop towards zero
whenever collecting a batch is cheaper than the updates it pays for.

Usage:
    python scripts/bench_collector.py --overrides preset=atari model=XS num_envs=16 frames_per_batch=64 \\
        total_env_steps=2048 prefill=1024 train_ratio=64 replay.batch_length=16
    python scripts/bench_collector.py --overrides preset=debug total_env_steps=400    # seconds
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path


def one_run(overrides: list[str], collector: str, run_dir: Path) -> dict[str, float]:
    from imwm.configs import compose_config
    from imwm.training.loop import run

    cfg = compose_config([*overrides, f"collector={collector}", "logger=csv", f"run_dir={run_dir}",
                          "eval_every=0", "checkpoint_every=0", "resume=false"])
    start = time.perf_counter()
    summary = run(cfg)
    wall = time.perf_counter() - start
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/collector_wait")]
    last = rows[-1] if rows else {}
    steps, updates = summary["env_steps"], summary["updates"]
    return {"wall s": wall, "env steps": steps, "updates": updates, "env steps/s": steps / wall,
            "updates/s": updates / wall, "waiting for data": float(last.get("train/collector_wait", "nan")),
            "learner busy": float(last.get("train/learner_busy", "nan"))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overrides", nargs="*", default=["preset=debug", "total_env_steps=400"],
                        help="train.py overrides shared by both runs")
    parser.add_argument("--collectors", nargs="*", default=["sync", "async"])
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for collector in args.collectors:
            results[collector] = one_run(args.overrides, collector, Path(tmp) / collector)
            print(f"done {collector}", file=sys.stderr, flush=True)
    cols = ["wall s", "env steps", "updates", "env steps/s", "updates/s", "waiting for data", "learner busy"]
    print()
    print("| collector | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, r in results.items():
        cells = [f"{r[c]:.0f}" if c in ("env steps", "updates") else
                 f"{r[c]:.0%}" if c in ("waiting for data", "learner busy") else f"{r[c]:.1f}" for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print(f"command: python scripts/bench_collector.py --overrides {' '.join(args.overrides)}")


if __name__ == "__main__":
    from imwm.errors import run_main

    run_main(main)
