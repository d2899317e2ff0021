"""The training loop, ``run(cfg)``: DreamerV3 (Hafner et al., 2023) data collection and updates.

``run`` validates the config, builds a :class:`Trainer` and drives it through named phases:

- **setup**: env, agent (``imwm.training.build_model.build_agent``), replay
  (``imwm.training.build_replay.build_replay``), intrinsic reward and dormant monitor
  (``imwm.training.build_intrinsic``); then **resume** from the run folder's newest checkpoint
  whose replay snapshot verifies (:class:`~imwm.training.checkpoint.RunCheckpoint`);
- per collector batch (:func:`imwm.training.collectors.make_collector`: TorchRL's ``Collector``,
  ``AsyncCollector``, ``MultiSyncCollector``, ``MultiAsyncCollector`` or ``DistributedCollector``;
  random actions for the first ``prefill`` env steps): **collect** (convert to replay records with
  :class:`~imwm.training.layout.DreamerRecordLayout`, env ``i`` into replay stream ``i``, extend
  the buffer), **update** (``train_ratio / (batch_size * batch_length)`` updates per env
  step, fractional credit carried over, per-sequence signals fed back to the sampler),
  **evaluate** greedily, **log**, **checkpoint**.

Resuming restores weights, optimisers, replay contents and sampler state, counters (env steps,
updates, update credit, episode ids) and RNG states. Env episodes in progress at the checkpoint
are not restored: the envs start new episodes (the replay's unfinished episode simply has no
``is_last`` record, as a truncation would). The run folder's ``config.yaml`` is written once;
a later start with other values writes the differences beside it (``config.changes-<k>.yaml``).

A non-finite loss or gradient skips that update (the agent counts it); too many in a row stop the
run with :class:`~imwm.agent.optimization.NonFiniteUpdateError` and no checkpoint is written from the
diverged state (checkpoints refuse non-finite values anyway).
"""
from __future__ import annotations

import math
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType

from imwm.agent.optimization import NonFiniteUpdateError
from imwm.envs import make_env
from imwm.training.build_intrinsic import build_dormant, build_intrinsic
from imwm.training.build_model import build_agent
from imwm.training.build_replay import build_replay, replay_feedback, replay_metrics
from imwm.training.checkpoint import CheckpointError, RunCheckpoint, rng_state, set_rng_state
from imwm.training.collectors import batch_envs, make_collector, worker_env
from imwm.training.config import config_changes, shape_mismatches, validate_config
from imwm.training.distributed import DistributedContext, parameter_digest
from imwm.training.evaluate import evaluate
from imwm.training.history import record_config
from imwm.training.identity import identity_changes
from imwm.training.layout import DreamerRecordLayout, finished_episodes
from imwm.training.logging import RunLogger

__all__ = ["run", "Trainer"]

# Keys every resumable checkpoint holds.
CHECKPOINT_KEYS = ("agent", "optimizers", "layout", "counters", "rng", "config")
# A finite loss above this is reported once: the run is probably diverging.
LOSS_WARNING = 1e6


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


