"""Replay samplers for sequence replay (TorchRL ``Sampler`` subclasses) and their sum trees.

- :class:`CuriousSampler` — Curious Replay (Kauvar et al., ICML 2023), count + loss priority.
- :class:`ExploreExploitSampler` — KL (explore) or 1 / KL (exploit) priority.
- :class:`TrendMixture` — gate between explore and exploit driven by the reward trend.
- :class:`MixtureSampler` — fixed per-batch fractions of named samplers.
- :class:`UniformSliceSampler` — uniform over valid slice starts, O(log N).
- :class:`SumTree`, :class:`PriorityTree` — vectorised torch sum trees (inf-priority pool).
- :class:`StreamWriter` — one storage ring per concurrent trajectory (several envs).
"""

from imwm.replay.composite import CompositeSampler
from imwm.replay.curious import CuriousSampler
from imwm.replay.explore_exploit import ExploreExploitSampler, UniformSliceSampler
from imwm.replay.batch_split import check_fracs, split_counts
from imwm.replay.mixture import MixtureSampler
from imwm.replay.slices import PrioritizedSliceSampler, read_storage_key, slice_index
from imwm.replay.streams import StreamWriter
from imwm.replay.sum_tree import PriorityTree, SumTree
from imwm.replay.trend import TrendMixture

__all__ = [
    "CompositeSampler",
    "CuriousSampler",
    "ExploreExploitSampler",
    "MixtureSampler",
    "PrioritizedSliceSampler",
    "PriorityTree",
    "StreamWriter",
    "SumTree",
    "TrendMixture",
    "UniformSliceSampler",
    "check_fracs",
    "read_storage_key",
    "slice_index",
    "split_counts",
]
