"""TorchRL collectors for the training loop: ``collector`` x ``collector_workers``.

``make_collector`` builds what the config names:

============================  =====================  ===============================================
``collector``                 ``collector_workers``  TorchRL class
============================  =====================  ===============================================
``sync``                      1                      ``Collector``: collect, then update, in turn
``sync``                      W > 1                  ``MultiSyncCollector``: W processes step their
                                                     envs together; one batch holds all of them
``async``                     1                      ``AsyncCollector``: one process collects the
                                                     next batch while the learner updates
``async``                     W > 1                  ``MultiAsyncCollector`` (with a queue slot per
                                                     worker, :class:`LosslessMultiAsyncCollector`):
                                                     W processes; each batch is one worker's, first
                                                     ready first served
``distributed``               W >= 1                 ``torchrl.collectors.distributed.
                                                     DistributedCollector`` (``launcher="mp"``,
                                                     ``gloo``, sync mode): W collector nodes on this
                                                     machine, one ``torch.distributed`` rank each;
                                                     one batch holds all of them
============================  =====================  ===============================================

With W workers each one steps ``k = num_envs / W`` envs of its own: worker ``w`` builds the envs
``w*k .. (w+1)*k - 1`` with the seed ``env_seed + w*k`` (distinct and deterministic; the ALE
vector backend seeds sub-env ``i`` with ``seed + i``, so there every env gets the seed it has in
a one-process run, while a gym ``SerialEnv`` derives its later sub-envs' seeds from the first).
Neither the multi-process nor the distributed collectors say which worker a batch came from (a
``MultiAsyncCollector`` batch carries only TorchRL's ``("collector", "traj_ids")``, counted over
all workers), so every env built here carries imwm's own :class:`EnvIndex` transform: it writes
each env's global index under ``env_index``, and :func:`batch_envs` reads the rows of a batch
back from it. The loop hands that index to :class:`~imwm.training.layout.DreamerRecordLayout`,
whose records carry their env as the replay ``stream``: env ``i`` always writes replay stream
``i``, in time order, whichever worker or batch its steps arrive in.

Weights: a worker process acts with its own copy of the policy; the loop calls
``collector.update_policy_weights_()`` after each batch's updates, which reaches every worker
(shared memory for the multi-process collectors, ``torch.distributed`` sends for the distributed
one). ``collector=sync`` with one worker acts with the learner's modules themselves.

``collector=distributed`` joins ``torch.distributed``'s default process group as rank 0 of
``W + 1``; a data-parallel run under ``torchrun`` holds that group already, so the two are
refused together (``imwm.training.config.validate_config``).
"""
from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Mapping
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.collectors import MultiAsyncCollector
from torchrl.data import Unbounded
from torchrl.envs import EnvBase, Transform

from imwm.errors import ConfigError, check_integer
from imwm.training.config import COLLECTORS

__all__ = ["ENV_INDEX_KEY", "EnvIndex", "LosslessMultiAsyncCollector", "batch_envs", "make_collector",
           "worker_env"]

ENV_INDEX_KEY = "env_index"


class EnvIndex(Transform):
    """Writes each env's global index (``first``, ``first + 1``, ...) under ``env_index``.

    TorchRL's multi-process and distributed collectors do not say which worker produced a batch;
    with this transform on every worker's env the batch says it itself, row by row.

    Args:
        first: global index of the env's first sub-env (worker ``w`` of ``k`` envs each: ``w*k``).
        key: the key written (an observation: present at the root and under ``"next"``).

    Example:
        >>> from imwm.envs import make_env
        >>> env = make_env(name="cartpole", num_envs=2, seed=0).append_transform(EnvIndex(first=4))
        >>> env.rollout(3)["env_index"].tolist()
        [[4, 4, 4], [5, 5, 5]]
    """

    def __init__(self, first: int = 0, key: str = ENV_INDEX_KEY):
        super().__init__(in_keys=[], out_keys=[key])
        self.first = check_integer("first", first, 0)
        self.key = key

    def _index(self, like: TensorDictBase) -> torch.Tensor:
        shape = self.parent.batch_size
        index = torch.arange(self.first, self.first + shape.numel(), device=like.device or "cpu")
        return index.reshape(shape)

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict.set(self.key, self._index(next_tensordict))

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return tensordict_reset.set(self.key, self._index(tensordict_reset))

    def transform_observation_spec(self, observation_spec):
        observation_spec[self.key] = Unbounded(shape=self.parent.batch_size, dtype=torch.int64,
                                               device=observation_spec.device)
        return observation_spec


