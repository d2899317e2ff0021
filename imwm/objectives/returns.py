"""Lambda-returns, imagined discount weights and the percentile return normaliser of DreamerV3.

Reference: Hafner et al., "Mastering Diverse Domains through World Models" (DreamerV3, 2023),
section "Critic learning" (lambda-returns) and "Robust predictions / return normalisation".

Layout: imagined trajectories are ``[N, H+1, 1]`` (docs/architecture.md, "Imagined trajectory"),
index 0 is the start state, ``reward[:, t]`` is the reward for *arriving* at state ``t`` and
``continue[:, t]`` the predicted probability that the episode goes on at state ``t``.
:func:`replay_lambda_return` computes the same kind of return along a replayed sequence
``[B, T, 1]`` (DreamerV3's 2024 replay value loss).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchrl.modules import PercentileValueNorm

__all__ = ["lambda_return", "replay_lambda_return", "imagined_weight", "finite_quantiles", "ReturnNormalizer"]


def _check_traj(name: str, x: Tensor, like: Tensor | None = None) -> None:
    if x.ndim < 2 or x.shape[-1] != 1:
        raise ValueError(f"{name} must have shape [..., H+1, 1], got {tuple(x.shape)}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name} must have the shape of reward {tuple(like.shape)}, got {tuple(x.shape)}")


def lambda_return(
    reward: Tensor, value: Tensor, continue_: Tensor, *, gamma: float, lmbda: float
) -> Tensor:
    """TD(lambda) returns of an imagined trajectory, DreamerV3's critic target.

    ``R_t = r_{t+1} + gamma * c_{t+1} * ((1 - lambda) * v_{t+1} + lambda * R_{t+1})``, ``R_H = v_H``.

    The discount is applied here and only here: ``continue_`` is the continue head's
    *probability* (no gamma inside it), so ``gamma`` multiplies it once.

    Args:
        reward: ``[..., H+1, 1]`` reward for arriving at each state (index 0 is unused).
        value: ``[..., H+1, 1]`` critic value of each state.
        continue_: ``[..., H+1, 1]`` continue probability of each state (index 0 is unused).
        gamma: discount per step (DreamerV3: ``1 - 1/333``).
        lmbda: return mixing coefficient (DreamerV3: 0.95).

    Returns:
        ``[..., H, 1]``: the returns ``R_0 .. R_{H-1}``. The loop runs over the H steps on
        whole tensors (H = 15 in DreamerV3), never over elements.

    Example:
        >>> r = torch.tensor([[[0.0], [1.0], [1.0]]])
        >>> v = torch.zeros(1, 3, 1)
        >>> c = torch.ones(1, 3, 1)
        >>> lambda_return(r, v, c, gamma=1.0, lmbda=1.0).squeeze(-1)
        tensor([[2., 1.]])
    """
    _check_traj("reward", reward)
    _check_traj("value", value, reward)
    _check_traj("continue", continue_, reward)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= lmbda <= 1.0:
        raise ValueError(f"lmbda must be in [0, 1], got {lmbda}")
    horizon = reward.shape[-2] - 1
    if horizon < 1:
        raise ValueError(f"a trajectory needs at least 2 states (H >= 1), got {reward.shape[-2]}")
    discount = gamma * continue_[..., 1:, :]
    # the part of each return that does not depend on the next return, in one batched op
    base = reward[..., 1:, :] + discount * (1.0 - lmbda) * value[..., 1:, :]
    return _recurse(base, discount * lmbda, value[..., -1, :])


def _recurse(base: Tensor, scaled: Tensor, last: Tensor) -> Tensor:
    """``R_t = base_t + scaled_t * R_{t+1}`` backwards from ``R_len = last``; ``[..., len, 1]``."""
    out = []
    nxt = last
    for t in range(base.shape[-2] - 1, -1, -1):
        nxt = base[..., t, :] + scaled[..., t, :] * nxt
        out.append(nxt)
    out.reverse()
    return torch.stack(out, dim=-2)


def replay_lambda_return(
    reward: Tensor,
    bootstrap: Tensor,
    is_terminal: Tensor,
    is_last: Tensor,
    *,
    gamma: float,
    lmbda: float,
) -> Tensor:
    """TD(lambda) returns along a *replayed* sequence, the targets of DreamerV3's replay value loss.

    danijar/dreamerv3 (2024 code, commit e3f0224) ``dreamerv3/agent.py``: ``repl_loss`` (lines
    449-479) calls ``lambda_return`` (lines 482-490) with the replayed ``is_last``,
    ``is_terminal`` and rewards, ``disc = 1 - 1/horizon`` and, as bootstrap, the imagination
    return ``R_0`` of the imagined rollout started from each replayed posterior state
    (``boot = imgloss_out['ret'][:, 0]``, line 222), not the critic's value::

        lam_{t+1} = lambda * (1 - is_last_{t+1})
        R_t = r_{t+1} + gamma * (1 - is_terminal_{t+1})
                        * ((1 - lam_{t+1}) * b_{t+1} + lam_{t+1} * R_{t+1}),     R_{T-1} = b_{T-1}

    So an episode end cuts the recursion: after a terminal step nothing is added, after a
    truncation (``is_last`` without ``is_terminal``) the imagination return of that last state is.

    Args:
        reward: ``[..., T, 1]`` replayed reward for arriving at each step (index 0 unused).
        bootstrap: ``[..., T, 1]`` imagination return ``R_0`` from each step's posterior state.
        is_terminal, is_last: ``[..., T, 1]`` replayed flags (bool or 0/1 floats; index 0 unused).
        gamma: discount per step (reference ``1 - 1/333``).
        lmbda: lambda (reference 0.95, ``repl_loss.lam``).

    Returns:
        ``[..., T-1, 1]``: ``R_0 .. R_{T-2}`` (detached inputs give detached returns).

    Example:
        >>> r = torch.tensor([[[0.0], [1.0], [2.0]]])
        >>> b = torch.tensor([[[0.0], [10.0], [20.0]]])
        >>> no = torch.zeros(1, 3, 1)
        >>> replay_lambda_return(r, b, no, no, gamma=1.0, lmbda=0.5).squeeze(-1)
        tensor([[17., 22.]])
    """
    _check_traj("reward", reward)
    for name, x in (("bootstrap", bootstrap), ("is_terminal", is_terminal), ("is_last", is_last)):
        _check_traj(name, x, reward)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= lmbda <= 1.0:
        raise ValueError(f"lmbda must be in [0, 1], got {lmbda}")
    if reward.shape[-2] < 2:
        raise ValueError(f"a replayed sequence needs at least 2 steps, got {reward.shape[-2]}")
    dtype = reward.dtype
    discount = gamma * (1.0 - is_terminal[..., 1:, :].to(dtype))
    lam = lmbda * (1.0 - is_last[..., 1:, :].to(dtype))
    base = reward[..., 1:, :] + discount * (1.0 - lam) * bootstrap[..., 1:, :]
    return _recurse(base, discount * lam, bootstrap[..., -1, :])


def imagined_weight(continue_: Tensor, *, gamma: float) -> Tensor:
    """Cumulative discount of reaching each imagined state, DreamerV3's loss weight.

    ``w_0 = c_0``, ``w_t = c_0 * prod_{k=1..t} gamma * c_k``; ``c_0 = 1 - is_terminal`` of the
    start state, so terminal starts contribute nothing. Returned detached: it weights the
    actor and critic losses but is not optimised.

    Args:
        continue_: ``[..., H+1, 1]`` continue probabilities.
        gamma: discount per step.

    Returns:
        ``[..., H+1, 1]`` weights.

    Example:
        >>> c = torch.tensor([[[1.0], [0.5], [1.0]], [[0.0], [1.0], [1.0]]])  # 2nd starts terminal
        >>> imagined_weight(c, gamma=0.9).squeeze(-1)
        tensor([[1.0000, 0.4500, 0.4050],
                [0.0000, 0.0000, 0.0000]])
    """
    _check_traj("continue", continue_)
    continue_ = continue_.detach()
    factors = torch.cat([continue_[..., :1, :], gamma * continue_[..., 1:, :]], dim=-2)
    return factors.cumprod(dim=-2)


def finite_quantiles(x: Tensor, q: Tensor) -> Tensor:
    """Quantiles ``q`` ``[K]`` of the finite entries of each column of ``x`` ``[N, ...]``: ``[K, ...]``.

    Linear interpolation between order statistics, as ``torch.quantile``: the ``q``-quantile of
    ``n`` finite values is ``v_(i) + (p - i) (v_(i+1) - v_(i))`` with ``p = q (n - 1)`` and
    ``i = floor(p)``. Written with a sort and a gather so that it has no data-dependent shapes
    or host syncs (``torch.nanquantile`` breaks a ``torch.compile`` graph in torch 2.11); a
    column without a finite entry gives NaN.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [float("nan")], [3.0], [float("inf")]])
        >>> finite_quantiles(x, torch.tensor([0.0, 0.5, 1.0])).flatten()
        tensor([0., 1., 3.])
    """
    finite = torch.isfinite(x)
    count = finite.sum(0, keepdim=True)
    # non-finite entries sort to the end, past every finite one
    ordered = torch.sort(torch.where(finite, x, torch.full_like(x, math.inf)), dim=0).values
    pos = q.reshape(-1, *([1] * (x.dim() - 1))) * (count - 1).clamp_min(0).to(x.dtype)
    lower = pos.floor()
    below = ordered.gather(0, lower.long())
    above = ordered.gather(0, pos.ceil().long())
    out = below + (pos - lower) * (above - below)  # exact at integer positions (above == below)
    return torch.where(count > 0, out, torch.full_like(out, math.nan))


class ReturnNormalizer(PercentileValueNorm):
    """DreamerV3 return scale ``S = EMA_decay(Per(R, high) - Per(R, low))``; divide by ``max(1, S)``.

    The EMA of the percentile range equals the range of the two percentile EMAs (the EMA is
    linear and both start at 0), which is how this stores it: buffers ``low`` and ``high``
    (checkpointed). Reuses TorchRL's :class:`~torchrl.modules.PercentileValueNorm` (checked in
    tests against hand-computed EMAs); this subclass only exposes DreamerV3's parameters under
    config names and returns a 0-d scale.

    Non-finite returns (NaN, +-inf) are ignored by :meth:`update`: the percentiles are those of
    the finite returns only (:func:`finite_quantiles`, equal to ``torch.nanquantile`` after mapping
    +-inf to NaN), and a batch without a finite return leaves ``low`` and ``high`` unchanged.
    Branch-free (``torch.where``) and without host syncs, so ``torch.compile(fullgraph=True)``
    traces it whole (``torch.nanquantile`` itself breaks the graph in torch 2.11).

    Args:
        decay: EMA decay (DreamerV3: 0.99, i.e. TorchRL rate 0.01).
        perc_low, perc_high: percentiles in [0, 100] (DreamerV3: 5 and 95).
        min_scale: floor of the divisor (finite, > 0; DreamerV3: 1, so small returns are not
            amplified).

    Example:
        >>> norm = ReturnNormalizer(decay=0.0)
        >>> norm.update(torch.linspace(0, 100, 101).unsqueeze(-1))
        >>> norm.scale()
        tensor(90.)
    """

    def __init__(
        self,
        *,
        decay: float = 0.99,
        perc_low: float = 5.0,
        perc_high: float = 95.0,
        min_scale: float = 1.0,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"retnorm decay must be in [0, 1), got {decay}")
        if not 0.0 <= perc_low < perc_high <= 100.0:
            raise ValueError(
                f"retnorm percentiles must satisfy 0 <= perc_low < perc_high <= 100, "
                f"got perc_low={perc_low}, perc_high={perc_high}"
            )
        if not (math.isfinite(min_scale) and min_scale > 0):
            raise ValueError(f"retnorm min_scale must be a finite number > 0, got {min_scale}")
        super().__init__(
            shape=1,
            quantiles=(perc_low / 100.0, perc_high / 100.0),
            rate=1.0 - decay,
            min_scale=min_scale,
        )

    @torch.no_grad()
    def update(self, value_target: Tensor) -> None:
        """EMA step of ``low`` / ``high`` towards the batch percentiles of the finite returns."""
        value_target = value_target.detach()
        self._check_trailing_shape(value_target)
        flat = value_target.reshape(-1, *self.shape).to(self.low.dtype)
        finite = torch.isfinite(flat)
        # NaN in a column without a finite entry: not read below
        batch_low, batch_high = finite_quantiles(flat, self._q.to(device=flat.device, dtype=flat.dtype))
        seen = finite.any(0)
        self.low.copy_(torch.where(seen, torch.lerp(self.low, batch_low, self.rate), self.low))
        self.high.copy_(torch.where(seen, torch.lerp(self.high, batch_high, self.rate), self.high))

    def scale(self) -> Tensor:  # 0-d, so it broadcasts against any advantage shape
        return super().scale().reshape(())
