"""MixtureSampler: each batch split between named samplers by fixed fractions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchrl.data.replay_buffers.samplers import Sampler

from imwm.replay.composite import CompositeSampler
from imwm.replay.batch_split import check_fracs, split_counts
from imwm.replay.trend import TrendMixture

__all__ = ["MixtureSampler"]


class MixtureSampler(CompositeSampler):
    """Per-batch mixture of named sequence samplers (the config's ``replay.fracs``).

    A batch of ``n`` slices gives child ``i`` ``n * fracs[i]`` slices, rounded without bias
    (:func:`~imwm.replay.batch_split.split_counts`, drawn from the buffer's generator); the shares are
    concatenated in the order of ``samplers``. A child with fraction 0 is dropped (never sampled,
    not written to). ``fracs`` must sum to 1 and name only keys of ``samplers``.

    With ``trend`` (a :class:`~imwm.replay.TrendMixture`, or a mapping of its keyword arguments)
    the ``explore`` and ``exploit`` children are replaced by one gated child holding their
    combined fraction, split between them by the trend gate; their own fractions then only matter
    through their sum. ``self.trend`` is that gate (``replay_feedback`` feeds it rewards).

    Feedback: :meth:`update_signals` hands the per-sequence ``model_loss`` / ``kl`` / ``entropy``
    to every child that reads them.

    Args:
        samplers: name -> sampler (``uniform``, ``curious``, ``explore``, ``exploit``, ... any
            sequence samplers sharing one ``slice_len``).
        fracs: name -> fraction of the batch.
        trend: optional trend gate between ``explore`` and ``exploit``.

    Example:
        >>> from imwm.replay import CuriousSampler, UniformSliceSampler
        >>> mix = MixtureSampler(
        ...     {"curious": CuriousSampler(1000, slice_len=8),
        ...      "uniform": UniformSliceSampler(1000, slice_len=8)},
        ...     {"curious": 0.75, "uniform": 0.25})
        >>> mix._counts(16)
        {'curious': 12, 'uniform': 4}
    """

    def __init__(
        self,
        samplers: Mapping[str, Sampler],
        fracs: Mapping[str, float],
        trend: TrendMixture | Mapping | None = None,
    ):
        samplers = dict(samplers)
        fracs = check_fracs(fracs, known=list(samplers))
        slice_lens = {getattr(s, "slice_len", None) for s in samplers.values()}
        if len(slice_lens) != 1:
            raise ValueError(f"all samplers must share one slice_len, got {slice_lens}")
        slice_len = slice_lens.pop()
        children: dict[str, Sampler] = {}
        shares: dict[str, float] = {}
        self.trend: TrendMixture | None = None
        if trend is not None:
            for name in ("explore", "exploit"):
                if name not in samplers:
                    raise ValueError(f"a trend gate needs an {name!r} sampler in `samplers`")
            if isinstance(trend, TrendMixture):
                if (trend.children["explore"] is not samplers["explore"]
                        or trend.children["exploit"] is not samplers["exploit"]):
                    raise ValueError("the TrendMixture must wrap this mixture's explore/exploit")
                gate = trend
            elif isinstance(trend, Mapping):
                gate = TrendMixture(samplers["explore"], samplers["exploit"], **dict(trend))
            else:
                raise TypeError(f"trend must be a TrendMixture or a mapping, got {type(trend)}")
            combined = fracs.get("explore", 0.0) + fracs.get("exploit", 0.0)
        for name, sampler in samplers.items():
            if trend is not None and name in ("explore", "exploit"):
                if name == "explore" and combined > 0:
                    children["trend"] = gate
                    shares["trend"] = combined
                    self.trend = gate
                continue
            if fracs.get(name, 0.0) > 0:
                children[name] = sampler
                shares[name] = fracs[name]
        super().__init__(children, slice_len=slice_len)
        self.fracs = fracs
        self.shares = shares

    def _counts(self, num_slices: int) -> dict[str, int]:
        names = list(self.shares)
        counts = split_counts(num_slices, [self.shares[n] for n in names], self._rng)
        return dict(zip(names, counts))

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        if self.trend is not None:
            out["gate"] = self.trend.gate
        return out

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["fracs"] = dict(self.fracs)
        return out