class LosslessMultiAsyncCollector(MultiAsyncCollector):
    """TorchRL's ``MultiAsyncCollector`` that never drops a batch: one output-queue slot per worker.

    Why it exists: TorchRL 0.14.1's ``MultiAsyncCollector`` gives its output queue a single slot.
    While the learner holds one worker's batch, a second worker's batch fills that slot, and a
    third batch (the first worker's next one) waits for it; after ``_TIMEOUT`` (1 s) the worker
    gives up, throws the batch away and collects the next one from where its envs are. The env
    steps of that batch are lost without a trace, so an episode in replay jumps ahead (and an episode
    start inside the lost batch is never seen). Any learner that spends more than a second per
    batch with two or more workers hits it. Each worker has at most one batch outstanding (it
    waits for the learner's ``continue`` before collecting again), so a queue with a slot per worker
    can never be full and no put times out. That holds for one iterator consumed batch by batch, as
    the training loop does; a second ``iter()``, a ``reset()`` or a ``state_dict()`` while workers
    collect can still make TorchRL drop a batch (the record layout then refuses the gap).
    Everything else is TorchRL's.

    Example:
        >>> import functools
        >>> make = [functools.partial(worker_env, {"name": "cartpole"}, first=w, num_envs=1, seed=0)
        ...         for w in range(2)]
        >>> collector = LosslessMultiAsyncCollector(make, None, frames_per_batch=8, total_frames=16)
        >>> [batch.numel() for batch in collector]
        [8, 8]
        >>> collector.shutdown()
    """

    @property
    def _queue_len(self) -> int:
        return self.num_workers


def worker_env(env_kwargs: Mapping[str, Any], *, first: int, num_envs: int, seed: int) -> EnvBase:
    """The envs ``first .. first + num_envs - 1`` of a run: ``make_env`` seeded ``seed + first``,
    with :class:`EnvIndex`. Module-level, so a ``functools.partial`` of it reaches a spawned process.

    Example:
        >>> env = worker_env({"name": "cartpole"}, first=2, num_envs=2, seed=0)
        >>> env.reset()["env_index"].tolist()
        [2, 3]
    """
    from imwm.envs import make_env

    env = make_env(**env_kwargs, num_envs=num_envs, seed=seed + first)
    return env.append_transform(EnvIndex(first))


def batch_envs(batch: TensorDictBase) -> tuple[TensorDictBase, int]:
    """A collector batch as ``[envs, T]`` and the global index of its first env.

    Accepts ``[envs, T]`` (one worker, or a ``MultiSyncCollector`` batch concatenated over its
    workers), ``[workers, envs, T]`` (a stacked or distributed sync batch) and ``[T]`` (one env).

    Raises:
        ValueError: the batch has no ``env_index`` (an env without :class:`EnvIndex`), or its rows
            are not consecutive envs.

    Example:
        >>> from tensordict import TensorDict
        >>> batch = TensorDict({"env_index": torch.tensor([2, 3]).repeat_interleave(5).view(2, 5)}, [2, 5])
        >>> rows, first = batch_envs(batch)
        >>> tuple(rows.shape), first
        ((2, 5), 2)
    """
    if batch.ndim == 1:
        batch = batch.unsqueeze(0)
    elif batch.ndim > 2:
        batch = batch.contiguous().reshape(-1, batch.shape[-1])
    index = batch.get(ENV_INDEX_KEY, None)
    if index is None:
        raise ValueError(f"collector batch has no {ENV_INDEX_KEY!r}: build its envs with "
                         "imwm.training.collectors.worker_env (they carry the EnvIndex transform)")
    envs = index.reshape(batch.shape[0], -1)[:, 0]
    first = int(envs[0])
    if not torch.equal(envs, torch.arange(first, first + envs.numel(), device=envs.device)):
        raise ValueError(f"collector batch rows are not consecutive envs: {envs.tolist()}")
    return batch, first


