"""Benchmark: does the agent learn, and how fast? Several seeds per configuration, one table.

Every run is ``scripts/train.py`` in its own process (the real entry point), ``--jobs`` at a time.
For each configuration the greedy evaluation returns of all seeds are read back from the runs'
``metrics.csv`` and reported as mean and spread against env steps and wall-clock minutes, next to
a uniform-random policy's return measured in the same benchmark. A run *solves* the task when an
evaluation reaches ``--solve`` and the next two evaluations hold it. Writes ``<out>/learning.md``
and ``<out>/learning_curves.png`` and prints the table and the command line::

    python scripts/bench_learning.py --suite cartpole --seeds 0 1 2              # make train's preset
    python scripts/bench_learning.py --suite cartpole_ablation --seeds 0 1 2 --jobs 2
    python scripts/bench_learning.py --suite catch --seeds 0 1 2 --jobs 2
    python scripts/bench_learning.py --config mine "preset=laptop agent.critic_lr=1e-3" --seeds 0 1

Runs trained with ``eval_sample=true`` (``--override eval_sample=true``) also evaluate with sampled
actions, as DreamerV3's own code does; a second table then reports those for the same runs.

Wall-clock numbers are only comparable between runs made with the same ``--jobs`` on an
otherwise idle machine; ``--jobs 2`` on 2 cores gives each run one core.
"""
from __future__ import annotations

import argparse
import csv
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# learning rates (model, actor, critic): the 2023 paper's, and those measured to suit 64-unit nets
OLD_LR = ["agent.model_lr=1e-4", "agent.actor_lr=3e-5", "agent.critic_lr=3e-5"]
NEW_LR = ["agent.model_lr=3e-4", "agent.actor_lr=1e-4", "agent.critic_lr=3e-4"]
# name -> (env overrides for the random reference, {config label: overrides}, solve threshold)
SUITES: dict[str, tuple[list[str], dict[str, list[str]], float | None]] = {
    "cartpole": (["env=cartpole"], {"laptop": ["preset=laptop"]}, 475.0),
    "cartpole_ablation": (["env=cartpole"], {
        "episode slices, 2023 recipe, preset LRs": ["preset=laptop", "agent=default", "replay.window=episode", *OLD_LR],
        "stream windows, 2023 recipe, LR 3e-4": ["preset=laptop", "agent=default", "replay.window=stream", *NEW_LR],
        "episode slices, 2023 recipe, LR 3e-4": ["preset=laptop", "agent=default", "replay.window=episode", *NEW_LR],
        "stream windows, 2024 recipe, LR 3e-4": ["preset=laptop", "replay.window=stream",
                                                 "agent=v3_2024", *NEW_LR],
    }, 475.0),
    "atari": (["env=atari", "env.task=pong", "eval_max_steps=4500"], {
        # a CPU-sized Atari check (small image model, modest train ratio), not Atari100k
        "pong, small model": [
            "preset=atari", "env.task=pong", "model=XS", "model.deter=256", "model.cnn_depth=16",
            "model.mlp_units=256", "replay.capacity=200000", "replay.batch_size=16",
            "replay.batch_length=32", "total_env_steps=10000", "prefill=2000", "train_ratio=32",
            "eval_every=2500", "eval_episodes=3", "eval_max_steps=4500", "checkpoint_every=5000",
            "log_every=1000"],
    }, None),
    "catch": (["preset=catch"], {
        "uniform replay": ["preset=catch"],
        "curious replay": ["preset=catch", "replay=curious"],
    }, 8.0),  # near the maximum (10): e.g. 9 objects caught and 1 missed
}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="imwm.configs", version_base="1.3"):
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


#: run key -> metrics.csv column: greedy evaluations, and the sampled-action ones of eval_sample=true runs
CURVES = {"curve": "eval/return", "curve_sample": "eval/return_sample"}


