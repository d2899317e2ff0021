"""Benchmark: effect and cost of the intrinsic rewards and of the dormant-neuron monitor.

Effect. Trains with the real loop (``imwm.training.loop.run``) on the sparse-reward chain
``imwm/SparseChain-v0`` (``--chain`` cells, one-hot observations, ``--max-steps`` per episode, the
only reward at the far end; ``--obs pixels`` uses the 3x16x16 picture ``imwm/SparseChainPixels-v0``;
see ``imwm/envs/sparse_chain.py``) with ``intrinsic=none|adaptive|lexa_style|disagreement`` for
several seeds, each run in its own process, every method with the same settings. From each run's
replay (which keeps every step) it reports the state-visitation coverage (distinct cells visited /
cells) at a quarter, half and all of the budget, the furthest cell, the mean furthest cell per
episode in the last quarter (what the current policy does), the env step of the first reward, the
episodes that reached the goal after the random prefill, and the final greedy evaluation return.
A uniform random policy over the same number of env steps (simulated on the env, same seeds) is
the reference row. ``--figure`` plots coverage against env steps.

The learning rates default to 3e-4 for the world model, actor and critic (DreamerV3 uses 1e-4 /
3e-5 / 3e-5 for runs of millions of updates; at a few thousand updates its actor barely leaves the
uniform policy, which made an earlier 1,000-step version of this benchmark uninformative).

Overhead. In one process, on one fixed replay batch of the same config: the median wall time of
``agent.train_step`` with each intrinsic reward against ``none`` (alternating, after warm-up), and
of an update followed by a dormant measurement at every update (``DormantMonitor.maybe_measure``,
what the loop calls) or measured on the update itself (``DormantMonitor.step``) against off.

Prints markdown tables and the command used; ``--out`` also writes them to a file.

Example:
    python scripts/bench_intrinsic.py --jobs 2 --out runs/bench_intrinsic/RESULTS_intrinsic.md --figure docs/intrinsic_coverage.png
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("none", "adaptive", "lexa_style", "disagreement")
COVERAGE_AT = (0.25, 0.5, 1.0)  # fractions of the env-step budget in the table
CURVE_POINTS = 50  # coverage samples per run for the figure


def _task(args) -> str:
    return "imwm/SparseChainPixels-v0" if args.obs == "pixels" else "imwm/SparseChain-v0"


def _max_steps(args) -> int:
    return args.max_steps or 2 * args.chain


def _overrides(args, method: str, seed: int, run_dir: str) -> list[str]:
    return [
        "env.name=gym",
        f"env.task={_task(args)}",
        f"+env.kwargs.length={args.chain}",
        f"+env.kwargs.max_steps={_max_steps(args)}",
        f"intrinsic={method}",
        f"seed={seed}",
        f"run_dir={run_dir}",
        "resume=false",
        "logger=csv",
        f"threads={args.threads}",
        f"model.deter={args.deter}",
        f"model.hidden={args.deter}",
        f"model.stoch={args.stoch}",
        f"model.classes={args.stoch}",
        f"model.mlp_units={args.units}",
        "model.mlp_layers=1",
        f"model.cnn_depth={args.cnn_depth}",
        f"agent.model_lr={args.lr}",
        f"agent.actor_lr={args.lr}",
        f"agent.critic_lr={args.lr}",
        f"replay.batch_size={args.batch}",
        f"replay.batch_length={args.length}",
        f"replay.capacity={max(args.env_steps * 2, 1000)}",
        f"total_env_steps={args.env_steps}",
        f"prefill={args.prefill}",
        f"train_ratio={args.train_ratio}",
        "num_envs=1",
        f"frames_per_batch={args.frames_per_batch}",
        f"eval_every={args.env_steps}",
        "eval_episodes=1",
        f"eval_max_steps={_max_steps(args)}",
        f"checkpoint_every={args.env_steps}",
        f"log_every={max(1, args.env_steps // 10)}",
        *args.override,
    ]


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="imwm.configs", version_base=None):
        return compose(config_name="config", overrides=overrides)


# -- exploration statistics of one stream of cells ----------------------------------------------
def _exploration(cells, is_first, reward, moves, prefill: int, chain: int, budget: int) -> dict:
    """Statistics of one run's visited cells ``[N]`` with episode starts, rewards and the move
    (0 left, 1 right) that led to each record, in env-step order.

    A record that is not an episode start is one env step (the replay layout stores the reset
    observation as its own record), so ``env_step`` counts decisions as the loop does. Records
    past ``budget`` (the loop collects whole batches of ``frames_per_batch``) are left out.
    """
    import torch

    cells, is_first, reward, moves = cells.reshape(-1), is_first.reshape(-1), reward.reshape(-1), moves.reshape(-1)
    env_step = torch.cumsum((~is_first).long(), 0)
    keep = env_step <= budget
    cells, is_first, reward, moves, env_step = cells[keep], is_first[keep], reward[keep], moves[keep], env_step[keep]
    first_visit = torch.full((chain,), -1, dtype=torch.long)
    for c in cells.unique().tolist():  # the env step at which each cell was first seen
        first_visit[c] = env_step[cells == c].min()

    def coverage_at(step: int) -> float:
        return float(((first_visit >= 0) & (first_visit <= step)).sum()) / chain

    hits = torch.nonzero(reward > 0).flatten()
    episode = torch.cumsum(is_first.long(), 0)
    last_quarter = env_step > budget * 3 // 4
    per_episode_max = [int(cells[(episode == e) & last_quarter].max())
                       for e in episode[last_quarter].unique().tolist()]
    after_prefill = env_step > prefill
    # what the policy does at the start cell late in training: steps t-1 -> t inside the last quarter
    from_start = last_quarter[1:] & ~is_first[1:] & (cells[:-1] == 0)
    return {
        **{f"coverage@{f:g}": coverage_at(int(budget * f)) for f in COVERAGE_AT},
        "curve": [coverage_at(int(budget * (i + 1) / CURVE_POINTS)) for i in range(CURVE_POINTS)],
        "max_cell": int(cells.max()),
        "late_episode_max": statistics.mean(per_episode_max) if per_episode_max else None,
        "first_reward_step": int(env_step[hits[0]]) if hits.numel() else None,
        "goal_episodes_after_prefill": int((reward[after_prefill] > 0).sum()),
        "late_at_start": float((cells[last_quarter] == 0).float().mean()),
        "late_right_at_start": float((moves[1:][from_start] == 1).float().mean()) if from_start.any() else None,
    }


def _random_policy(args, seed: int) -> dict:
    """The same statistics for a uniform random policy over the same env-step budget."""
    import numpy as np
    import torch

    from imwm.envs.sparse_chain import SparseChainEnv

    env = SparseChainEnv(length=args.chain, max_steps=_max_steps(args))
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    cells, firsts, rewards, moves = [info["cell"]], [True], [0.0], [0]
    for _ in range(args.env_steps):
        move = int(rng.integers(2))
        _, r, terminated, truncated, info = env.step(move)
        cells.append(info["cell"]), firsts.append(False), rewards.append(r), moves.append(move)
        if terminated or truncated:
            _, info = env.reset()
            cells.append(info["cell"]), firsts.append(True), rewards.append(0.0), moves.append(0)
    out = _exploration(torch.tensor(cells), torch.tensor(firsts), torch.tensor(rewards), torch.tensor(moves),
                       args.prefill, args.chain, args.env_steps)
    return {"method": "random", "seed": seed, "eval_return": None, "wall_s": None, **out}


# -- one training run (child process) --------------------------------------------------------------
def _replay_statistics(args, run_dir: Path, seed: int) -> dict:
    """Exploration statistics of a finished run, read from the replay it saved (every step)."""
    import torch

    from imwm.envs.sparse_chain import cells_from_observations  # also registers the env ids
    from imwm.training.build_replay import build_replay
    from imwm.training.config import to_plain
    from imwm.training.snapshot import load_replay

    plain = to_plain(_compose(_overrides(args, "none", seed, str(run_dir))))
    buffer = build_replay(**plain["replay"], device="cpu", seed=seed)
    load_replay(buffer, run_dir / "replay")
    data = buffer.storage[: len(buffer)]
    cells = torch.as_tensor(cells_from_observations(data["observation"].numpy(), args.chain))
    moves = data["action"].argmax(-1)  # one-hot [left, right]; the zero action of a reset is ignored
    return _exploration(cells, data["is_first"], data["reward"], moves, args.prefill, args.chain, args.env_steps)


def _single(args) -> None:
    import torch

    import imwm.envs.sparse_chain  # noqa: F401  (registers the env ids)
    from imwm.training.loop import run

    method, seed = args.single[0], int(args.single[1])
    run_dir = Path(args.workdir) / f"{method}-s{seed}"
    cfg = _compose(_overrides(args, method, seed, str(run_dir)))
    t0 = time.perf_counter()
    summary = run(cfg)
    wall = time.perf_counter() - t0
    result = {
        "method": method,
        "seed": seed,
        **_replay_statistics(args, run_dir, seed),
        "eval_return": float(summary["eval_return"]),
        "env_steps": int(summary["env_steps"]),
        "updates": int(summary["updates"]),
        "wall_s": wall,
    }
    # the transform's final running statistics (scale, mix, ...) from the checkpoint's agent state
    saved = torch.load(summary["checkpoint"], weights_only=True)
    result["intrinsic_state"] = {
        k.removeprefix("intrinsic."): float(v)
        for k, v in saved["agent"].items()
        if k.startswith("intrinsic.") and torch.is_tensor(v) and v.ndim == 0 and v.is_floating_point()
    }
    Path(args.result).write_text(json.dumps(result))


def _tabulate(args) -> list[dict]:
    """Results of the runs already in ``--workdir``, statistics recomputed from their replays."""
    results = []
    for seed in args.seeds:
        for method in args.methods:
            path = Path(args.workdir, f"{method}-s{seed}.json")
            if path.exists():
                saved = json.loads(path.read_text())
                saved.update(_replay_statistics(args, Path(args.workdir) / f"{method}-s{seed}", seed))
                results.append(saved)
    return results


def _effect(args) -> list[dict]:
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    results, running = [], []
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    passthrough = _child_args(args)
    while jobs or running:
        while jobs and len(running) < args.jobs:
            method, seed = jobs.pop(0)
            result = workdir / f"{method}-s{seed}.json"
            log = open(workdir / f"{method}-s{seed}.log", "w")
            cmd = [sys.executable, __file__, "--single", method, str(seed), "--result", str(result), *passthrough]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), result, log, method, seed))
        time.sleep(1.0)
        for item in list(running):
            proc, result, log, method, seed = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            if proc.returncode == 0 and result.exists():
                results.append(json.loads(result.read_text()))
                r = results[-1]
                print(f"  done {method} seed {seed}: coverage {r['coverage@1']:.2f}, furthest {r['max_cell']}, "
                      f"first reward {r['first_reward_step']}, {r['wall_s']:.0f} s", flush=True)
            else:
                print(f"  FAILED {method} seed {seed} (rc {proc.returncode}); see {log.name}", flush=True)
                results.append({"method": method, "seed": seed, "failed": True})
    return results


_CHILD_OPTIONS = ("obs", "chain", "max_steps", "workdir", "threads", "env_steps", "prefill", "train_ratio", "batch",
                  "length", "deter", "stoch", "units", "cnn_depth", "frames_per_batch", "lr")


def _child_args(args) -> list[str]:
    out = []
    for name in _CHILD_OPTIONS:
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for o in args.override:
        out += ["--override", o]
    return out


def _mean_sd(values, digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _effect_table(results: list[dict], args) -> str:
    lines = [
        f"Effect on `{_task(args)}` ({args.chain} cells, {_max_steps(args)} steps per episode, reward only at cell "
        f"{args.chain - 1}), {args.env_steps} env steps ({args.prefill} random prefill), train_ratio "
        f"{args.train_ratio:g} (batch {args.batch}x{args.length}), learning rates {args.lr:g}, seeds "
        f"{list(args.seeds)}; mean ± sd over seeds (first reward: median over the seeds that found it).",
        "",
        "| intrinsic | coverage @25% | coverage @50% | coverage @100% | furthest cell | furthest per episode, last 25% "
        "| seeds with a reward | first reward (env step) | goal episodes after prefill | greedy return | min/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in ("random", *args.methods):
        rs = [r for r in results if r["method"] == m and not r.get("failed")]
        failed = sum(1 for r in results if r["method"] == m and r.get("failed"))
        if not rs:
            lines.append(f"| {m} | failed ({failed}) |" + " |" * 10)
            continue
        firsts = [r["first_reward_step"] for r in rs if r["first_reward_step"] is not None]
        first = f"{statistics.median(firsts):.0f}" if firsts else "never"
        walls = [r["wall_s"] for r in rs if r["wall_s"] is not None]
        name = "uniform random policy" if m == "random" else m
        wall = f"{statistics.mean(walls) / 60:.1f}" if walls else "-"
        lines.append(
            f"| {name} | " + " | ".join(_mean_sd([r[f"coverage@{f:g}"] for r in rs]) for f in COVERAGE_AT)
            + f" | {_mean_sd([r['max_cell'] for r in rs], 1)} | {_mean_sd([r['late_episode_max'] for r in rs], 1)} "
            f"| {len(firsts)}/{len(rs)} | {first} | {_mean_sd([r['goal_episodes_after_prefill'] for r in rs], 1)} "
            f"| {_mean_sd([r['eval_return'] for r in rs])} | {wall} |"
        )
        if failed:
            lines[-1] += f" ({failed} failed)"
    lines += ["", "Per seed (coverage @100% / furthest cell / first reward step / share of last-25% steps at the "
              "start cell / P(right | start cell) there):", ""]
    for m in ("random", *args.methods):
        rs = sorted((r for r in results if r["method"] == m and not r.get("failed")), key=lambda r: r["seed"])
        cells = "; ".join(
            f"s{r['seed']}: {r['coverage@1']:.2f} / {r['max_cell']} / {r['first_reward_step']} / "
            f"{r['late_at_start']:.2f} / " + ("-" if r["late_right_at_start"] is None else f"{r['late_right_at_start']:.2f}")
            for r in rs
        )
        lines.append(f"- {m}: {cells}")
    lines += ["", _fisher_line(results, args.methods)]
    for m in args.methods:
        states = [r["intrinsic_state"] for r in results if r["method"] == m and r.get("intrinsic_state")]
        if states:
            keys = [k for k in states[0] if k in ("scale", "mix", "reward_ema", "last_intrinsic_mean",
                                                  "last_weight_mean", "last_visual_mean", "last_loss",
                                                  "last_disagreement")]
            stats = ", ".join(f"{k} {statistics.mean(s[k] for s in states):.3g}" for k in keys)
            lines.append(f"\nFinal `{m}` statistics (mean over seeds): {stats}.")
    return "\n".join(lines)


def _fisher_line(results: list[dict], methods) -> str:
    """Seeds that reached the goal, each method against ``none``: Fisher's exact test (two-sided)."""
    try:
        from scipy.stats import fisher_exact
    except ImportError:  # scipy comes with the dev extras
        return "(Fisher's exact test needs scipy)"

    def found(m):
        rs = [r for r in results if r["method"] == m and not r.get("failed")]
        return sum(r["first_reward_step"] is not None for r in rs), len(rs)

    if "none" not in methods:
        return ""
    base_hit, base_n = found("none")
    parts = []
    for m in methods:
        hit, n = found(m)
        if m != "none" and n and base_n:
            p = fisher_exact([[hit, n - hit], [base_hit, base_n - base_hit]])[1]
            parts.append(f"{m} {hit}/{n} vs none {base_hit}/{base_n}: p = {p:.3f}")
    return "Seeds that reached the goal, Fisher's exact test against none (two-sided): " + "; ".join(parts) + "."