def _free_port() -> int:
    """A TCP port free now, whose next two are free as well (the distributed collector uses three)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
        if port > 65533:
            continue
        try:
            for extra in (1, 2):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("localhost", port + extra))
        except OSError:
            continue
        return port
    raise RuntimeError("found no three consecutive free TCP ports for the distributed collector")


def make_collector(
    plain: Mapping[str, Any],
    *,
    env: EnvBase,
    policy: Callable[[int], Any],
    env_seed: int,
    device: torch.device | str = "cpu",
    init_random_frames: int | None = None,
):
    """The collector ``plain["collector"]`` / ``plain["collector_workers"]`` name (table above).

    Args:
        plain: the validated plain config (reads ``collector``, ``collector_workers``,
            ``num_envs``, ``frames_per_batch``, ``env``).
        env: the loop's own env (all ``num_envs`` envs, built by :func:`worker_env` with
            ``first=0``); ``collector=sync`` with one worker steps it here, the others build their
            own envs in their processes.
        policy: ``policy(n)`` returns a fresh acting policy for ``n`` envs
            (``agent.policy(n, action_dtype=...)``).
        env_seed: the run's env seed (worker ``w`` seeds its envs ``env_seed + w*k``).
        device: the policy's device.
        init_random_frames: env steps of random actions before the policy acts (the prefill left).

    Every batch holds ``frames_per_batch`` env steps: all workers' envs for ``sync`` and
    ``distributed`` (``frames_per_batch / W`` each), one worker's for ``async``.
    """
    collector, workers = plain["collector"], plain.get("collector_workers", 1)
    num_envs, frames = plain["num_envs"], plain["frames_per_batch"]
    k = num_envs // workers
    make = [functools.partial(worker_env, dict(plain["env"]), first=w * k, num_envs=k, seed=env_seed)
            for w in range(workers)]
    common = dict(frames_per_batch=frames, total_frames=-1, init_random_frames=init_random_frames,
                  env_device="cpu", storing_device="cpu")
    if collector == "sync" and workers == 1:
        from torchrl.collectors import Collector

        return Collector(env, policy(num_envs), policy_device=device, **common)
    if collector == "async" and workers == 1:
        from torchrl.collectors import AsyncCollector

        # the worker builds its own envs (same seed, so the same episodes as sync would start)
        return AsyncCollector(make[0], policy(num_envs), policy_device=device, **common)
    if collector == "sync":
        from torchrl.collectors import MultiSyncCollector

        # cat_results=0: the workers' [k, T] batches in worker order make one [num_envs, T] batch
        return MultiSyncCollector(make, policy(k), policy_device=device, cat_results=0, use_buffers=True,
                                  **common)
    if collector == "async":
        return LosslessMultiAsyncCollector(make, policy(k), policy_device=device, **common)
    if collector == "distributed":
        return _distributed(make, policy(k), frames, init_random_frames)
    raise ConfigError("collector", f"must be one of {list(COLLECTORS)}", collector)


def _distributed(make, policy, frames: int, init_random_frames: int | None):
    """TorchRL's ``DistributedCollector`` in its sync mode over ``len(make)`` local ranks. The
    workers act on the CPU (weights travel over ``gloo``)."""
    from torchrl.collectors import Collector
    from torchrl.collectors.distributed import DistributedCollector

    port = _free_port()
    return DistributedCollector(
        # (total_frames=-1 would end it at once: unlike the other collectors it does not read -1
        # as "no end"; the loop stops at total_env_steps itself)
        make, policy, frames_per_batch=frames, total_frames=2**62, sync=True,
        collector_class=Collector, launcher="mp", backend="gloo", tcp_port=port,
        init_random_frames=init_random_frames or -1,
        env_device="cpu", storing_device="cpu", policy_device="cpu",
    )
