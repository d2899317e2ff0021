"""What one READ is worth to the model: the exact local effect of a boundary on VTA's objective.

A boundary detector trained by gradient descent can only find the true segment starts if the
objective rewards a READ there *given the other boundaries it currently places*. This probe
measures that reward directly: for every step ``t`` it runs the sequence twice, with READ and with
COPY at ``t`` and every other boundary held, and returns

    effect[b, t] = cost(READ at t) - cost(COPY at t),   cost = sum_t obs_cost + READ * KL_abs + KL_obs

(negative: the READ lowers the cost). Both runs use the same random numbers, so the difference is
the boundary's, not the noise's. ``cost="model"`` measures the training objective of the dreamer
variant (``model_cost``) instead of the ELBO, and ``mode="train"`` runs the model as it runs while
it learns: Gumbel noise on (seeded, so shared by both runs) and batch statistics from the batch.
The batch-normed inputs (frames, embeddings) do not depend on the forced flags, so the two runs
still differ only by the boundary; the running statistics are put back afterwards.

This is the quantity the local-expectation gradient of Titsias &
Lazaro-Gredilla (NeurIPS 2015) follows in ``VTAOriginal(boundary_grad="local")``; a straight-through
gradient only approximates it. (The dreamer variant's local gradient follows its training
objective instead, ``model_cost``: the KLs weighted and clipped as in its loss.)
Held at the true boundaries it shows whether the objective prefers the truth near the truth; held
at the model's own boundaries it shows whether it points towards the truth from where the
detector is.

:func:`held_boundary_costs` asks the coarser question first: is the whole true boundary set
cheaper than none, a random set of the same size, or the truth one step late?

Works with models whose ``forward(obs, boundary=flags)`` accepts forced READ flags
(:class:`imwm.vta.VTAOriginal`, :class:`imwm.vta.VTASequenceModel`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from torch import Tensor

from imwm.vta.local_gradient import COST_TERMS

__all__ = ["local_read_effect", "held_boundary_costs", "READ_EFFECT_COSTS", "READ_EFFECT_MODES"]

#: ``elbo``: ``obs_cost + kl_abs + kl_obs``; ``model``: the dreamer variant's ``model_cost``.
READ_EFFECT_COSTS = {"elbo": COST_TERMS, "model": ("model_cost",)}
READ_EFFECT_MODES = ("eval", "train")


def _forced_terms(model: torch.nn.Module, obs: Tensor, flags: Tensor, seed: int,
                  terms: tuple[str, ...] = COST_TERMS) -> dict[str, Tensor]:
    """Per-sequence sums ``[B]`` of the cost terms with ``flags`` forced, noise seeded."""
    with torch.random.fork_rng(devices=[obs.device] if obs.device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model(obs, boundary=flags)
    missing = [k for k in terms if k not in out.keys()]
    if missing:
        raise ValueError(f"the model's output has no {missing} (keys: {sorted(out.keys())})")
    return {k: out[k].sum(1) for k in terms}


def _sequence_cost(model: torch.nn.Module, obs: Tensor, flags: Tensor, seed: int, terms: tuple[str, ...]) -> Tensor:
    return sum(_forced_terms(model, obs, flags, seed, terms).values())


def _check_model_and_flags(model: torch.nn.Module, obs: Tensor, boundary: Tensor, name: str) -> None:
    if model.training:
        raise ValueError(f"{name} needs the model in eval() mode (batch norm would mix the runs)")
    _check_flags(obs, boundary)


def _check_flags(obs: Tensor, boundary: Tensor) -> None:
    B, T = obs.shape[:2]
    if tuple(boundary.shape) != (B, T, 1):
        raise ValueError(f"boundary must be [B, T, 1] READ flags for obs [B, T, ...], got shape {tuple(boundary.shape)}")


@contextmanager
def _training_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in training mode inside; its buffers and its mode as they were afterwards."""
    was_training = model.training
    saved = [(buf, buf.clone()) for buf in model.buffers()]
    model.train()
    try:
        yield
    finally:
        for buf, value in saved:
            buf.copy_(value)
        model.train(was_training)


def _effects(model: torch.nn.Module, obs: Tensor, held: Tensor, seed: int, terms: tuple[str, ...]) -> np.ndarray:
    B, T = obs.shape[:2]
    effect = np.zeros((B, T - 1))
    for t in range(1, T):
        read, copy = held.clone(), held.clone()
        read[:, t], copy[:, t] = 1.0, 0.0
        diff = _sequence_cost(model, obs, read, seed, terms) - _sequence_cost(model, obs, copy, seed, terms)
        effect[:, t - 1] = diff.double().cpu().numpy()
    return effect