def with_curves(run: dict) -> dict:
    """The run with its evaluations read from its ``metrics.csv`` once, one curve per :data:`CURVES` key.

    A curve is ``[(env_step, eval return, minutes since the run started)]``; ``curve_sample`` is
    empty when the run did not evaluate with sampled actions.
    """
    with open(run["run_dir"] / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {**run, **{name: [(int(r["env_step"]), float(r[col]), float(r.get("eval/minutes") or "nan"))
                             for r in rows if r.get(col)] for name, col in CURVES.items()}}


def has_sampled(runs: list[dict]) -> bool:
    """Every run evaluated with sampled actions too (``eval_sample=true``)."""
    return all(r["curve_sample"] for r in runs)


def solved_at(curve: list[tuple[int, float, float]], threshold: float | None):
    """First evaluation reaching ``threshold`` and held at the next two.

    Returns ``(env step of the first, minutes at the third)``: the task counts as solved only
    once the hold is seen, so the clock stops at the third evaluation.
    """
    if threshold is None:
        return None
    for i in range(len(curve) - 2):
        if all(v >= threshold for _, v, _ in curve[i:i + 3]):
            return curve[i][0], curve[i + 2][2]
    return None


def run_dir_of(out: Path, label: str, seed: int) -> Path:
    name = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in label.replace(",", ""))
    return out / f"{name}-s{seed}"  # one folder, whatever the label holds ("1 update/step")


def finished(out: Path, label: str, seed: int) -> dict | None:
    """A run of an earlier invocation that ran to its end (``--reuse``), as :func:`run_all` gives it."""
    run_dir = run_dir_of(out, label, seed)
    log = out / f"{run_dir.name}.log"
    if not log.exists() or "[imwm] env steps:" not in log.read_text():
        return None
    cmd = next((line for line in log.read_text().splitlines() if line.startswith("# ")), "# (reused)")[2:]
    run = with_curves({"label": label, "seed": seed, "run_dir": run_dir, "cmd": cmd})
    return {**run, "minutes": run["curve"][-1][2] if run["curve"] else float("nan")}


def launch(label: str, seed: int, overrides: list[str], out: Path, threads: int, device: str):
    run_dir = run_dir_of(out, label, seed)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run each time
    args = [*overrides, f"seed={seed}", f"run_dir={run_dir}", f"threads={threads}",
            f"device={device}", "logger=csv", "resume=false"]
    env = {**os.environ, "IMWM_PROGRESS": "0", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads)}
    log = open(out / f"{run_dir.name}.log", "w")
    cmd = "python scripts/train.py " + " ".join(args)
    log.write(f"# {cmd}\n")
    log.flush()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    return {"label": label, "seed": seed, "run_dir": run_dir, "proc": proc, "log": log,
            "start": time.perf_counter(), "cmd": cmd}


def run_all(configs: dict[str, list[str]], seeds: list[int], jobs: int, out: Path, threads: int,
            device: str, reuse: bool = False, by_config: bool = False) -> list[dict]:
    if by_config:
        queue = [(label, seed, o) for label, o in configs.items() for seed in seeds]
    else:
        queue = [(label, seed, o) for seed in seeds for label, o in configs.items()]
    running, done = [], []
    if reuse:
        done = [r for r in (finished(out, label, seed) for label, seed, _ in queue) if r is not None]
        queue = [q for q in queue if finished(out, q[0], q[1]) is None]
    while queue or running:
        while queue and len(running) < jobs:
            running.append(launch(*queue.pop(0), out=out, threads=threads, device=device))
        time.sleep(1.0)
        for job in [j for j in running if j["proc"].poll() is not None]:
            running.remove(job)
            job["log"].close()
            job["minutes"] = (time.perf_counter() - job["start"]) / 60
            if job["proc"].returncode != 0:
                raise SystemExit(f"run failed ({job['cmd']}); see {out / (job['run_dir'].name + '.log')}")
            job.update(with_curves(job))
            print(f"[bench] {job['label']} seed {job['seed']}: {job['minutes']:.1f} min, final "
                  f"{job['curve'][-1][1]:.1f}", flush=True)
            done.append(job)
    return done