class Trainer:
    """One training run's components and counters, with one method per phase.

    Args:
        plain: the validated plain config (:func:`imwm.training.config.validate_config`).
    """

    def __init__(self, plain: dict):
        from omegaconf import OmegaConf

        self.t_created = time.perf_counter()  # eval/minutes counts from here (resumes restart it)
        self.plain = plain
        cfg = OmegaConf.create(plain)
        self.run_dir = Path(plain["run_dir"])
        self.store = RunCheckpoint(self.run_dir, required=CHECKPOINT_KEYS)
        self.saved_candidates, self.saved_reasons = self._read_saved()

        _seed_everything(plain["seed"])
        if plain["threads"]:
            torch.set_num_threads(plain["threads"])
        self.device = torch.device(plain["device"])
        self.dist = DistributedContext.from_env()  # torchrun: one rank per process
        self.dist.init(self.device)
        self.env_seed = plain["seed"] + 1000 * self.dist.rank  # each rank its own episodes
        self.num_envs = plain["num_envs"]
        self.env_kwargs = dict(plain["env"])
        # (with EnvIndex, as every collector worker's envs: batches say which envs they hold)
        self.env = worker_env(self.env_kwargs, first=0, num_envs=self.num_envs, seed=self.env_seed)
        obs_shape = tuple(self.env.observation_spec["observation"].shape[1:])
        action_dim = int(self.env.action_spec.shape[-1])
        self.agent = build_agent(cfg, obs_shape=obs_shape, action_dim=action_dim, device=self.device)
        replay = plain["replay"]
        self.batch_size, self.batch_length = replay["batch_size"], replay["batch_length"]
        # one storage ring per env, so every env's records stay contiguous and give full slices
        self.buffer = build_replay(**replay, num_streams=self.num_envs, device="cpu",
                                   seed=self.env_seed)
        if self.dist.enabled:
            self.dist.broadcast_parameters(self.agent)
            self.agent.gradient_sync = self.dist.average_gradients
        self.intrinsic = build_intrinsic(cfg.intrinsic, self.agent)
        self.dormant = build_dormant(cfg.dormant, self.agent)
        self.agent.intrinsic = self.intrinsic
        # env i's records go to replay stream i, whichever collector worker steps it
        self.layout = DreamerRecordLayout(self.num_envs, stream_key="stream" if self.num_envs > 1 else None)
        self.counters = {"env_steps": 0, "updates": 0, "update_credit": 0.0, "episodes": 0,
                         "last_eval": 0, "last_log": 0, "last_checkpoint": 0}
        self.means = _MetricMeans()
        self.ep_returns: list[float] = []
        self.ep_lengths: list[float] = []
        self.eval_return = float("nan")
        self.warned_losses: set[str] = set()
        # seconds waiting for batches / storing and updating on them / pushing weights to workers
        self.waits = {"collector": 0.0, "learner": 0.0, "push": 0.0}
        self.log: RunLogger | None = None
        self.eval_env = None

    # ------------------------------------------------------------------ resume
    def _read_saved(self) -> tuple[list, list[str]]:
        """Readable checkpoints of the run folder, checked against this config and ``resume``.

        ``resume=false`` refuses any checkpoint; ``auto`` (the default) only one whose config
        defines the same run (:func:`imwm.training.identity.identity_changes`: budget, logging and
        execution keys may differ); ``true`` any whose model shapes match.
        """
        if not self.store.exists():
            return [], []
        resume = self.plain["resume"]
        again = "choose another run_name / run_dir"
        if resume is False:
            raise CheckpointError(f"{self.run_dir} already holds a checkpoint and resume=false; pass "
                                  f"resume=auto to continue it or {again}")
        candidates, reasons = self.store.candidates()
        if not candidates:
            raise CheckpointError(f"cannot resume {self.run_dir}: " + "; ".join(reasons))
        saved = candidates[0][1]["config"]
        diffs = shape_mismatches(saved, self.plain)
        if diffs:
            raise CheckpointError(
                f"refusing to resume {candidates[0][0]}: model-shape config differs from the "
                f"saved run: {'; '.join(diffs)}; {again}"
            )
        if resume == "auto":
            changed = identity_changes(saved, self.plain)
            if changed:
                raise CheckpointError(
                    f"refusing to resume {self.run_dir} (resume=auto): its run was trained with "
                    f"another config: {'; '.join(changed)}; pass resume=true to continue it with "
                    f"these changes (recorded in config.changes-<k>.yaml) or {again}"
                )
        return candidates, reasons

    def resume(self) -> str | None:
        """Loads the newest usable checkpoint/replay pair; returns the logger's run id."""
        if not self.saved_candidates:
            return None
        path, saved = self.store.restore(self.buffer, self.saved_candidates, self.saved_reasons)
        changes = config_changes(saved["config"], self.plain)
        if changes:  # allowed (e.g. a longer total_env_steps), but never silent
            print("[imwm] resuming with changed config: " + "; ".join(changes))
        self.agent.load_state_dict(saved["agent"])
        self.agent.load_optimizers_state_dict(saved["optimizers"])
        if self.intrinsic is not None and saved.get("intrinsic") is not None:
            self.intrinsic.load_state_dict(saved["intrinsic"])
        if saved.get("intrinsic_optimizer") is not None:
            self.intrinsic.load_optimizer_state_dict(saved["intrinsic_optimizer"])
        self.layout.load_state_dict(saved["layout"])
        self.counters.update(saved["counters"])
        if saved.get("eval_return") is not None:  # absent from checkpoints written before it was kept
            self.eval_return = float(saved["eval_return"])
        set_rng_state(saved["rng"])
        print(f"[imwm] resumed {path} at env step {self.counters['env_steps']}, "
              f"update {self.counters['updates']} (env episodes restart)")
        return saved.get("logger", {}).get("run_id")

    # ------------------------------------------------------------------ phases
    def collect(self, batch: TensorDictBase) -> int:
        """Stores one collector batch; returns the env steps that earn updates."""
        before = self.counters["env_steps"]
        rows, first_env = batch_envs(batch)  # [envs, T]: one worker's envs, or all of them
        self.buffer.extend(self.layout(rows, first_env=first_env))
        self.counters["env_steps"] += batch.numel()
        returns, lengths = finished_episodes(batch)
        if returns.numel():
            self.counters["episodes"] += returns.numel()
            self.ep_returns.extend(returns.tolist())
            self.ep_lengths.extend(lengths.tolist())
            self.log.episode_returns(returns.tolist())
        prefill = self.plain["prefill"]  # only env steps after the prefill earn updates
        return max(0, self.counters["env_steps"] - prefill) - max(0, before - prefill)

    def update(self, earned: int, reward: torch.Tensor | None) -> None:
        """Runs the updates ``earned`` env steps pay for (fractional credit carried over)."""
        per_step = self.plain["train_ratio"] / (self.batch_size * self.batch_length)
        self.counters["update_credit"] += earned * per_step
        while self.counters["update_credit"] >= 1.0:
            self.counters["update_credit"] -= 1.0
            sample, info = self.buffer.sample(return_info=True)
            sample = sample.reshape(self.batch_size, self.batch_length).to(self.device)
            metrics, signals = self.agent.train_step(sample)
            replay_feedback(self.buffer, info, signals, reward=reward)
            reward = None  # collected rewards feed the trend gate once
            self.counters["updates"] += 1
            self.means.add(metrics)
            if self.dormant is not None and hasattr(self.dormant, "maybe_measure"):
                dormant_metrics = self.dormant.maybe_measure(sample, self.counters["updates"])
                if dormant_metrics:
                    self.means.add(dormant_metrics)

    def evaluate(self) -> dict[str, float]:
        """Greedy returns of ``eval_episodes`` episodes (and sampled ones with ``eval_sample``)."""
        plain = self.plain
        result = self._play(ExplorationType.DETERMINISTIC)
        mean = result["returns"].mean().item()
        self.counters["last_eval"] = self.counters["env_steps"]
        self.eval_return = mean
        tqdm_write(f"[imwm] eval at env step {self.counters['env_steps']}: return {mean:.1f} "
                   f"({plain['eval_episodes']} episodes)")
        row = {"eval/return": mean,
               "eval/minutes": (time.perf_counter() - self.t_created) / 60,
               "eval/return_std": result["returns"].std(unbiased=False).item(),
               "eval/length": result["lengths"].mean().item(),
               "eval/truncated": result["truncated"].float().mean().item()}
        if plain["eval_sample"]:
            sampled = self._play(ExplorationType.RANDOM)
            row["eval/return_sample"] = sampled["returns"].mean().item()
            tqdm_write(f"[imwm] eval at env step {self.counters['env_steps']}: sampled actions, return "
                       f"{row['eval/return_sample']:.1f}")
        return row

    def _play(self, exploration: ExplorationType) -> dict[str, torch.Tensor]:
        policy = self.agent.policy(self.plain["eval_episodes"], action_dtype=self.eval_env.action_spec.dtype)
        return evaluate(self.eval_env, policy, max_steps=self.plain["eval_max_steps"], exploration=exploration)

    def train_row(self, window: dict, t_start: float) -> dict[str, float]:
        """The training metrics since the last row (means, rates, episodes, replay)."""
        steps, updates = self.counters["env_steps"], self.counters["updates"]
        now = time.perf_counter()
        dt = now - window["time"]
        row = self.means.pop()
        self._warn_large_losses(row)
        row.update({
            "train/updates": updates,
            "train/episodes": self.counters["episodes"],
            "train/nonfinite_updates": self.agent.nonfinite_total,
            "train/env_steps_per_s": (steps - window["steps"]) / dt,
            "train/updates_per_s": (updates - window["updates"]) / dt,
            "train/buffer_size": len(self.buffer),
            "train/minutes": (now - t_start) / 60,
            # share of the wall time spent waiting for the collector's next batch
            "train/collector_wait": self.waits["collector"] / max(now - t_start, 1e-9),
            "train/learner_busy": self.waits["learner"] / max(now - t_start, 1e-9),
            "train/weight_push": self.waits["push"] / max(now - t_start, 1e-9),
        })
        window.update(time=now, steps=steps, updates=updates)
        if self.agent.compile_seconds:  # first compiled call of each phase (0 once cached on disk)
            row["train/compile_seconds"] = sum(self.agent.compile_seconds.values())
        if self.ep_returns:
            row["train/episode_return"] = float(np.mean(self.ep_returns))
            row["train/episode_length"] = float(np.mean(self.ep_lengths))
            self.ep_returns.clear()
            self.ep_lengths.clear()
        row.update({k: float(v) for k, v in replay_metrics(self.buffer).items()})
        self.counters["last_log"] = steps
        return row

    def _warn_large_losses(self, row: dict[str, float]) -> None:
        for key, value in row.items():
            if (key.startswith("loss_") or key.endswith("_loss")) and key not in self.warned_losses and abs(value) > LOSS_WARNING:
                self.warned_losses.add(key)
                agent = self.plain["agent"]
                warnings.warn(
                    f"{key} reached {value:.3g} by update {self.counters['updates']}; the run is "
                    f"probably diverging (agent.model_lr={agent.get('model_lr')}, "
                    f"agent.actor_lr={agent.get('actor_lr')}, agent.critic_lr={agent.get('critic_lr')})",
                    stacklevel=2,
                )

    def checkpoint(self) -> Path:
        """Writes a checkpoint/replay generation (refused, keeping the last one, if non-finite);
        in a data-parallel run only rank 0 writes."""
        self.counters["last_checkpoint"] = self.counters["env_steps"]
        if not self.dist.is_main:
            return self.store.latest
        state = {  # the sampler's and writer's state travel inside the replay snapshot
            "agent": self.agent.state_dict(),
            "optimizers": self.agent.optimizers_state_dict(),
            "intrinsic": _module_state(self.intrinsic),
            # Plan2Explore's ensemble learns with its own Adam
            "intrinsic_optimizer": (self.intrinsic.optimizer_state_dict()
                                    if hasattr(self.intrinsic, "optimizer_state_dict") else None),
            "layout": self.layout.state_dict(),
            "counters": dict(self.counters),
            "rng": rng_state(),
            "config": self.plain,
            "logger": {"run_id": self.log.run_id if self.log is not None else None},
            # the summary line of a resumed run reports it; None (never NaN) before the first evaluation
            "eval_return": self.eval_return if math.isfinite(self.eval_return) else None,
        }
        return self.store.save(state, self.buffer)

    # ------------------------------------------------------------------ driver
    def train(self) -> Path:
        """Collects and updates until ``total_env_steps``; returns the final checkpoint."""
        plain, counters = self.plain, self.counters
        total, frames = plain["total_env_steps"], plain["frames_per_batch"]
        prefill_left = max(0, plain["prefill"] - counters["env_steps"])
        t_start = time.perf_counter()
        window = {"time": t_start, "steps": counters["env_steps"], "updates": counters["updates"]}
        collector = None
        try:
            if counters["env_steps"] < total:
                collector = self._collector(math.ceil(prefill_left / frames) * frames or None)
                waited = time.perf_counter()
                for batch in collector:
                    # time between asking for a batch and getting it: collection the learner waited for
                    self.waits["collector"] += time.perf_counter() - waited
                    start = time.perf_counter()
                    self.update(self.collect(batch), batch.get(("next", "reward")))
                    self.waits["learner"] += time.perf_counter() - start
                    if self.pushes_weights:
                        start = time.perf_counter()
                        collector.update_policy_weights_()  # every worker acts with the updated actor
                        self.waits["push"] += time.perf_counter() - start
                    self._after_batch(window, t_start)
                    if counters["env_steps"] >= total:
                        break
                    waited = time.perf_counter()
            if self.eval_env is not None and counters["last_eval"] != counters["env_steps"]:
                self.log.log(self.evaluate(), counters["env_steps"])
            return self.checkpoint()
        except KeyboardInterrupt:
            self.checkpoint()
            tqdm_write(f"[imwm] interrupted at env step {counters['env_steps']}; checkpoint saved")
            raise
        finally:
            if collector is not None:
                collector.shutdown()

    @property
    def pushes_weights(self) -> bool:
        """Whether the policy acts in other processes (every collector but sync with one worker),
        so the weights are pushed to them after each batch's updates."""
        return not (self.plain["collector"] == "sync" and self.plain["collector_workers"] == 1)

    def _collector(self, init_random_frames: int | None):
        """The collector the config names (:func:`imwm.training.collectors.make_collector`).

        Every collector keeps the train ratio exact: updates are earned per collected env step and
        all of a batch's updates run before the next batch is taken. With ``collector=async`` each
        worker is at most one batch ahead; weights are pushed to every worker after each batch's
        updates, and a finished batch may wait while the other workers' batches are trained on, so
        with ``W`` workers a batch's actions come from weights up to ``W`` batches' updates old.
        """
        action_dtype = self.env.action_spec.dtype
        return make_collector(self.plain, env=self.env, env_seed=self.env_seed, device=self.device,
                              policy=lambda n: self.agent.policy(n, action_dtype=action_dtype),
                              init_random_frames=init_random_frames)

    def _after_batch(self, window: dict, t_start: float) -> None:
        plain, counters = self.plain, self.counters
        steps = counters["env_steps"]
        self.log.progress(steps, counters["updates"])
        row: dict[str, float] = {}
        if plain["log_every"] and steps - counters["last_log"] >= plain["log_every"]:
            row.update(self.train_row(window, t_start))
        if self.eval_env is not None and plain["eval_every"] and \
                steps - counters["last_eval"] >= plain["eval_every"]:
            row.update(self.evaluate())
        if row:
            self.log.log(row, steps)
        if plain["checkpoint_every"] and steps - counters["last_checkpoint"] >= plain["checkpoint_every"]:
            self.checkpoint()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        for env in (self.env, self.eval_env):
            if env is not None and not env.is_closed:
                env.close()