@torch.no_grad()
def local_read_effect(model: torch.nn.Module, obs: Tensor, boundary: Tensor, *, seed: int = 0,
                      cost: str = "elbo", mode: str = "eval") -> np.ndarray:
    """``cost(READ at t) - cost(COPY at t)`` per sequence and step, the other boundaries held.

    Args:
        model: a VTA model whose forward takes ``boundary=`` READ flags; in ``eval()`` mode
            unless ``mode="train"``.
        obs: ``[B, T, C, H, W]`` frames.
        boundary: ``[B, T, 1]`` READ flags to hold (step 0 is always READ).
        seed: seeds the random numbers both runs of a step share.
        cost: ``"elbo"`` (reconstruction + READ-weighted abstract KL + observation KL) or
            ``"model"`` (the dreamer variant's training objective, ``model_cost``).
        mode: ``"eval"``, or ``"train"``: the model runs in training mode, as its gradient sees
            it, and its buffers (batch norm's running statistics) are restored afterwards; the
            model is handed back in the mode it came in.

    Returns:
        ``[B, T - 1]`` float64 effects for steps ``1 .. T-1``, in nats.

    Example:
        >>> from imwm.vta import VTAOriginal
        >>> m = VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8).eval()
        >>> obs = torch.randint(0, 255, (2, 5, 3, 16, 16), dtype=torch.uint8)
        >>> local_read_effect(m, obs, torch.zeros(2, 5, 1)).shape
        (2, 4)
    """
    if cost not in READ_EFFECT_COSTS:
        raise ValueError(f"cost must be one of {sorted(READ_EFFECT_COSTS)}, got {cost!r}")
    if mode not in READ_EFFECT_MODES:
        raise ValueError(f"mode must be one of {list(READ_EFFECT_MODES)}, got {mode!r}")
    if mode == "eval":
        _check_model_and_flags(model, obs, boundary, "local_read_effect")
    else:
        _check_flags(obs, boundary)
    held = (boundary > 0.5).float()
    held[:, 0] = 1.0
    with nullcontext() if mode == "eval" else _training_mode(model):
        return _effects(model, obs, held, seed, READ_EFFECT_COSTS[cost])


@torch.no_grad()
def held_boundary_costs(
    model: torch.nn.Module, obs: Tensor, true_boundary: Tensor, *, seed: int = 0
) -> dict[str, dict[str, float]]:
    """The model's cost with whole boundary sets forced: none, the truth, shifted, random, all.

    A model whose objective cannot tell the true segment starts from random ones (``true`` no
    cheaper than ``random``) gives a boundary detector nothing to learn, however it is trained.
    The sets: ``all COPY``; ``true``; ``true +1`` (each true boundary one step late); ``random``
    (the true number per sequence, at random steps); ``all READ``. Step 0 is READ in each.

    Args:
        model: a VTA model in ``eval()`` mode whose forward takes ``boundary=`` READ flags.
        obs: ``[B, T, C, H, W]`` frames.
        true_boundary: ``[B, T, 1]`` true READ flags.
        seed: seeds the model's noise (the same for every set) and the random placement.

    Returns:
        ``{set: {"reads", "obs_cost", "kl_abs", "kl_obs", "cost"}}``: means per sequence, in
        nats (``cost = obs_cost + kl_abs + kl_obs``; ``reads`` excludes step 0).

    Example:
        >>> from imwm.vta import VTAOriginal
        >>> m = VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8).eval()
        >>> obs = torch.randint(0, 255, (2, 6, 3, 16, 16), dtype=torch.uint8)
        >>> truth = torch.zeros(2, 6, 1); truth[:, 3] = 1.0
        >>> costs = held_boundary_costs(m, obs, truth)
        >>> list(costs), costs["true"]["reads"]
        (['all COPY', 'true', 'true +1', 'random', 'all READ'], 1.0)
    """
    _check_model_and_flags(model, obs, true_boundary, "held_boundary_costs")
    B, T = obs.shape[:2]
    true = (true_boundary > 0.5).float()
    late = torch.zeros_like(true)
    late[:, 2:] = true[:, 1:-1]
    gen = torch.Generator().manual_seed(seed)
    rand = torch.zeros_like(true)
    for b in range(B):
        n = int(true[b, 1:].sum())
        rand[b, 1 + torch.randperm(T - 1, generator=gen)[:n]] = 1.0
    sets = {"all COPY": torch.zeros_like(true), "true": true, "true +1": late, "random": rand,
            "all READ": torch.ones_like(true)}
    out = {}
    for name, flags in sets.items():
        flags = flags.clone()
        flags[:, 0] = 1.0
        terms = {k: float(v.mean()) for k, v in _forced_terms(model, obs, flags, seed).items()}
        out[name] = {"reads": float(flags[:, 1:].sum((1, 2)).mean()), **terms, "cost": sum(terms.values())}
    return out
