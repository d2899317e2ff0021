"""Replay buffer from the ``replay.*`` config group, plus the feedback and metric hooks.

The training loop calls, with ``cfg.replay`` expanded one key per keyword::

    buffer = build_replay(**cfg.replay, device="cpu", seed=cfg.seed)
    buffer.extend(records)                          # TensorDict [N], architecture.md layout
    batch, info = buffer.sample(return_info=True)   # [B * T] flat, slice after slice
    batch = batch.reshape(B, T)
    ...                                             # world-model update -> signals [B]
    replay_feedback(buffer, info, signals, reward=collected_reward)
    logger.log(replay_metrics(buffer))

``fracs`` chooses the sampler:

- ``{uniform: 1.0}``: TorchRL's own ``SliceSampler(slice_len=T, traj_key="traj_ids",
  strict_length=True)``; ``replay_feedback`` is then a no-op.
- one non-uniform child with fraction 1 and no trend (``{curious: 1.0, uniform: 0.0}``): that
  sampler alone;
- anything else: an :class:`imwm.replay.MixtureSampler` over the named children, with the
  :class:`imwm.replay.TrendMixture` gate when ``trend.enable``.

Reward stream for the trend gate: ``replay_feedback(..., reward=...)`` takes the extrinsic rewards
*collected from the environment* since the previous call (any shape; their mean is one point of the
stream). Replayed rewards are not used: the replay batch is chosen by the very sampler the gate
steers, so its reward trend would feed back on itself.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SliceSampler

__all__ = ["build_replay", "replay_feedback", "replay_metrics", "slice_starts"]

_KNOWN_CHILDREN = ("uniform", "curious", "explore", "exploit")


def _plain(mapping: Mapping | None) -> dict:
    """OmegaConf DictConfig or dict -> plain dict (only top level needed)."""
    if mapping is None:
        return {}
    return {str(k): v for k, v in dict(mapping).items()}


def _check_fracs(fracs: Mapping) -> dict[str, float]:
    fracs = {str(k): float(v) for k, v in _plain(fracs).items()}
    if not fracs:
        raise ValueError("replay.fracs must name at least one sampler, got an empty mapping")
    for name, value in fracs.items():
        if name not in _KNOWN_CHILDREN:
            raise ValueError(
                f"replay.fracs names an unknown sampler {name!r}; known: {list(_KNOWN_CHILDREN)}"
            )
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"replay.fracs[{name!r}] must be a finite number >= 0, got {value}")
    total = sum(fracs.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"replay.fracs must sum to 1, got {fracs} (sum {total})")
    return fracs


def build_replay(
    *,
    capacity: int,
    batch_size: int,
    batch_length: int,
    fracs: Mapping | None = None,
    curious: Mapping | None = None,
    explore_exploit: Mapping | None = None,
    trend: Mapping | None = None,
    traj_key: str = "traj_ids",
    arity: int = 32,
    num_streams: int = 1,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> TensorDictReplayBuffer:
    """Builds the sequence replay buffer described by ``cfg.replay``.

    Args:
        capacity: number of records (one per observation) the circular storage holds.
        batch_size: number of slices ``B`` per sample.
        batch_length: slice length ``T``; ``buffer.sample()`` returns ``B * T`` records, slice
            after slice, which the loop reshapes to ``[B, T]``.
        fracs: share of the ``B`` slices drawn by each named sampler (``uniform``, ``curious``,
            ``explore``, ``exploit``); must sum to 1. Defaults to ``{uniform: 1.0}``.
        curious: keyword arguments of :class:`imwm.replay.CuriousSampler` (``c``, ``beta``,
            ``alpha``, ``epsilon``, ``initial``, ``entropy_lambda``).
        explore_exploit: keyword arguments shared by the explore and exploit
            :class:`imwm.replay.ExploreExploitSampler` children (``eps``, ``initial``).
        trend: ``enable`` plus the keyword arguments of :class:`imwm.replay.TrendMixture`.
        traj_key: record key holding the episode id; slices never cross a change of it.
        arity: branching factor of the samplers' sum trees.
        num_streams: with more than one, a :class:`imwm.replay.StreamWriter` keeps each of that
            many concurrent trajectories in its own ring of the storage; pass the number of envs
            when several envs are collected batch by batch (otherwise their chunks interleave and
            no slice is longer than a chunk). The ``uniform`` sampler is then imwm's
            ``UniformSliceSampler``: TorchRL's ``SliceSampler`` would read the unwritten rows of
            rings that are not full yet as data.
        device: storage device.
        seed: seeds the buffer's own ``torch.Generator`` (sampling and fraction rounding).

    Returns:
        A ``TensorDictReplayBuffer`` over a ``LazyTensorStorage(capacity)`` whose
        ``sample(return_info=True)`` gives ``info["index"]`` (the flat ``B * T`` storage indices).
    """
    for name, value in (("capacity", capacity), ("batch_size", batch_size),
                        ("batch_length", batch_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"replay.{name} must be an integer >= 1, got {value!r}")
    if batch_length > capacity:
        raise ValueError(
            f"replay.batch_length ({batch_length}) cannot exceed replay.capacity ({capacity})"
        )
    fracs = _check_fracs(fracs if fracs is not None else {"uniform": 1.0})
    active = {name: f for name, f in fracs.items() if f > 0}
    trend_cfg = _plain(trend)
    trend_on = bool(trend_cfg.pop("enable", False))

    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(int(seed))

    if not isinstance(num_streams, int) or isinstance(num_streams, bool) or num_streams < 1:
        raise ValueError(f"num_streams must be an integer >= 1, got {num_streams!r}")
    if capacity // num_streams < batch_length:
        raise ValueError(
            f"replay.capacity={capacity} split into num_streams={num_streams} rings leaves "
            f"{capacity // num_streams} records per ring, fewer than batch_length={batch_length}"
        )
    writer = None
    if num_streams > 1:
        from imwm.replay import StreamWriter  # noqa: PLC0415

        writer = StreamWriter(num_streams, traj_key=traj_key)

    if set(active) == {"uniform"} and not trend_on and num_streams == 1:
        # The baseline: TorchRL's sampler, untouched. No truncated/is_init keys are added: the
        # DreamerV3 record layout carries its own is_first / is_last flags.
        sampler = SliceSampler(
            slice_len=batch_length, traj_key=traj_key, strict_length=True,
            truncated_key=None, init_key=None,
        )
    else:
        sampler = _make_sampler(
            capacity=capacity, batch_length=batch_length, fracs=fracs, curious=_plain(curious),
            explore_exploit=_plain(explore_exploit), trend=trend_cfg if trend_on else None,
            traj_key=traj_key, arity=arity, device=device,
        )
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(capacity, device=device),
        sampler=sampler,
        writer=writer,
        batch_size=batch_size * batch_length,
        generator=generator,
    )


def _make_sampler(*, capacity, batch_length, fracs, curious, explore_exploit, trend, traj_key,
                  arity, device):
    """imwm samplers for every child named in ``fracs``; a mixture unless one child does it all."""
    from imwm.replay import (  # noqa: PLC0415 (keeps `import build_replay` light for uniform)
        CuriousSampler, ExploreExploitSampler, MixtureSampler, UniformSliceSampler,
    )

    common = dict(slice_len=batch_length, traj_key=traj_key, arity=arity, device=device)
    needed = {name for name, f in fracs.items() if f > 0}
    if trend is not None:
        needed |= {"explore", "exploit"} & set(fracs)
    samplers = {}
    for name in fracs:  # keep the config's order: it is the order of slices in a batch
        if name not in needed:
            continue
        if name == "uniform":
            samplers[name] = UniformSliceSampler(capacity, **common)
        elif name == "curious":
            samplers[name] = CuriousSampler(capacity, **curious, **common)
        else:
            samplers[name] = ExploreExploitSampler(capacity, mode=name, **explore_exploit,
                                                   **common)
    if trend is None and len(samplers) == 1:
        return next(iter(samplers.values()))
    return MixtureSampler(samplers, {n: fracs[n] for n in samplers}, trend=trend)


def slice_starts(index: Any, batch_length: int) -> torch.Tensor:
    """Storage index of the first record of every slice, from ``info["index"]``.

    Args:
        index: ``info["index"]`` of a sample: a tensor ``[B * T]`` / ``[B * T, 1]`` or the
            1-tuple of such a tensor that TorchRL's slice samplers return.
        batch_length: ``T``.

    Returns:
        LongTensor ``[B]``.
    """
    if isinstance(index, tuple):
        if len(index) != 1:
            raise ValueError(f"expected a 1-D storage index, got a {len(index)}-tuple")
        index = index[0]
    index = torch.as_tensor(index).reshape(-1)
    if index.numel() % batch_length:
        raise ValueError(
            f"info['index'] holds {index.numel()} records, not a multiple of "
            f"batch_length={batch_length}"
        )
    return index.view(-1, batch_length)[:, 0]


def _batch_length_of(sampler) -> int | None:
    return getattr(sampler, "slice_len", None)


def replay_feedback(
    buffer: TensorDictReplayBuffer,
    info: Mapping,
    signals: TensorDictBase | Mapping | None,
    *,
    reward: torch.Tensor | float | None = None,
) -> None:
    """Sends the world model's per-sequence signals back to the buffer's sampler.

    Args:
        buffer: a buffer made by :func:`build_replay`.
        info: the ``info`` returned by ``buffer.sample(return_info=True)`` for this batch.
        signals: ``[B]`` entries ``model_loss``, ``kl``, ``entropy`` (detached), from the
            world-model loss; each sampler reads those it uses. Ignored for uniform replay.
        reward: extrinsic rewards collected from the environment since the previous call; feeds
            the trend gate when there is one (else ignored).
    """
    sampler = buffer.sampler
    if not hasattr(sampler, "update_signals"):
        return  # uniform: nothing to learn from
    batch_length = _batch_length_of(sampler)
    starts = slice_starts(info["index"], batch_length)
    if signals is not None:
        sampler.update_signals(starts, signals)
    from imwm.replay import TrendMixture  # noqa: PLC0415

    trend = sampler if isinstance(sampler, TrendMixture) else getattr(sampler, "trend", None)
    if isinstance(trend, TrendMixture):
        if reward is not None:
            trend.update_reward(reward)
        elif not getattr(sampler, "_warned_no_reward", False):
            sampler._warned_no_reward = True
            warnings.warn(
                "replay_feedback: the sampler has a trend gate but no `reward` was passed; "
                "the gate stays where it is until collected rewards are given"
            )


def replay_metrics(buffer: TensorDictReplayBuffer) -> dict[str, float]:
    """Scalars to log about the replay buffer (``replay/...`` keys, plain floats).

    Always ``replay/size``; for imwm samplers also the gate, mean visit count, fraction of
    infinite-priority items and priority entropy (see each sampler's ``metrics()``).
    """
    out = {"replay/size": float(len(buffer))}
    sampler = buffer.sampler
    if hasattr(sampler, "metrics"):
        for key, value in sampler.metrics().items():
            out[f"replay/{key}"] = float(value)
    return out
