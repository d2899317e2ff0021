"""Replay buffer from the ``replay.*`` config group, plus the feedback and metric hooks.

The training loop calls, with ``cfg.replay`` expanded one key per keyword::

    buffer = build_replay(**cfg.replay, device="cpu", seed=cfg.seed)
    buffer.extend(records)                          # TensorDict [N], architecture.md layout
    batch, info = buffer.sample(return_info=True)   # [B * T] flat, slice after slice
    batch = batch.reshape(B, T)
    ...                                             # world-model update -> signals [B]
    replay_feedback(buffer, info, signals, reward=collected_reward)
    logger.log(replay_metrics(buffer))

``window`` chooses which ``T``-record windows can be replayed (every sampler below uses it; see
:mod:`imwm.replay.slices`):

- ``stream`` (the configs' default; DreamerV3, Hafner et al. 2023, danijar/dreamerv3 replay):
  each env's records form one stream and a window is any ``T`` consecutive records of a stream,
  across ``is_last`` / ``is_first`` (the RSSM resets at ``is_first``), never across the write
  head or between streams. Terminal records and episodes shorter than ``T`` are replayed at
  their rate in the data.
- ``episode``: windows stay inside one episode (``traj_key``), the rule before ``window``
  existed; a config without the key (a run saved before it) gets this, so resuming it keeps its
  sampling.

``fracs`` chooses the sampler:

- ``{uniform: 1.0}``: :class:`imwm.replay.UniformSliceSampler`, uniform over valid starts; with
  ``window=episode``, one env and no online queue it is TorchRL's own ``SliceSampler(slice_len=T,
  traj_key="traj_ids", strict_length=True)``, exactly as before. ``replay_feedback`` is a no-op.
- one non-uniform child with fraction 1 and no trend (``{curious: 1.0, uniform: 0.0}``): that
  sampler alone;
- anything else: an :class:`imwm.replay.MixtureSampler` over the named children, with the
  :class:`imwm.replay.TrendMixture` gate when ``trend.enable``.

``online: true`` wraps that sampler in :class:`imwm.replay.OnlineQueue` (DreamerV3's online queue):
every fresh window of each stream is replayed once, before the ``fracs`` draws fill the batch.

Reward stream for the trend gate: ``replay_feedback(..., reward=...)`` takes the extrinsic rewards
*collected from the environment* since the previous call (any shape; their mean is one point of the
stream). Replayed rewards are not used: the replay batch is chosen by the very sampler the gate
steers, so its reward trend would feed back on itself.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import SliceSampler

from imwm.errors import ConfigError, check_integer, config_keys, is_integer, unknown_keys

__all__ = ["build_replay", "check_replay_config", "replay_feedback", "replay_metrics", "slice_starts"]

_KNOWN_CHILDREN = ("uniform", "curious", "explore", "exploit")


def _plain(mapping: Mapping | None) -> dict:
    """OmegaConf DictConfig or dict -> plain dict (only top level needed)."""
    if mapping is None:
        return {}
    return {str(k): v for k, v in dict(mapping).items()}


def _check_fracs(fracs: Mapping) -> dict[str, float]:
    if not isinstance(fracs, Mapping):
        raise ConfigError("replay.fracs", "must map sampler names to fractions", fracs)
    plain = _plain(fracs)
    if not plain:
        raise ConfigError("replay.fracs", "must name at least one sampler", plain)
    for name, value in plain.items():
        if name not in _KNOWN_CHILDREN:
            raise ConfigError(f"replay.fracs.{name}", f"unknown sampler; known: {list(_KNOWN_CHILDREN)}")
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"replay.fracs.{name}", "must be a finite number >= 0", value)
    fracs = {name: float(v) for name, v in plain.items()}
    total = sum(fracs.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError("replay.fracs", f"must sum to 1 (sum {total:g})", plain)
    return fracs


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Constructor arguments of the samplers that build_replay sets itself (not config keys).
_STRUCTURAL = {"self", "max_capacity", "mode", "slice_len", "traj_key", "end_key", "arity", "nan_policy",
               "device", "explore", "exploit", "window", "num_streams"}
# Value rules of the sampler blocks: (lower bound, lower bound included, upper bound, upper included).
_BLOCK_RULES = {
    "curious": {"c": (0.0, True, math.inf, False), "beta": (0.0, False, 1.0, True),
                "alpha": (0.0, True, math.inf, False), "epsilon": (0.0, True, math.inf, False),
                "entropy_lambda": (0.0, True, math.inf, False)},
    "explore_exploit": {"eps": (0.0, False, math.inf, False)},
    "trend": {"fast": (0.0, False, 1.0, True), "slow": (0.0, False, 1.0, True), "k": (0.0, True, math.inf, False),
              "eps": (0.0, False, math.inf, False), "gate_min": (0.0, True, 1.0, True),
              "gate_max": (0.0, True, 1.0, True), "gate_init": (0.0, True, 1.0, True)},
}


def _block_keys(block: str) -> set[str]:
    from imwm.replay import CuriousSampler, ExploreExploitSampler, TrendMixture  # noqa: PLC0415

    cls = {"curious": CuriousSampler, "explore_exploit": ExploreExploitSampler, "trend": TrendMixture}[block]
    # the named arguments of the sampler's own formula; the slice arguments (**slice_kwargs) are
    # set by build_replay
    params = inspect.signature(cls.__init__).parameters.values()
    keys = {p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD} - _STRUCTURAL
    return keys | {"enable"} if block == "trend" else keys


def _interval(lo: float, lo_in: bool, hi: float, hi_in: bool) -> str:
    if hi == math.inf:
        return f"a finite number {'>=' if lo_in else '>'} {lo:g}"
    return f"in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"


def _check_block(block: str, node: Any) -> dict:
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"replay.{block}", "must be a mapping of sampler arguments", node)
    node = _plain(node)
    valid = _block_keys(block)
    unknown = sorted(set(node) - valid)
    if unknown:
        raise unknown_keys(f"replay.{block}", unknown, sorted(valid))
    for name, value in node.items():
        key = f"replay.{block}.{name}"
        if name == "enable":
            if not isinstance(value, bool):
                raise ConfigError(key, "must be true or false", value)
        elif name == "initial":
            if not _is_number(value) or math.isnan(value):
                raise ConfigError(key, "must be a number (.inf: new items first)", value)
        elif name in _BLOCK_RULES[block]:
            lo, lo_in, hi, hi_in = _BLOCK_RULES[block][name]
            ok = _is_number(value) and math.isfinite(value)
            ok = ok and (value >= lo if lo_in else value > lo) and (value <= hi if hi_in else value < hi)
            if not ok:
                raise ConfigError(key, f"must be {_interval(lo, lo_in, hi, hi_in)}", value)
    if block == "trend":
        got = {k: node.get(k, p.default) for k, p in _trend_defaults().items()}
        if not got["slow"] <= got["fast"]:
            raise ConfigError("replay.trend.slow", f"must be <= replay.trend.fast ({got['fast']})", got["slow"])
        if not got["gate_min"] <= got["gate_max"]:
            raise ConfigError("replay.trend.gate_min", f"must be <= replay.trend.gate_max ({got['gate_max']})",
                              got["gate_min"])
        if not got["gate_min"] <= got["gate_init"] <= got["gate_max"]:
            raise ConfigError("replay.trend.gate_init",
                              f"must lie in [gate_min, gate_max] = [{got['gate_min']}, {got['gate_max']}]",
                              got["gate_init"])
    return node


def _trend_defaults() -> dict:
    from imwm.replay import TrendMixture  # noqa: PLC0415

    params = inspect.signature(TrendMixture.__init__).parameters
    return {k: params[k] for k in ("fast", "slow", "gate_min", "gate_max", "gate_init")}


def check_replay_config(replay: Mapping) -> None:
    """Checks the ``replay`` config group without building anything (:func:`validate_config` calls it).

    Keys are :func:`build_replay`'s keyword arguments (less ``num_streams``, ``device`` and
    ``seed``, which the loop sets); the ``curious``, ``explore_exploit`` and ``trend`` blocks are
    checked against their samplers' arguments and value ranges. ``window`` (``stream`` or
    ``episode``) and ``online`` (a bool) may be absent: a config written before they existed means
    ``episode`` and ``false``.

    Raises:
        ConfigError: naming the full key (``replay.curious.beta``) and the value.

    Example:
        >>> check_replay_config({"capacity": 100, "batch_size": 4, "batch_length": 8})  # valid
        >>> check_replay_config({"capacity": 100, "batch_size": 4, "batch_length": 8,
        ...                      "fracs": {"curious": 1.0}, "curious": {"beta": 2.0}})
        Traceback (most recent call last):
        ...
        imwm.errors.ConfigError: replay.curious.beta: must be in (0, 1] (got 2.0)
    """
    if not isinstance(replay, Mapping):
        raise ConfigError("replay", "must be a mapping (a config group)", replay)
    params = inspect.signature(build_replay).parameters
    allowed = {n for n in params if n not in ("device", "seed", "num_streams")}
    unknown = sorted(set(replay) - allowed)
    if unknown:
        raise unknown_keys("replay", unknown, sorted(allowed))
    missing = sorted(n for n in allowed if params[n].default is inspect.Parameter.empty and n not in replay)
    if missing:
        raise ConfigError(", ".join(f"replay.{k}" for k in missing),
                          "missing config key" + ("s" if len(missing) > 1 else ""))
    _check_sizes(replay["capacity"], replay["batch_size"], replay["batch_length"])
    _check_fracs(replay.get("fracs") if replay.get("fracs") is not None else {"uniform": 1.0})
    for block in ("curious", "explore_exploit", "trend"):
        _check_block(block, replay.get(block))
    arity = replay.get("arity", 32)
    if not is_integer(arity, 2):
        raise ConfigError("replay.arity", "must be an integer >= 2", arity)
    traj_key = replay.get("traj_key", "traj_ids")
    if not isinstance(traj_key, str) or not traj_key:
        raise ConfigError("replay.traj_key", "must be a record key such as 'traj_ids'", traj_key)
    from imwm.replay.slices import WINDOWS  # noqa: PLC0415 (keeps `import build_replay` light)

    # absent from configs written before the key existed: the episode rule they ran with
    window = replay.get("window", "episode")
    if window not in WINDOWS:
        raise ConfigError("replay.window", "must be 'stream' (DreamerV3: windows run across "
                          "episode ends) or 'episode' (windows stay inside one episode)", window)
    online = replay.get("online", False)
    if not isinstance(online, bool):
        raise ConfigError("replay.online", "must be true or false", online)


def _check_sizes(capacity: Any, batch_size: Any, batch_length: Any) -> None:
    for name, value in (("capacity", capacity), ("batch_size", batch_size),
                        ("batch_length", batch_length)):
        if not is_integer(value, 1):
            raise ConfigError(f"replay.{name}", "must be an integer >= 1", value)
    if batch_length > capacity:
        raise ConfigError("replay.batch_length", f"cannot exceed replay.capacity ({capacity})", batch_length)


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
    window: str = "episode",
    online: bool = False,
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
        traj_key: record key holding the episode id; with ``window="episode"`` slices never
            cross a change of it (the stream writer always reads it).
        arity: branching factor of the samplers' sum trees.
        window: ``"stream"`` (DreamerV3: windows of ``T`` consecutive records of one env's
            stream, across episode ends) or ``"episode"`` (windows inside one episode). The
            default ``"episode"`` is what a config without the key ran with; the configs in
            ``configs/replay`` set ``stream``.
        online: wrap the sampler in :class:`imwm.replay.OnlineQueue`: every fresh window is
            replayed once before the ``fracs`` draws (DreamerV3's ``replay.online``).
        num_streams: with more than one, a :class:`imwm.replay.StreamWriter` keeps each of that
            many concurrent trajectories in its own ring of the storage; pass the number of envs
            when several envs are collected batch by batch (otherwise their chunks interleave and
            no slice is longer than a chunk). The ``uniform`` sampler is then imwm's
            ``UniformSliceSampler``: TorchRL's ``SliceSampler`` would read the unwritten rows of
            rings that are not full yet as data. Every sampler gets the ring layout, so no
            window mixes two streams.
        device: storage device.
        seed: seeds the buffer's own ``torch.Generator`` (sampling and fraction rounding).

    Returns:
        A ``TensorDictReplayBuffer`` over a ``LazyTensorStorage(capacity)`` whose
        ``sample(return_info=True)`` gives ``info["index"]`` (the flat ``B * T`` storage indices).

    Example:
        >>> from tensordict import TensorDict
        >>> buffer = build_replay(capacity=16, batch_size=2, batch_length=4, seed=0)
        >>> _ = buffer.extend(TensorDict({"traj_ids": torch.zeros(10, dtype=torch.long)}, [10]))
        >>> batch, info = buffer.sample(return_info=True)
        >>> batch.batch_size, slice_starts(info["index"], 4).shape  # B * T records, B slices
        (torch.Size([8]), torch.Size([2]))
    """
    check_replay_config(dict(capacity=capacity, batch_size=batch_size, batch_length=batch_length, fracs=fracs,
                             curious=curious, explore_exploit=explore_exploit, trend=trend, traj_key=traj_key,
                             arity=arity, window=window, online=online))
    fracs = _check_fracs(fracs if fracs is not None else {"uniform": 1.0})
    active = {name: f for name, f in fracs.items() if f > 0}
    trend_cfg = _plain(trend)
    trend_on = bool(trend_cfg.pop("enable", False))

    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(int(seed))

    check_integer("num_streams", num_streams)
    if capacity // num_streams < batch_length:
        raise ConfigError(
            "replay.capacity", f"split into one ring per env (num_envs={num_streams}) leaves "
            f"{capacity // num_streams} records per ring, fewer than replay.batch_length={batch_length}", capacity
        )
    writer = None
    if num_streams > 1:
        from imwm.replay import StreamWriter  # noqa: PLC0415

        writer = StreamWriter(num_streams, traj_key=traj_key)

    if (set(active) == {"uniform"} and not trend_on and num_streams == 1 and window == "episode"
            and not online):
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
            traj_key=traj_key, arity=arity, window=window, num_streams=num_streams, device=device,
        )
        if online:
            from imwm.replay import OnlineQueue  # noqa: PLC0415

            sampler = OnlineQueue(sampler)
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(capacity, device=device),
        sampler=sampler,
        writer=writer,
        batch_size=batch_size * batch_length,
        generator=generator,
    )


