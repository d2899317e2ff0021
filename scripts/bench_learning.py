"""Benchmark: does the agent learn? Real training loop (``imwm.training.loop.run``) on CartPole-v1
(vector observations) and on one Atari game, small models, small budgets.

For every run it reads the greedy evaluation returns from the run's ``metrics.csv`` and reports them
against env steps and wall-clock minutes, next to a uniform-random policy's return measured in the
same run. Writes ``<out>/learning_curves.png`` and ``<out>/learning.md`` (markdown table) and prints
the table and the command line. Example::

    python scripts/bench_learning.py --out runs/bench_learning                    # both
    python scripts/bench_learning.py --skip-atari --cartpole-steps 5000           # CartPole only
    python scripts/bench_learning.py --skip-cartpole --atari-task pong --device cuda

Extra Hydra overrides for a run: ``--cartpole-override key=value`` / ``--atari-override key=value``.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def random_return(env_overrides: list[str], episodes: int, seed: int) -> float:
    """Mean return of a uniform-random policy on the same env (the 'random' reference)."""
    from omegaconf import OmegaConf

    from imwm.envs import make_env
    from imwm.training.evaluate import evaluate

    cfg = OmegaConf.to_container(compose(env_overrides), resolve=True)
    env = make_env(**cfg["env"], num_envs=episodes, seed=seed + 777)

    def policy(td):
        return td.set("action", env.action_spec.rand())

    result = evaluate(env, policy, max_steps=cfg["eval_max_steps"])
    env.close()
    return result["returns"].mean().item()


def eval_curve(metrics_csv: Path) -> list[tuple[int, float]]:
    with open(metrics_csv, newline="") as f:
        return [(int(r["env_step"]), float(r["eval/return"])) for r in csv.DictReader(f)
                if r.get("eval/return")]


def train(name: str, overrides: list[str]) -> dict:
    from imwm.training.loop import run

    print(f"\n=== {name}: python scripts/train.py {' '.join(overrides)}", flush=True)
    t0 = time.perf_counter()
    summary = run(compose(overrides))
    minutes = (time.perf_counter() - t0) / 60
    curve = eval_curve(Path(summary["metrics"]))
    return {"name": name, "overrides": overrides, "minutes": minutes, "curve": curve, **summary}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_learning")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cartpole-steps", type=int, default=None, help="default: the laptop preset's")
    p.add_argument("--skip-cartpole", action="store_true")
    p.add_argument("--cartpole-override", action="append", default=[])
    p.add_argument("--atari-task", default="pong")
    p.add_argument("--atari-steps", type=int, default=10000)
    p.add_argument("--skip-atari", action="store_true")
    p.add_argument("--atari-override", action="append", default=[])
    p.add_argument("--random-episodes", type=int, default=10,
                   help="episodes of the uniform-random reference policy per task")
    args = p.parse_args(argv)
    if args.random_episodes < 1:
        p.error(f"--random-episodes must be >= 1, got {args.random_episodes}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("IMWM_PROGRESS", "1")
    torch.set_num_threads(args.threads)

    common = [f"seed={args.seed}", f"device={args.device}", f"threads={args.threads}", "logger=none",
              "resume=false"]
    jobs = []
    if not args.skip_cartpole:
        steps = [f"total_env_steps={args.cartpole_steps}"] if args.cartpole_steps else []
        jobs.append(("CartPole-v1", ["preset=laptop", *steps, f"run_dir={out / 'cartpole'}", *common,
                                     *args.cartpole_override],
                     ["env=cartpole"]))
    if not args.skip_atari:
        # A small image model and a modest train ratio: a CPU-sized Atari check, not Atari100k.
        jobs.append((f"Atari {args.atari_task}", [
            "preset=atari", f"env.task={args.atari_task}", "env.full_action_space=false",
            "model=XS", "model.deter=256", "model.cnn_depth=16", "model.mlp_units=256",
            "replay.capacity=200000", "replay.batch_size=16", "replay.batch_length=32",
            f"total_env_steps={args.atari_steps}", "prefill=2000", "train_ratio=32",
            "eval_every=2500", "eval_episodes=3", "eval_max_steps=4500", "checkpoint_every=5000",
            "log_every=1000", f"run_dir={out / ('atari_' + args.atari_task)}", *common, *args.atari_override,
        ], ["env=atari", f"env.task={args.atari_task}", "eval_max_steps=4500"]))

    results = []
    for name, overrides, env_overrides in jobs:
        for stale in (Path(o.split("=", 1)[1]) for o in overrides if o.startswith("run_dir=")):
            if (stale / "checkpoints").exists():  # a fresh run each time
                import shutil

                shutil.rmtree(stale)
        res = train(name, overrides)
        res["random"] = random_return(env_overrides, episodes=args.random_episodes, seed=args.seed)
        results.append(res)

    cmd = " ".join(["python", "scripts/bench_learning.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [f"`{cmd}` ({os.cpu_count()} CPUs, device {args.device}, torch threads {args.threads})", "",
             "| task | env steps | minutes | final eval return | best eval return | random policy |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        final = r["curve"][-1][1] if r["curve"] else float("nan")
        best = max(v for _, v in r["curve"]) if r["curve"] else float("nan")
        lines.append(f"| {r['name']} | {r['env_steps']:,} | {r['minutes']:.1f} | {final:.1f} | {best:.1f} | "
                     f"{r['random']:.1f} |")
    lines += ["", "Evaluation curves (env step: greedy return):", ""]
    for r in results:
        lines.append(f"- {r['name']}: " + ", ".join(f"{s}: {v:.1f}" for s, v in r["curve"]))
    table = "\n".join(lines)
    (out / "learning.md").write_text(table + "\n")
    print("\n" + table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(results)), figsize=(5 * max(1, len(results)), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        if r["curve"]:
            xs, ys = zip(*r["curve"])
            ax.plot(xs, ys, marker="o", label="imwm DreamerV3 (greedy eval)")
        ax.axhline(r["random"], color="gray", linestyle="--", label="random policy")
        ax.set_title(f"{r['name']} ({r['minutes']:.0f} min, {args.device})")
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return")
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    print(f"\nwrote {out / 'learning.md'} and {out / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