def run(cfg) -> dict[str, Any]:
    """Trains an agent as the config says; returns a summary (paths, counters, last eval).

    Args:
        cfg: the composed Hydra config (``DictConfig``) or an equivalent plain dict.

    Returns:
        ``{"run_dir", "checkpoint", "metrics", "config", "env_steps", "updates", "eval_return"}``.
    """
    plain = validate_config(cfg)
    print(f"[imwm] run folder: {plain['run_dir']}", flush=True)
    trainer = Trainer(plain)
    try:
        run_id = trainer.resume()
        if trainer.counters["env_steps"] >= plain["total_env_steps"]:
            tqdm_write(f"[imwm] nothing to train: the run already reached total_env_steps="
                       f"{plain['total_env_steps']} (pass a larger total_env_steps to continue it)")
        saved_config = trainer.saved_candidates[0][1]["config"] if trainer.saved_candidates else None
        main = trainer.dist.is_main  # data-parallel: rank 0 alone records, logs and evaluates
        config_path = (record_config(trainer.run_dir, plain, saved_config, env_step=trainer.counters["env_steps"])
                       if main else trainer.run_dir / "config.yaml")
        # other ranks keep their own metrics.csv under rank<r>/, with no wandb run and no progress bar
        logger = plain["logger"] if main else {**plain["logger"], "backend": "none"}
        log_dir = trainer.run_dir if main else trainer.run_dir / f"rank{trainer.dist.rank}"
        trainer.log = RunLogger(log_dir, **logger, run_name=plain["run_name"], progress=main,
                                total_env_steps=plain["total_env_steps"],
                                start_step=trainer.counters["env_steps"], run_id=run_id, config=plain)
        if main and (plain["eval_every"] or plain["eval_episodes"]):
            trainer.eval_env = make_env(**trainer.env_kwargs, num_envs=plain["eval_episodes"],
                                        seed=plain["seed"] + 10_000)
        path = trainer.train()
    except NonFiniteUpdateError:
        tqdm_write(f"[imwm] stopped at env step {trainer.counters['env_steps']}; last good "
                   f"checkpoint kept in {trainer.store.ckpt_dir}")
        raise
    finally:
        trainer.close()
    if trainer.dist.enabled:  # the weights must be the same on every rank: say so in one line
        print(f"[imwm] rank {trainer.dist.rank}/{trainer.dist.world_size}: parameters "
              f"{parameter_digest(trainer.agent)}", flush=True)
        trainer.dist.close()
    counters, log = trainer.counters, trainer.log
    summary = {
        "run_dir": str(trainer.run_dir),
        "checkpoint": str(path),
        "metrics": str(log.metrics_path),
        "config": str(config_path),
        "env_steps": counters["env_steps"],
        "updates": counters["updates"],
        "eval_return": trainer.eval_return,
    }
    print(f"[imwm] run folder: {trainer.run_dir}\n[imwm] checkpoint: {path}\n"
          f"[imwm] metrics: {log.metrics_path}\n[imwm] config: {config_path}\n"
          f"[imwm] env steps: {counters['env_steps']}, updates: {counters['updates']}, "
          f"last eval return: {trainer.eval_return:.1f}")
    return summary


def tqdm_write(msg: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(msg)
    except ImportError:  # pragma: no cover
        print(msg)
