"""LaProp with adaptive gradient clipping and linear learning-rate warm-up, DreamerV3's 2024 optimiser.

References:
    Ziyin, Wang and Ueda 2020, "LaProp: Separating Momentum and Adaptivity in Adam": divide the
    gradient by the RMS of past gradients *first*, then take momentum of the normalised
    gradients (Adam takes momentum of raw gradients and normalises afterwards), which keeps
    the update bounded for any ``beta1 <= beta2`` pairing and any ``eps``.
    Brock et al. 2021, "High-Performance Large-Scale Image Recognition Without Normalization"
    (adaptive gradient clipping, AGC): clip a gradient when its norm is large relative to the
    norm of the weights it updates.
    danijar/dreamerv3 (Hafner et al. 2025, Nature version of DreamerV3), commit e3f0224:
    ``dreamerv3/agent.py`` ``Agent._make_opt`` (lines 342-379) chains ``clip_by_agc`` ->
    ``scale_by_rms`` -> ``scale_by_momentum`` -> learning rate with a linear warm-up;
    ``embodied/jax/opt.py`` lines 109-162 define the three transforms; reference values in
    ``dreamerv3/configs.yaml`` line 87: ``lr 4e-5, agc 0.3, eps 1e-20, beta1 0.9, beta2 0.999,
    warmup 1000`` (``momentum True, wd 0, schedule const``), ``pmin`` 1e-3 is ``clip_by_agc``'s
    default (opt.py line 109). The reference has no global-norm clipping in the chain (its
    global norm is a logged metric only, opt.py line 64).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from imwm.errors import check_integer

__all__ = ["LaProp", "check_laprop_options"]


def check_laprop_options(*, betas, agc: float, agc_pmin: float, warmup: int, prefix: str = "") -> None:
    """One-line ``ValueError`` naming the first bad momentum, AGC or warm-up option.

    The one check of these options: :class:`LaProp` runs it with ``prefix="LaProp "``, the agent
    with no prefix, so that its message names the config key (``beta1``, ``agc``, ...) even where
    LaProp is never built (``optimizer=adam`` takes the betas too).

    Example:
        >>> check_laprop_options(betas=(0.9, 0.999), agc=0.3, agc_pmin=1e-3, warmup=1000)
        >>> check_laprop_options(betas=(0.9, 1.0), agc=0.3, agc_pmin=1e-3, warmup=0)
        Traceback (most recent call last):
        ...
        ValueError: beta2 must be a number in [0, 1), got 1.0
    """
    if len(betas) != 2:
        raise ValueError(f"{prefix}betas must be two numbers (beta1, beta2), got {betas}")
    for name, beta in zip(("beta1", "beta2"), betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{prefix}{name} must be a number in [0, 1), got {beta}")
    if not (math.isfinite(agc) and agc >= 0):
        raise ValueError(f"{prefix}agc must be a finite number >= 0 (0 = off), got {agc}")
    if not (math.isfinite(agc_pmin) and agc_pmin > 0):
        # 0 would freeze every zero-initialised tensor: its AGC limit would be 0
        raise ValueError(f"{prefix}agc_pmin must be a finite number > 0, got {agc_pmin}")
    check_integer(f"{prefix}warmup", warmup, 0)


class LaProp(torch.optim.Optimizer):
    """LaProp + per-tensor adaptive gradient clipping + linear warm-up, vectorised (``torch._foreach_*``).

    For each parameter tensor ``p`` with gradient ``g`` at optimiser step ``t = 1, 2, ...``::

        g   <- g / max(1, ||g|| / (agc * max(agc_pmin, ||p||)))     # AGC, skipped when agc = 0
        nu  <- beta2 * nu + (1 - beta2) * g**2
        u   <- g / (sqrt(nu / (1 - beta2**t)) + eps)                 # RMS-normalise first ...
        mu  <- beta1 * mu + (1 - beta1) * u                           # ... then momentum
        p   <- p - lr_t * mu / (1 - beta1**t)
        lr_t = lr * min(1, (t - 1) / warmup)                         # lr_t = lr when warmup = 0

    As in danijar/dreamerv3: the norms of AGC are Frobenius norms of whole tensors (Brock et al.
    clip unit-wise, per output row), ``agc_pmin`` keeps zero-initialised tensors (the critic's
    and reward head's output layers) trainable, and the warm-up is optax's
    ``linear_schedule(0, lr, warmup)`` read at the number of *previous* steps, so step 1 moves
    nothing (its statistics still enter ``nu`` and ``mu``) and step ``warmup + 1`` is the first
    at the full rate. ``p.grad`` is left as it was (the clipped copy feeds the update only).
    A skipped ``step()`` (the agent's non-finite guard) leaves every state entry, the warm-up
    count included, untouched.

    Args:
        params: parameters or parameter groups.
        lr: peak learning rate (reference 4e-5).
        betas: ``(beta1, beta2)``, momentum and RMS decays (reference 0.9, 0.999).
        eps: added to the RMS (reference 1e-20; > 0).
        agc: AGC limit on the ratio of gradient norm to parameter norm (reference 0.3; 0 = off).
        agc_pmin: floor of the parameter norm in AGC (reference 1e-3; > 0).
        warmup: steps of the linear warm-up from 0 to ``lr`` (reference 1000; 0 disables it).

    State per parameter (``state_dict``): ``step`` (0-d float CPU tensor, as Adam's), ``nu``,
    ``mu``.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> opt = LaProp([w], lr=0.1, warmup=0, agc=0.0)
        >>> w.grad = torch.tensor([1.0, -2.0, 0.0])
        >>> opt.step()
        >>> w.detach()  # first step: u = sign(g) (for g != 0), mu_hat = u
        tensor([0.9000, 1.1000, 1.0000])
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 4e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-20,
        agc: float = 0.3,
        agc_pmin: float = 1e-3,
        warmup: int = 1000,
    ) -> None:
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"LaProp lr must be a finite number > 0, got {lr}")
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"LaProp eps must be a finite number > 0, got {eps}")
        check_laprop_options(betas=betas, agc=agc, agc_pmin=agc_pmin, warmup=warmup, prefix="LaProp ")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, agc=agc, agc_pmin=agc_pmin, warmup=int(warmup))
        super().__init__(params, defaults)

    @staticmethod
    def rate(lr: float, warmup: int, step: int) -> float:
        """Learning rate of optimiser step ``step`` (1-based): ``lr * min(1, (step - 1) / warmup)``."""
        if warmup <= 0:
            return lr
        return lr * min(1.0, (step - 1) / warmup)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, nus, mus, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LaProp does not support sparse gradients")
                if torch.is_complex(p):
                    raise RuntimeError("LaProp does not support complex parameters")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["nu"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["mu"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                nus.append(state["nu"])
                mus.append(state["mu"])
                steps.append(state["step"])
            if not params:
                continue
            grouped = self._group_tensors_by_device_and_dtype([params, grads, nus, mus, steps])
            for (dev_params, dev_grads, dev_nus, dev_mus, dev_steps), _ in grouped.values():
                self._update(group, dev_params, dev_grads, dev_nus, dev_mus, dev_steps)
        return loss

    @staticmethod
    def _update(group: dict, params: list[Tensor], grads: list[Tensor], nus: list[Tensor],
                mus: list[Tensor], steps: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        # the step counters live on the CPU (as Adam's): reading them is no device sync
        torch._foreach_add_(steps, 1.0)
        counts = [int(s.item()) for s in steps]
        same = all(t == counts[0] for t in counts)  # the usual case: one scalar for all tensors

        def per_tensor(fn):
            return fn(counts[0]) if same else [fn(t) for t in counts]

        if group["agc"] > 0:
            # all norms of the device group in one stacked op; the factors stay on the device
            grad_norm = torch.stack(torch._foreach_norm(grads))
            param_norm = torch.stack(torch._foreach_norm(params))
            upper = group["agc"] * param_norm.clamp_min(group["agc_pmin"])
            factor = 1.0 / torch.clamp_min(grad_norm / upper, 1.0)
            grads = torch._foreach_mul(grads, list(factor.unbind()))

        torch._foreach_mul_(nus, beta2)
        torch._foreach_addcmul_(nus, grads, grads, value=1.0 - beta2)
        # u = g / (sqrt(nu / (1 - beta2^t)) + eps), built in place in one buffer (CPU allocations
        # cost more than the arithmetic at DreamerV3's tensor sizes)
        update = torch._foreach_sqrt(nus)
        torch._foreach_div_(update, per_tensor(lambda t: math.sqrt(1.0 - beta2**t)))
        torch._foreach_add_(update, group["eps"])
        torch._foreach_reciprocal_(update)
        torch._foreach_mul_(update, grads)
        torch._foreach_lerp_(mus, update, 1.0 - beta1)

        size = per_tensor(lambda t: -LaProp.rate(group["lr"], group["warmup"], t) / (1.0 - beta1**t))
        if same:
            torch._foreach_add_(params, mus, alpha=size)
        else:
            torch._foreach_add_(params, torch._foreach_mul(mus, size))
