"""The training loop, ``run(cfg)``: DreamerV3 (Hafner et al., 2023) data collection and updates.

Steps: validate the config -> build env, agent (``imwm.training.build_model.build_agent``),
replay (``imwm.training.build_replay.build_replay``), intrinsic reward and dormant monitor
(``imwm.training.build_intrinsic``) -> resume from ``run_dir/checkpoints/latest.pt`` if present ->
TorchRL ``Collector`` (random actions for the first ``prefill`` env steps) -> for every collector
batch: convert to replay records (:class:`~imwm.training.layout.DreamerRecordLayout`), extend the
buffer, run ``train_ratio / (batch_size * batch_length)`` updates per env step (fractional credit
carried over), feed the per-sequence signals back to the sampler, evaluate greedily, log and
checkpoint.

Resuming restores weights, optimisers, replay contents and sampler state, counters (env steps,
updates, update credit, episode ids) and RNG states. Env episodes in progress at the checkpoint
are not restored: the envs start new episodes (the replay's unfinished episode simply has no
``is_last`` record, as a truncation would).
"""
from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.collectors import Collector

from imwm.envs import make_env
from imwm.training.checkpoint import (load_checkpoint, load_replay, rng_state, save_checkpoint,
                                      save_replay, set_rng_state)
from imwm.training.build_intrinsic import build_dormant, build_intrinsic
from imwm.training.build_model import build_agent
from imwm.training.build_replay import build_replay, replay_feedback, replay_metrics
from imwm.training.config import config_changes, shape_mismatches, validate_config
from imwm.training.evaluate import evaluate
from imwm.training.layout import DreamerRecordLayout, finished_episodes
from imwm.training.logging import RunLogger

__all__ = ["run"]


def _as_dictconfig(plain: dict):
    from omegaconf import OmegaConf

    return OmegaConf.create(plain)


def _write_config(run_dir: Path, plain: dict) -> Path:
    from omegaconf import OmegaConf

    path = run_dir / "config.yaml"
    tmp = path.with_name("config.yaml.tmp")
    OmegaConf.save(OmegaConf.create(plain), tmp)
    os.replace(tmp, path)
    return path


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _module_state(obj) -> dict | None:
    return None if obj is None or not hasattr(obj, "state_dict") else obj.state_dict()


