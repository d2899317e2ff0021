#!/usr/bin/env python
"""Collectors side by side: wall time, env steps/s, updates/s, learner waiting, per collector.

Each configuration is one real training run (``imwm.training.loop.run``, CSV logger, no
evaluation) on the same overrides, once per ``--collectors`` entry: ``sync`` or ``async``
(``collector=``), optionally with a worker count, ``async:2`` (``collector_workers=2``: TorchRL's
``MultiAsyncCollector`` with two processes of ``num_envs / 2`` envs each; ``sync:2`` is its
``MultiSyncCollector``, ``distributed:2`` the ``torch.distributed`` one). The run's own counters
say how long the learner waited for the collector's next batch (``train/collector_wait``, a share
of wall time) and how long it spent storing batches and updating (``train/learner_busy``). With
async collection the wall time should approach the larger of collection and learning instead of
their sum, and the wait should drop towards zero whenever collecting a batch is cheaper than the
updates it pays for. ``wall s`` includes starting the worker processes (a few seconds each);
``s per 10k env steps`` is the steady state, from the run's own metric rows after the first two
(the random prefill and the workers' start), and ``pushing weights`` the share of wall time spent
sending the updated actor to the workers.

Usage:
    python scripts/bench_collector.py --overrides preset=debug num_envs=2 total_env_steps=400   # seconds
    python scripts/bench_collector.py --collectors sync async async:2 --overrides preset=debug num_envs=2
    python scripts/bench_collector.py --collectors sync async --workers 1 2 ...   # sync, sync:2, async, async:2

A balanced case, where collecting and learning cost about the same, so that the overlap can show:
Atari Pong with 16 envs, a CPU-sized model and a small train ratio (one update per 128 env steps
at ``train_ratio=1``). In the ``sync`` row, ``waiting for data`` is the share of collection;
raise or lower ``train_ratio`` until it is near 50% (learning and collection equal), then compare
the async rows' wall time with max(collect, learn) = ``sync`` wall x max(wait, busy)::

    python scripts/bench_collector.py --collectors sync async async:2 --overrides preset=atari \\
        env.task=pong model.deter=64 model.hidden=64 model.stoch=8 model.classes=8 model.cnn_depth=8 \\
        model.mlp_units=64 model.mlp_layers=1 num_envs=16 frames_per_batch=256 total_env_steps=8192 \\
        prefill=1024 train_ratio=1 replay.batch_size=8 replay.batch_length=16 replay.capacity=20000 \\
        threads=1 log_every=1024
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path


def parse_collectors(entries: list[str], workers: list[int]) -> list[tuple[str, int]]:
    """``["sync", "async:2"]`` -> ``[("sync", 1), ("async", 2)]``; an entry without a count runs
    once per ``workers`` value.

    Example:
        >>> parse_collectors(["sync", "async:2"], [1])
        [('sync', 1), ('async', 2)]
        >>> parse_collectors(["sync", "async"], [1, 2])
        [('sync', 1), ('sync', 2), ('async', 1), ('async', 2)]
    """
    out = []
    for entry in entries:
        name, _, count = entry.partition(":")
        if count and not count.isdigit():
            raise ValueError(f"--collectors entry {entry!r}: the worker count after ':' must be an integer")
        out.extend((name, int(count)) for count in ([count] if count else workers))
    return out


def label(collector: str, workers: int) -> str:
    return collector if workers == 1 else f"{collector}:{workers}"


def one_run(overrides: list[str], collector: str, workers: int, run_dir: Path) -> dict[str, float]:
    from imwm.configs import compose_config
    from imwm.training.loop import run

    cfg = compose_config([*overrides, f"collector={collector}", f"collector_workers={workers}", "logger=csv",
                          f"run_dir={run_dir}", "eval_every=0", "checkpoint_every=0", "resume=false"])
    start = time.perf_counter()
    summary = run(cfg)
    wall = time.perf_counter() - start
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/collector_wait")]
    last = rows[-1] if rows else {}
    steps, updates = summary["env_steps"], summary["updates"]
    # steady state: the metric rows' own windows after the first two (random prefill, worker start)
    rates = [float(r["train/env_steps_per_s"]) for r in rows[2:] if float(r["train/env_steps_per_s"]) > 0]
    steady = 1e4 * sum(1 / x for x in rates) / len(rates) if rates else float("nan")
    return {"wall s": wall, "s per 10k env steps": steady, "env steps": steps, "updates": updates, "env steps/s": steps / wall,
            "updates/s": updates / wall, "waiting for data": float(last.get("train/collector_wait", "nan")),
            "learner busy": float(last.get("train/learner_busy", "nan")),
            "pushing weights": float(last.get("train/weight_push", "nan"))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overrides", nargs="*", default=["preset=debug", "total_env_steps=400"],
                        help="train.py overrides shared by all runs")
    parser.add_argument("--collectors", nargs="*", default=["sync", "async"],
                        help="collector[:workers] per run, e.g. sync async async:2 (default: sync async)")
    parser.add_argument("--workers", nargs="*", type=int, default=[1],
                        help="collector_workers for entries of --collectors without ':<workers>' (default 1)")
    args = parser.parse_args(argv)
    runs = parse_collectors(args.collectors, args.workers)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for collector, workers in runs:
            name = label(collector, workers)
            results[name] = one_run(args.overrides, collector, workers, Path(tmp) / name.replace(":", "_"))
            print(f"done {name}", file=sys.stderr, flush=True)
    cols = ["wall s", "s per 10k env steps", "env steps", "updates", "env steps/s", "updates/s", "waiting for data", "learner busy",
            "pushing weights"]
    print()
    print("| collector | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, r in results.items():
        cells = [f"{r[c]:.0f}" if c in ("env steps", "updates") else
                 f"{r[c]:.0%}" if c in ("waiting for data", "learner busy", "pushing weights") else f"{r[c]:.1f}" for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    entries = " ".join(label(c, w) for c, w in runs)
    print(f"command: python scripts/bench_collector.py --collectors {entries} --overrides {' '.join(args.overrides)}")


if __name__ == "__main__":
    from imwm.errors import run_main

    run_main(main)
