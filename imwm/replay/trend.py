"""TrendMixture: share a batch between explore and exploit replay by the trend of the reward."""

from __future__ import annotations

import math
from typing import Any

import torch
from torchrl.data.replay_buffers.samplers import Sampler

from imwm.replay.composite import CompositeSampler
from imwm.replay.batch_split import split_counts

__all__ = ["TrendMixture"]


class TrendMixture(CompositeSampler):
    """A gate between an explore and an exploit sampler, driven by the extrinsic reward trend.

    A fast and a slow exponential moving average of the reward detect its trend; while reward rises (the fast average runs ahead of
    the slow one) the gate opens towards exploitation, while it stalls or falls the gate drifts
    back towards exploration::

        fast <- fast + fast_rate * (r - fast)          (fast_rate = 0.1)
        slow <- slow + slow_rate * (r - slow)          (slow_rate = 0.01)
        trend = (fast - slow) / (|slow| + eps)
        gate  = clamp(sigmoid(k * trend), gate_min, gate_max)

    The design fixes the ingredients (fast/slow EMAs, ``k``, ``eps``, clamp, init); the formula,
    normalising by ``|slow| + eps``, is imwm's own. Near a zero reward level it
    makes the gate close to a switch (any rise from 0 saturates the sigmoid), so feed rewards on
    their natural scale, not centred. Both averages start at the first reward seen, so the gate is
    ``gate_init`` until rewards arrive and ``sigmoid(0) = 0.5`` on a reward that never changes.
    An accelerating reward keeps ``fast - slow`` growing and pushes the gate to ``gate_max``; once
    the reward goes flat the averages converge and the gate falls back. Gate 0 means all-explore, 1 all-exploit: of a batch
    of ``n`` slices, ``n * gate`` (rounded without bias) come from ``exploit``.

    Args:
        explore: sampler of the explore share (e.g. ``ExploreExploitSampler(mode="explore")``).
        exploit: sampler of the exploit share.
        fast: rate of the fast EMA, in ``(0, 1]``.
        slow: rate of the slow EMA, in ``(0, fast]``.
        k: trend sensitivity (>= 0).
        eps: keeps the normalisation finite at zero reward (> 0).
        gate_min, gate_max: clamp of the gate, ``0 <= gate_min <= gate_max <= 1``.
        gate_init: gate before any reward, within the clamp.

    Non-finite rewards: :meth:`update_reward` averages the finite entries of its argument only;
    a call without a finite entry adds no point to the stream (the EMAs and the gate stay). The
    number of dropped entries is ``nonfinite_skipped`` (in :meth:`metrics`).

    Example:
        >>> from imwm.replay import ExploreExploitSampler
        >>> tm = TrendMixture(ExploreExploitSampler(100, mode="explore", slice_len=4),
        ...                   ExploreExploitSampler(100, mode="exploit", slice_len=4))
        >>> tm.gate
        0.5
        >>> for t in range(50):
        ...     _ = tm.update_reward(torch.tensor([0.01 * t ** 2]))
        >>> tm.gate
        0.95
    """

    def __init__(
        self,
        explore: Sampler,
        exploit: Sampler,
        *,
        fast: float = 0.1,
        slow: float = 0.01,
        k: float = 5.0,
        eps: float = 1e-6,
        gate_min: float = 0.05,
        gate_max: float = 0.95,
        gate_init: float = 0.5,
    ):
        fast, slow, k, eps = float(fast), float(slow), float(k), float(eps)
        gate_min, gate_max, gate_init = float(gate_min), float(gate_max), float(gate_init)
        if not 0 < fast <= 1:
            raise ValueError(f"trend.fast must be in (0, 1], got {fast}")
        if not 0 < slow <= fast:
            raise ValueError(f"trend.slow must be in (0, fast={fast}], got {slow}")
        if not (math.isfinite(k) and k >= 0):
            raise ValueError(f"trend.k must be a finite number >= 0, got {k}")
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"trend.eps must be a finite number > 0, got {eps}")
        if not 0 <= gate_min <= gate_max <= 1:
            raise ValueError(
                f"need 0 <= gate_min <= gate_max <= 1, got gate_min={gate_min}, gate_max={gate_max}"
            )
        if not gate_min <= gate_init <= gate_max:
            raise ValueError(f"gate_init={gate_init} must lie in [{gate_min}, {gate_max}]")
        super().__init__({"explore": explore, "exploit": exploit},
                         slice_len=getattr(explore, "slice_len", None))
        self.fast_rate, self.slow_rate, self.k, self.eps = fast, slow, k, eps
        self.gate_min, self.gate_max, self.gate_init = gate_min, gate_max, gate_init
        self.reset_trend()

    def reset_trend(self) -> None:
        self.fast_ema = 0.0
        self.slow_ema = 0.0
        self.num_rewards = 0
        self.gate = self.gate_init
        self.nonfinite_skipped = 0

    @property
    def trend(self) -> float:
        return (self.fast_ema - self.slow_ema) / (abs(self.slow_ema) + self.eps)

    def update_reward(self, reward) -> float:
        """Adds one point to the reward stream (the mean of the finite entries of ``reward``);
        returns the new gate. NaN/inf entries are dropped (and counted); with no finite entry
        nothing changes."""
        r = torch.as_tensor(reward, dtype=torch.float64).detach().reshape(-1)
        finite = torch.isfinite(r)
        count = int(finite.sum())
        self.nonfinite_skipped += r.numel() - count
        if count == 0:
            return self.gate
        r = float(torch.where(finite, r, 0.0).sum()) / count
        if not math.isfinite(r):  # finite entries whose sum overflows float64
            self.nonfinite_skipped += count
            return self.gate
        if self.num_rewards == 0:
            self.fast_ema = self.slow_ema = r
        else:
            self.fast_ema += self.fast_rate * (r - self.fast_ema)
            self.slow_ema += self.slow_rate * (r - self.slow_ema)
        self.num_rewards += 1
        z = self.k * self.trend
        gate = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
        self.gate = min(max(gate, self.gate_min), self.gate_max)
        return self.gate

    def fractions(self) -> dict[str, float]:
        """Current share of each child: ``{"explore": 1 - gate, "exploit": gate}``."""
        return {"explore": 1.0 - self.gate, "exploit": self.gate}

    def _counts(self, num_slices: int) -> dict[str, int]:
        n_explore, n_exploit = split_counts(num_slices, [1.0 - self.gate, self.gate], self._rng)
        return {"explore": n_explore, "exploit": n_exploit}

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        out.update(gate=self.gate, trend=self.trend, reward_fast=self.fast_ema,
                   reward_slow=self.slow_ema, nonfinite_skipped=self.nonfinite_skipped)
        return out

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["trend"] = {"fast_ema": self.fast_ema, "slow_ema": self.slow_ema,
                        "num_rewards": self.num_rewards, "gate": self.gate,
                        "nonfinite_skipped": self.nonfinite_skipped}
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        trend = state_dict["trend"]
        self.fast_ema = float(trend["fast_ema"])
        self.slow_ema = float(trend["slow_ema"])
        self.num_rewards = int(trend["num_rewards"])
        self.gate = float(trend["gate"])
        self.nonfinite_skipped = int(trend.get("nonfinite_skipped", 0))  # absent in older states