class _MetricMeans:
    """Sums 0-d metric tensors without host syncs; ``.pop()`` converts once per log row.

    Counts are kept per key: metrics measured only now and then (dormant ratios) are averaged
    over their own measurements.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            v = torch.as_tensor(v).detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def pop(self) -> dict[str, float]:
        out = {k: (v / self.counts[k]).item() for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        return out


def run(cfg) -> dict[str, Any]:
    """Trains an agent as the config says; returns a summary (paths, counters, last eval).

    Args:
        cfg: the composed Hydra config (``DictConfig``) or an equivalent plain dict.

    Returns:
        ``{"run_dir", "checkpoint", "metrics", "config", "env_steps", "updates", "eval_return"}``.
    """
    plain = validate_config(cfg)
    cfg = _as_dictconfig(plain)
    run_dir = Path(plain["run_dir"])
    ckpt_path = run_dir / "checkpoints" / "latest.pt"
    saved = None
    if ckpt_path.exists():
        if not plain["resume"]:
            raise ValueError(
                f"{run_dir} already holds a checkpoint ({ckpt_path}); pass resume=true to continue "
                "it or choose another run_name / run_dir"
            )
        saved = load_checkpoint(ckpt_path)
        diffs = shape_mismatches(saved["config"], plain)
        if diffs:
            raise ValueError(
                f"refusing to resume {ckpt_path}: model-shape config differs from the saved run: "
                + "; ".join(diffs)
            )
        changes = config_changes(saved["config"], plain)
        if changes:  # allowed (e.g. a longer total_env_steps), but never silent
            print("[imwm] resuming with changed config: " + "; ".join(changes))
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = _write_config(run_dir, plain)

    seed = plain["seed"]
    _seed_everything(seed)
    if plain["threads"]:
        torch.set_num_threads(plain["threads"])
    device = torch.device(plain["device"])
    num_envs = plain["num_envs"]
    env_kwargs = dict(plain["env"])

    env = make_env(**env_kwargs, num_envs=num_envs, seed=seed)
    obs_shape = tuple(env.observation_spec["observation"].shape[1:])
    action_dim = int(env.action_spec.shape[-1])

    agent = build_agent(cfg, obs_shape=obs_shape, action_dim=action_dim, device=device)
    replay = plain["replay"]
    batch_size, batch_length = replay["batch_size"], replay["batch_length"]
    # one storage ring per env, so every env's records stay contiguous and give full slices
    buffer = build_replay(**replay, num_streams=num_envs, device="cpu", seed=seed)
    intrinsic = build_intrinsic(cfg.intrinsic, agent)
    dormant = build_dormant(cfg.dormant, agent)
    agent.intrinsic = intrinsic
    layout = DreamerRecordLayout(num_envs)

    counters = {"env_steps": 0, "updates": 0, "update_credit": 0.0, "episodes": 0,
                "last_eval": 0, "last_log": 0, "last_checkpoint": 0}
    run_id = None
    if saved is not None:
        agent.load_state_dict(saved["agent"])
        agent.load_optimizers_state_dict(saved["optimizers"])
        if intrinsic is not None and saved.get("intrinsic") is not None:
            intrinsic.load_state_dict(saved["intrinsic"])
        if saved.get("intrinsic_optimizer") is not None:
            intrinsic.load_optimizer_state_dict(saved["intrinsic_optimizer"])
        load_replay(buffer, run_dir / "replay")
        if saved.get("sampler"):
            buffer.sampler.load_state_dict(saved["sampler"])
        layout.load_state_dict(saved["layout"])
        counters.update(saved["counters"])
        run_id = saved.get("logger", {}).get("run_id")
        set_rng_state(saved["rng"])
        print(f"[imwm] resumed {ckpt_path} at env step {counters['env_steps']}, "
              f"update {counters['updates']} (env episodes restart)")

    total = plain["total_env_steps"]
    log = RunLogger(run_dir, **plain["logger"], run_name=plain["run_name"], total_env_steps=total,
                    start_step=counters["env_steps"], run_id=run_id)
    eval_env = None
    if plain["eval_every"] or plain["eval_episodes"]:
        eval_env = make_env(**env_kwargs, num_envs=plain["eval_episodes"], seed=seed + 10_000)

    def checkpoint() -> Path:
        # Checkpoint first, replay second: a crash between the two leaves a replay *older* than
        # the counters (some data lost), never newer (which could reuse episode ids).
        counters["last_checkpoint"] = counters["env_steps"]
        sampler_state = buffer.sampler.state_dict() if hasattr(buffer.sampler, "state_dict") else {}
        state = {
            "agent": agent.state_dict(),
            "optimizers": agent.optimizers_state_dict(),
            "intrinsic": _module_state(intrinsic),
            # Plan2Explore's ensemble learns with its own Adam
            "intrinsic_optimizer": (intrinsic.optimizer_state_dict()
                                    if hasattr(intrinsic, "optimizer_state_dict") else None),
            "sampler": sampler_state,
            "layout": layout.state_dict(),
            "counters": dict(counters),
            "rng": rng_state(),
            "config": plain,
            "logger": {"run_id": log.run_id},
        }
        path = save_checkpoint(ckpt_path, state)
        save_replay(buffer, run_dir / "replay")
        return path

    def run_eval() -> dict[str, float]:
        policy = agent.policy(plain["eval_episodes"], action_dtype=eval_env.action_spec.dtype)
        result = evaluate(eval_env, policy, max_steps=plain["eval_max_steps"])
        mean = result["returns"].mean().item()
        counters["last_eval"] = counters["env_steps"]
        tqdm_write(f"[imwm] eval at env step {counters['env_steps']}: return {mean:.1f} "
                   f"({plain['eval_episodes']} episodes)")
        return {"eval/return": mean,
                "eval/return_std": result["returns"].std(unbiased=False).item(),
                "eval/length": result["lengths"].mean().item(),
                "eval/truncated": result["truncated"].float().mean().item()}

    updates_per_step = plain["train_ratio"] / (batch_size * batch_length)
    prefill_left = max(0, plain["prefill"] - counters["env_steps"])
    frames_per_batch = plain["frames_per_batch"]
    collector = None
    eval_return = float("nan")
    means = _MetricMeans()
    ep_returns: list[float] = []
    ep_lengths: list[float] = []
    t_start = time.perf_counter()
    window = {"time": t_start, "steps": counters["env_steps"], "updates": counters["updates"]}
    try:
        if counters["env_steps"] < total:
            collector = Collector(
                env, agent.policy(num_envs, action_dtype=env.action_spec.dtype),
                frames_per_batch=frames_per_batch, total_frames=-1,
                init_random_frames=(
                    math.ceil(prefill_left / frames_per_batch) * frames_per_batch or None
                ),
                policy_device=device, env_device="cpu", storing_device="cpu",
            )
            for batch in collector:
                before = counters["env_steps"]
                _consume(batch, layout, buffer, counters, ep_returns, ep_lengths, log)
                reward = batch.get(("next", "reward"))
                # Only env steps after the prefill earn updates.
                prefill = plain["prefill"]
                earned = max(0, counters["env_steps"] - prefill) - max(0, before - prefill)
                if earned:
                    counters["update_credit"] += earned * updates_per_step
                    while counters["update_credit"] >= 1.0:
                        counters["update_credit"] -= 1.0
                        sample, info = buffer.sample(return_info=True)
                        sample = sample.reshape(batch_size, batch_length).to(device)
                        metrics, signals = agent.train_step(sample)
                        replay_feedback(buffer, info, signals, reward=reward)
                        reward = None  # collected rewards feed the trend gate once
                        counters["updates"] += 1
                        means.add(metrics)
                        if dormant is not None and hasattr(dormant, "maybe_measure"):
                            dormant_metrics = dormant.maybe_measure(sample, counters["updates"])
                            if dormant_metrics:
                                means.add(dormant_metrics)
                steps = counters["env_steps"]
                log.progress(steps, counters["updates"])
                row: dict[str, float] = {}
                if plain["log_every"] and steps - counters["last_log"] >= plain["log_every"]:
                    now = time.perf_counter()
                    dt = now - window["time"]
                    row.update(means.pop())
                    row.update({
                        "train/updates": counters["updates"],
                        "train/episodes": counters["episodes"],
                        "train/env_steps_per_s": (steps - window["steps"]) / dt,
                        "train/updates_per_s": (counters["updates"] - window["updates"]) / dt,
                        "train/buffer_size": len(buffer),
                        "train/minutes": (now - t_start) / 60,
                    })
                    window.update(time=now, steps=steps, updates=counters["updates"])
                    if ep_returns:
                        row["train/episode_return"] = float(np.mean(ep_returns))
                        row["train/episode_length"] = float(np.mean(ep_lengths))
                        ep_returns.clear()
                        ep_lengths.clear()
                    row.update({k: float(v) for k, v in replay_metrics(buffer).items()})
                    counters["last_log"] = steps
                if eval_env is not None and plain["eval_every"] and \
                        steps - counters["last_eval"] >= plain["eval_every"]:
                    row.update(run_eval())
                    eval_return = row["eval/return"]
                if row:
                    log.log(row, steps)
                if plain["checkpoint_every"] and \
                        steps - counters["last_checkpoint"] >= plain["checkpoint_every"]:
                    checkpoint()
                if steps >= total:
                    break
        if eval_env is not None and counters["last_eval"] != counters["env_steps"]:
            row = run_eval()
            eval_return = row["eval/return"]
            log.log(row, counters["env_steps"])
        path = checkpoint()
    except KeyboardInterrupt:
        path = checkpoint()
        tqdm_write(f"[imwm] interrupted at env step {counters['env_steps']}; checkpoint saved")
        raise
    finally:
        if collector is not None:
            collector.shutdown()
        log.close()
        for e in (env, eval_env):
            if e is not None and not e.is_closed:
                e.close()
    summary = {
        "run_dir": str(run_dir),
        "checkpoint": str(path),
        "metrics": str(log.metrics_path),
        "config": str(config_path),
        "env_steps": counters["env_steps"],
        "updates": counters["updates"],
        "eval_return": eval_return,
    }
    print(f"[imwm] run folder: {run_dir}\n[imwm] checkpoint: {path}\n"
          f"[imwm] metrics: {log.metrics_path}\n[imwm] config: {config_path}\n"
          f"[imwm] env steps: {counters['env_steps']}, updates: {counters['updates']}, "
          f"last eval return: {eval_return:.1f}")
    return summary


def _consume(batch: TensorDictBase, layout, buffer, counters, ep_returns, ep_lengths, log) -> None:
    records = layout(batch)
    buffer.extend(records)
    counters["env_steps"] += batch.numel()
    returns, lengths = finished_episodes(batch)
    if returns.numel():
        counters["episodes"] += returns.numel()
        ep_returns.extend(returns.tolist())
        ep_lengths.extend(lengths.tolist())
        log.episode_returns(returns.tolist())


def tqdm_write(msg: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(msg)
    except ImportError:  # pragma: no cover
        print(msg)