def _figure(results: list[dict], args, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = [args.env_steps * (i + 1) / CURVE_POINTS for i in range(CURVE_POINTS)]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for m in ("random", *args.methods):
        curves = np.array([r["curve"] for r in results if r["method"] == m and not r.get("failed")])
        if not len(curves):
            continue
        mean = curves.mean(0)
        ax.plot(steps, mean, label="uniform random" if m == "random" else m, ls="--" if m == "random" else "-")
        if len(curves) > 1:
            ax.fill_between(steps, curves.min(0), curves.max(0), alpha=0.15)
    ax.axvline(args.prefill, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"cells visited / {args.chain}")
    ax.set_title(f"SparseChain ({args.chain} cells): coverage, mean and range over {len(args.seeds)} seeds", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- overhead (in process) --------------------------------------------------------------------------
def _replay_batch(batch: int, length: int, action_dim: int, seed: int, pixels: bool, chain: int):
    """A replay batch in the record layout of docs/architecture.md, from random walks on the chain."""
    import torch
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)
    moves = torch.randint(0, action_dim, (batch, length), generator=g)
    step = torch.where(moves == 1, 1, -1)
    cells = torch.cumsum(step, 1).clamp(0, chain - 1)
    action = torch.nn.functional.one_hot(moves, action_dim).float()
    is_first = torch.zeros(batch, length, 1, dtype=torch.bool)
    is_first[:, 0] = True
    action[:, 0] = 0.0
    if pixels:
        from imwm.envs.sparse_chain import SparseChainEnv

        env = SparseChainEnv(length=chain, pixels=True)
        frames = []
        for cell in cells.flatten().tolist():
            env._cell = cell
            frames.append(torch.from_numpy(env._obs()))
        observation = torch.stack(frames).reshape(batch, length, 3, 16, 16)
    else:
        observation = torch.nn.functional.one_hot(cells, chain).float()
    return TensorDict(
        {
            "observation": observation,
            "action": action,
            "reward": (cells == chain - 1).float().unsqueeze(-1),
            "is_first": is_first,
            "is_terminal": torch.zeros(batch, length, 1, dtype=torch.bool),
            "is_last": torch.zeros(batch, length, 1, dtype=torch.bool),
        },
        [batch, length],
    )


def _overhead(args) -> str:
    import torch

    import imwm.envs.sparse_chain  # noqa: F401
    from imwm.training.build_intrinsic import build_dormant, build_intrinsic
    from imwm.training.build_model import build_agent

    torch.set_num_threads(args.threads)
    obs_shape, action_dim = ((3, 16, 16) if args.obs == "pixels" else (args.chain,)), 2
    agents = {}
    scratch = tempfile.TemporaryDirectory()  # run_dir of the composed configs; nothing is written there
    for m in args.methods:
        cfg = _compose(_overrides(args, m, 0, scratch.name))
        torch.manual_seed(0)
        agent = build_agent(cfg, obs_shape=obs_shape, action_dim=action_dim, device="cpu")
        agent.intrinsic = build_intrinsic(cfg.intrinsic, agent)
        agents[m] = agent
    batch = _replay_batch(args.batch, args.length, action_dim, seed=0, pixels=args.obs == "pixels", chain=args.chain)
    cfg_none = _compose(_overrides(args, "none", 0, scratch.name))
    torch.manual_seed(0)
    dormant_agent = build_agent(cfg_none, obs_shape=obs_shape, action_dim=action_dim, device="cpu")
    dormant_cfg = {"enable": True, "tau": 0.025, "every": 1, "redo": {"enable": False, "reset_period": 1000}}
    monitor = build_dormant(dormant_cfg, dormant_agent)

    def update(m):
        return agents[m].train_step(batch)

    variants = {f"intrinsic={m}": (lambda m=m: update(m)) for m in args.methods}
    counter = {"n": 0}

    def dormant_off():
        return dormant_agent.train_step(batch)

    def dormant_measure():
        counter["n"] += 1
        out = dormant_agent.train_step(batch)
        assert monitor.maybe_measure(batch, counter["n"])
        return out

    def dormant_hooks():
        counter["n"] += 1
        out = monitor.step(counter["n"], dormant_agent.train_step, batch)
        assert monitor.pop_metrics()
        return out

    variants.update({"dormant off": dormant_off, "dormant every update (maybe_measure)": dormant_measure,
                     "dormant every update (hooks on the update)": dormant_hooks})
    times = {k: [] for k in variants}
    for _ in range(args.warmup):
        for fn in variants.values():
            fn()
    for _ in range(args.repeats):
        for name, fn in variants.items():  # alternate so CPU contention hits all alike
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    lines = [
        f"Update time (median of {args.repeats} after {args.warmup} warm-up, alternating), batch "
        f"{args.batch}x{args.length}, horizon 15, model deter {args.deter}, {args.stoch}x{args.stoch} latents, "
        f"MLP {args.units}, cnn depth {args.cnn_depth}, {args.threads} thread(s), "
        f"{'uint8 [3,16,16]' if args.obs == 'pixels' else f'vector [{args.chain}]'} observations.",
        "",
        "| variant | ms / update | ratio |",
        "|---|---|---|",
    ]
    for m in args.methods:
        k = f"intrinsic={m}"
        lines.append(f"| {k} | {med[k]:.1f} | {med[k] / med['intrinsic=none']:.2f}x vs none |")
    for k in ("dormant off", "dormant every update (maybe_measure)", "dormant every update (hooks on the update)"):
        lines.append(f"| {k} | {med[k]:.1f} | {med[k] / med['dormant off']:.2f}x vs off |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--chain", type=int, default=30, help="cells of the chain")
    p.add_argument("--max-steps", type=int, default=0, help="steps per episode (0: 2 x chain)")
    p.add_argument("--env-steps", type=int, default=5000)
    p.add_argument("--prefill", type=int, default=500)
    p.add_argument("--train-ratio", type=float, default=128.0, help="128 = one update per 2 env steps at batch 16x16")
    p.add_argument("--lr", type=float, default=3e-4, help="world-model, actor and critic learning rate")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=16)
    p.add_argument("--deter", type=int, default=32)
    p.add_argument("--stoch", type=int, default=4)
    p.add_argument("--units", type=int, default=32)
    p.add_argument("--cnn-depth", type=int, default=8)
    p.add_argument("--obs", choices=("pixels", "vector"), default="vector",
                   help="chain observed as a one-hot vector or as a 3x16x16 picture (chain <= 64)")
    p.add_argument("--frames-per-batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="training runs in parallel (one process each)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--skip-effect", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--tabulate", action="store_true",
                   help="no training: tabulate the runs already finished in --workdir (<method>-s<seed>.json)")
    p.add_argument("--override", action="append", default=[], help="extra Hydra override for every run")
    p.add_argument("--workdir", default=str(ROOT / "runs" / "bench_intrinsic"))
    p.add_argument("--out", default=None, help="also write the tables to this markdown file")
    p.add_argument("--figure", default=None, help="also plot coverage against env steps to this PNG")
    p.add_argument("--single", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.chain < 2 or (args.obs == "pixels" and args.chain > 64):
        p.error(f"--chain must be >= 2 (<= 64 with --obs pixels), got {args.chain}")
    if args.single:
        _single(args)
        return
    command = "python scripts/bench_intrinsic.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    sections = []
    if not args.skip_effect:
        print(f"effect runs: {len(args.methods)} methods x {len(args.seeds)} seeds, {args.jobs} at a time", flush=True)
        t0 = time.perf_counter()
        results = _tabulate(args) if args.tabulate else _effect(args)
        results += [_random_policy(args, seed) for seed in args.seeds]
        sections.append(_effect_table(results, args))
        if args.figure:
            _figure(results, args, args.figure)
        Path(args.workdir, "effect.json").write_text(json.dumps(results, indent=1))
        print(f"effect runs took {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    if not args.skip_overhead:
        sections.append(_overhead(args))
    report = "\n\n".join(sections) + f"\n\nCommand: `{command}`\n"
    print("\n" + report)
    if args.out:
        Path(args.out).write_text(report)
    if not args.skip_effect and any(r.get("failed") for r in results):
        sys.exit(f"{sum(bool(r.get('failed')) for r in results)} training run(s) failed; see their logs in {args.workdir}")


if __name__ == "__main__":
    from imwm.errors import run_main

    run_main(main)  # a user error (bad config value, unknown task) is one line, exit status 2
