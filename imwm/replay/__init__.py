"""Replay samplers for sequence replay (TorchRL ``Sampler`` subclasses) and their sum trees.

- :class:`CuriousSampler` — Curious Replay (Kauvar et al., ICML 2023), count + loss priority.
- :class:`ExploreExploitSampler` — KL (explore) or 1 / KL (exploit) priority.
- :class:`TrendMixture` — gate between explore and exploit driven by the reward trend.
- :class:`MixtureSampler` — fixed per-batch fractions of named samplers.
- :class:`UniformSliceSampler` — uniform over valid slice starts, O(log N).
- :class:`OnlineQueue` — DreamerV3's online queue: each fresh window once, before the draws.
- :class:`SumTree`, :class:`PriorityTree` — vectorised torch sum trees (inf-priority pool).
- :class:`StreamWriter` — one storage ring per concurrent trajectory (several envs).

Inside TorchRL's replay buffers they behave as TorchRL samplers do: TorchRL's slice arguments
(``num_slices`` / ``slice_len``, ``traj_key`` detected by default, ``end_key``, ``truncated_key``),
writes through any buffer sharing the storage, a new sampler over a filled storage, the per-step
flags in ``sample(return_info=True)``, and ``update_tensordict_priority`` (on the sampler's
``priority_key``); the differences are listed in :class:`PrioritizedSliceSampler`.

Window rule of every slice sampler (``window=``): ``"stream"`` (DreamerV3: windows run across
episode ends, never across a write head or between streams) or ``"episode"`` (windows stay inside
one episode); see :mod:`imwm.replay.slices`.
"""

from imwm.replay.composite import CompositeSampler
from imwm.replay.curious import CuriousSampler
from imwm.replay.explore_exploit import ExploreExploitSampler, UniformSliceSampler
from imwm.replay.batch_split import check_fracs, split_counts
from imwm.replay.mixture import MixtureSampler
from imwm.replay.online import OnlineQueue
from imwm.replay.slices import WINDOWS, PrioritizedSliceSampler, read_storage_key, slice_index
from imwm.replay.streams import StreamWriter
from imwm.replay.sum_tree import PriorityTree, SumTree
from imwm.replay.trend import TrendMixture

__all__ = [
    "CompositeSampler",
    "CuriousSampler",
    "ExploreExploitSampler",
    "MixtureSampler",
    "OnlineQueue",
    "PrioritizedSliceSampler",
    "PriorityTree",
    "StreamWriter",
    "SumTree",
    "TrendMixture",
    "UniformSliceSampler",
    "WINDOWS",
    "check_fracs",
    "read_storage_key",
    "slice_index",
    "split_counts",
]