def _make_sampler(*, capacity, batch_length, fracs, curious, explore_exploit, trend, traj_key,
                  arity, window, num_streams, device):
    """imwm samplers for every child named in ``fracs``; a mixture unless one child does it all."""
    from imwm.replay import (  # noqa: PLC0415 (keeps `import build_replay` light for uniform)
        CuriousSampler, ExploreExploitSampler, MixtureSampler, UniformSliceSampler,
    )

    # no truncated / is_init flags in the batch, as for TorchRL's SliceSampler above: the record
    # layout carries its own is_first / is_last / is_terminal
    common = dict(slice_len=batch_length, window=window, num_streams=num_streams, traj_key=traj_key,
                  arity=arity, device=device, truncated_key=None, init_key=None)
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
            with config_keys("replay.curious", curious):
                samplers[name] = CuriousSampler(capacity, **curious, **common)
        else:
            with config_keys("replay.explore_exploit", explore_exploit):
                samplers[name] = ExploreExploitSampler(capacity, mode=name, **explore_exploit, **common)
    if trend is None and len(samplers) == 1:
        return next(iter(samplers.values()))
    with config_keys("replay.trend", trend):
        return MixtureSampler(samplers, {n: fracs[n] for n in samplers}, trend=trend)


def slice_starts(index: Any, batch_length: int) -> torch.Tensor:
    """Storage index of the first record of every slice, from ``info["index"]``.

    Args:
        index: ``info["index"]`` of a sample: a tensor ``[B * T]`` / ``[B * T, 1]`` or the
            1-tuple of such a tensor that TorchRL's slice samplers return.
        batch_length: ``T``.

    Returns:
        LongTensor ``[B]``.

    Example:
        >>> slice_starts((torch.tensor([4, 5, 6, 0, 1, 2]),), batch_length=3)
        tensor([4, 0])
        >>> slice_starts(torch.arange(6), batch_length=4)
        Traceback (most recent call last):
        ...
        ValueError: info['index'] holds 6 records, not a multiple of batch_length=4
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

    Example:
        >>> replay_metrics(build_replay(capacity=8, batch_size=1, batch_length=2))
        {'replay/size': 0.0}
    """
    out = {"replay/size": float(len(buffer))}
    sampler = buffer.sampler
    if hasattr(sampler, "metrics"):
        for key, value in sampler.metrics().items():
            out[f"replay/{key}"] = float(value)
    return out