def summarise(runs: list[dict], configs: dict, threshold, random: float, curve: str = "curve") -> list[str]:
    solved_head = ("solved: –" if threshold is None else
                   f"solved (≥ {threshold:g}, held 2 more evals): first at env steps / held at minutes")
    lines = [f"| configuration | seeds | final return (mean ± std) | per seed | {solved_head} | process minutes |",
             "|---|---:|---:|---|---|---:|"]
    for label in configs:
        mine = sorted((r for r in runs if r["label"] == label), key=lambda r: r["seed"])
        finals = np.array([r[curve][-1][1] for r in mine])
        solved = [solved_at(r[curve], threshold) for r in mine]
        solved_txt = ", ".join("not solved" if s is None else f"{s[0]:,} / {s[1]:.1f}"
                               for s in solved) if threshold is not None else "–"
        lines.append(
            f"| {label} | {len(mine)} | {finals.mean():.1f} ± {finals.std():.1f} | "
            f"{', '.join(f'{v:.1f}' for v in finals)} | {solved_txt} | "
            f"{np.mean([r['minutes'] for r in mine]):.1f} |")
    lines.append(f"| uniform-random policy | – | {random:.1f} | | | |")
    return lines


def plot(runs: list[dict], configs: dict, random: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    kinds = [("curve", "", "-")]
    if has_sampled(runs):  # dashed, next to the greedy curves
        kinds = [("curve", ", greedy", "-"), ("curve_sample", ", sampled actions", "--")]
    for label in configs:
        for key, suffix, style in kinds:
            curves = [r[key] for r in runs if r["label"] == label]
            n = min(len(c) for c in curves)
            steps = np.array([s for s, _, _ in curves[0][:n]])
            values = np.array([[v for _, v, _ in c[:n]] for c in curves])
            minutes = np.array([[m for _, _, m in c[:n]] for c in curves]).mean(0)
            for ax, x in zip(axes, (steps, minutes)):
                line, = ax.plot(x, values.mean(0), style, marker="o", markersize=3,
                                label=f"{label}{suffix} (n={len(curves)})")
                ax.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    for ax, xlabel in zip(axes, ("env steps", "wall-clock minutes (mean over seeds)")):
        ax.axhline(random, color="gray", linestyle="--", label="uniform-random policy")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("eval return (mean, min-max band)")
        ax.set_title(title, fontsize=9)
    axes[0].legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="cartpole")
    p.add_argument("--config", nargs=2, action="append", metavar=("LABEL", "OVERRIDES"), default=[],
                   help="a configuration of your own (replaces the suite's; its env is the suite's)")
    p.add_argument("--override", action="append", default=[], help="added to every configuration")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--solve", type=float, default=None, help="default: the suite's threshold")
    p.add_argument("--random-episodes", type=int, default=20)
    p.add_argument("--out", default="runs/bench_learning")
    p.add_argument("--reuse", action="store_true",
                   help="keep runs in --out that an earlier invocation finished (process minutes: "
                        "the last evaluation's)")
    p.add_argument("--by-config", action="store_true",
                   help="all seeds of one configuration before the next (default: seed by seed)")
    args = p.parse_args(argv)
    if args.random_episodes < 1 or args.jobs < 1:
        p.error("--random-episodes and --jobs must be >= 1")
    env_overrides, configs, threshold = SUITES[args.suite]
    if args.config:
        configs = {label: shlex.split(overrides) for label, overrides in args.config}
    configs = {label: [*o, *args.override] for label, o in configs.items()}
    threshold = args.solve if args.solve is not None else threshold
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    random = random_return(env_overrides, episodes=args.random_episodes, seed=0)
    runs = run_all(configs, args.seeds, args.jobs, out, args.threads, args.device,
                   reuse=args.reuse, by_config=args.by_config)
    cmd = " ".join(["python", "scripts/bench_learning.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [f"`{cmd}` ({os.cpu_count()} CPUs, {args.jobs} run(s) at a time, {args.threads} torch "
             f"thread(s) each, device {args.device})", "",
             *summarise(runs, configs, threshold, random), ""]
    if has_sampled(runs):  # DreamerV3's own evaluation as well
        lines += ["Sampled actions (`eval/return_sample`, as DreamerV3 evaluates), the same runs:", "",
                  *summarise(runs, configs, threshold, random, curve="curve_sample"), ""]
    lines += ["Commands:", "", *(f"- `{r['cmd']}`" for r in runs)]
    table = "\n".join(lines)
    (out / "learning.md").write_text(table + "\n")
    plot(runs, configs, random, out / "learning_curves.png", f"{args.suite}: seeds {args.seeds}")
    print("\n" + table + f"\n\nwrote {out / 'learning.md'} and {out / 'learning_curves.png'}")


if __name__ == "__main__":
    from imwm.errors import run_main

    run_main(main)
