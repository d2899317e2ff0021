"""A boundary gradient from real READ/COPY cost differences, instead of the straight-through one.

The straight-through estimator (Bengio et al. 2013) differentiates the model's cost through a
READ flag as if the flag were continuous: it counts a READ's price exactly (``KL(q(z)||p(z))``
is linear in the flag) but only the first-order part of what the READ buys (a new abstract
state, a restarted observation level, reached through GRUs and exponentials). Measured on
trained VTA models, forcing the true boundaries lowered the cost by hundreds of nats per
sequence and random ones by less, while the straight-through gradient said "fewer READs"
nearly everywhere; the detector then never learned where segments start.

:func:`local_boundary_loss` gives the detector the exact partial derivative of the expected cost
with respect to one step's READ probability, the *local expectation gradient* (Titsias &
Lázaro-Gredilla, NeurIPS 2015): with every other boundary at its sample,
``d E[C] / d q_t = C(READ at t) - C(COPY at t)``. Each sequence of the batch flips one
uniformly chosen step ``t >= 1`` of its sampled boundaries; both costs come from the model's own
forward with forced READ flags (``model(obs, boundary=...)``), under the same random numbers, so
the difference is the flip's effect and not noise. The estimate is unbiased for the sum over
steps (scaled by ``T - 1``) and costs two gradient-free forward passes per update. It is exact
where a step's READ probability does not depend on the other steps' flags: true of
:class:`~imwm.vta.VTAOriginal`, and of :class:`~imwm.vta.VTADynamics` with
``boundary_force_scale=0`` (with forcing, a flip also changes how later steps are pushed).
:func:`imwm.analysis.local_read_effect` measures the same difference, with the ELBO's cost, at
every step of a trained model. The two passes run in training mode, so batch normalisation mixes
the batch's flips into each sequence's difference a little; that adds noise, not bias towards READ
or COPY.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["local_boundary_loss", "add_local_gradient", "sequence_cost", "check_boundary_grad", "COST_TERMS",
           "BOUNDARY_GRADS"]

#: the per-step terms of a sequence's cost (the boundary's own KLs are the detector's, not the model's)
COST_TERMS = ("obs_cost", "kl_abs", "kl_obs")

#: how a VTA boundary detector gets its gradient (``boundary_grad=`` of both VTA variants)
BOUNDARY_GRADS = ("straight_through", "local")


def check_boundary_grad(value: str) -> str:
    """``value`` if it names one of :data:`BOUNDARY_GRADS`, else a ``ValueError`` naming the key.

    Example:
        >>> check_boundary_grad("local")
        'local'
        >>> check_boundary_grad("reinforce")
        Traceback (most recent call last):
        ...
        ValueError: boundary_grad must be one of ['straight_through', 'local'], got 'reinforce'
    """
    if value not in BOUNDARY_GRADS:
        raise ValueError(f"boundary_grad must be one of {list(BOUNDARY_GRADS)}, got {value!r}")
    return value


def sequence_cost(out) -> Tensor:
    """``obs_cost + kl_abs + kl_obs`` summed over time: ``[B]`` nats.

    Example:
        >>> out = {"obs_cost": torch.tensor([[1.0, 2.0], [0.0, 1.0]]),
        ...        "kl_abs": torch.tensor([[0.5, 0.0], [0.5, 0.0]]),
        ...        "kl_obs": torch.tensor([[0.25, 0.25], [0.0, 0.0]]),
        ...        "boundary_kl": torch.full((2, 2), 100.0)}   # the detector's own term
        >>> sequence_cost(out)
        tensor([4.0000, 1.5000])
    """
    return sum(out[k] for k in COST_TERMS).sum(1)


def local_boundary_loss(
    model: Callable[..., object], obs: Tensor, out, *, generator: torch.Generator | None = None,
    cost: Callable[..., Tensor] = sequence_cost,
) -> Tensor:
    """Surrogate loss whose gradient in the READ probabilities is the local expectation gradient.

    Args:
        model: a VTA model (or any callable) whose ``model(obs, boundary=flags)`` forces READ flags
            ``[B, T, 1]`` and returns what ``cost`` reads (by default per-step ``obs_cost``, ``kl_abs``, ``kl_obs``
            ``[B, T]``).
        obs: the batch the model was just run on, ``[B, T, ...]``.
        out: that run's output: sampled ``boundary`` ``[B, T, 1]`` (1.0 = READ) and the posterior
            ``read_prob`` ``[B, T, 1]`` (differentiable in the detector's parameters).
        generator: draws the flipped steps.
        cost: a forced run's output -> ``[B]`` cost per sequence, the quantity the detector should
            lower (default :func:`sequence_cost`, the ELBO's terms; a model trained on a reweighted
            objective passes that objective, so the detector and the model minimise the same thing).

    Returns:
        A scalar on the scale of ``out["loss"]`` (a mean over batch and time): add it to the loss.
        ``VTAOriginal(boundary_grad="local")`` and ``VTASequenceModel`` with a local-gradient
        ``VTADynamics`` already add its gradient to their own ``loss`` in training mode: do not add
        it again for those models; call this only for models that don't.
        Its value is not a cost; only its gradient in ``read_prob`` means something,
        ``(T - 1) / (B T) * (C(READ at t_b) - C(COPY at t_b))`` at each sequence's flipped step.

    Example:
        >>> from imwm.vta import VTAOriginal
        >>> m = VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8)
        >>> obs = torch.randint(0, 255, (3, 5, 3, 16, 16), dtype=torch.uint8)
        >>> out = m(obs)
        >>> local_boundary_loss(m, obs, out).shape
        torch.Size([])
    """
    flags = out["boundary"].detach()
    read_prob = out["read_prob"]
    B, T = flags.shape[:2]
    assert flags.shape == (B, T, 1) and read_prob.shape == (B, T, 1), (
        f"boundary and read_prob must be [B, T, 1], got {tuple(flags.shape)} and {tuple(read_prob.shape)}"
    )
    if T < 2:
        raise ValueError(f"local_boundary_loss needs at least 2 steps, got T={T}")
    flags = (flags > 0.5).to(read_prob.dtype)
    step = torch.randint(1, T, (B,), generator=generator, device=flags.device)
    rows = torch.arange(B, device=flags.device)
    flipped = flags.clone()
    flipped[rows, step, 0] = 1.0 - flipped[rows, step, 0]
    cuda = [flags.device] if flags.device.type == "cuda" else []
    with torch.no_grad():
        with torch.random.fork_rng(devices=cuda):  # restored on exit: both passes draw the same noise,
            sampled_cost = cost(model(obs, boundary=flags))  # so the difference is the flip's alone
        flipped_cost = cost(model(obs, boundary=flipped))
    was_read = flags[rows, step, 0] > 0.5
    read_minus_copy = torch.where(was_read, sampled_cost - flipped_cost, flipped_cost - sampled_cost)
    q = read_prob[rows, step, 0]
    return (q * read_minus_copy).sum() * (T - 1) / (B * T)


def add_local_gradient(
    model: torch.nn.Module, obs: Tensor, loss: Tensor, *, read: Tensor, read_prob: Tensor, forced: bool,
    cost: Callable[..., Tensor] = sequence_cost,
) -> Tensor:
    """``loss`` carrying the gradient of :func:`local_boundary_loss` as well, its value unchanged.

    What a VTA model with ``boundary_grad="local"`` returns as its ``loss``: any loop that
    backpropagates it trains the detector on the cost differences. Only in training mode, with
    gradients enabled and no boundaries forced (the surrogate's own passes and diagnostics force
    them); otherwise ``loss`` itself.

    Args:
        model, obs, cost: as for :func:`local_boundary_loss`.
        loss: the model's objective (a scalar).
        read, read_prob: the run's sampled READ flags and posterior READ probability ``[B, T, 1]``.
        forced: whether the run's boundaries were given rather than sampled.

    Example:
        >>> from imwm.vta import VTAOriginal
        >>> m = VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8)
        >>> obs = torch.randint(0, 255, (2, 4, 3, 16, 16), dtype=torch.uint8)
        >>> read_prob = torch.full((2, 4, 1), 0.5, requires_grad=True)
        >>> loss = torch.tensor(3.0)
        >>> out = add_local_gradient(m, obs, loss, read=torch.zeros(2, 4, 1), read_prob=read_prob, forced=False)
        >>> out.item(), out.requires_grad
        (3.0, True)
    """
    if forced or not (model.training and torch.is_grad_enabled()):
        return loss
    surrogate = local_boundary_loss(model, obs, {"boundary": read, "read_prob": read_prob}, cost=cost)
    return loss + (surrogate - surrogate.detach())  # the surrogate's value means nothing
