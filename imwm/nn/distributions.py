"""Categorical-latent helpers for DreamerV3-style discrete states.

Conventions: a *log-prob tensor* ``[..., S, C]`` holds normalised log probabilities of S
independent categoricals with C classes each. Everything here works on the last axis only,
so callers choose what to sum over (RSSM sums over the S categoricals).

DreamerV3 (Hafner et al., 2023) mixes 1% of a uniform distribution into every categorical
("unimix") so that no probability falls below ``unimix / C``; the *mixed* distribution is the
one that is sampled, scored by the KL and used for entropies. TorchRL 0.14.1's
``RSSMPriorV3`` / ``RSSMPosteriorV3`` return the raw logits and mix only inside sampling, so
imwm computes the mixed log-probs here and stores those in the state.
"""

from __future__ import annotations

import math

import torch


def unimix_logits(logits: torch.Tensor, unimix: float) -> torch.Tensor:
    """Normalised log-probs of ``(1 - unimix) * softmax(logits) + unimix / C``.

    Args:
        logits: raw logits ``[..., C]``.
        unimix: uniform fraction in ``[0, 1)``; 0 returns ``log_softmax(logits)``.

    Example:
        >>> p = unimix_logits(torch.tensor([[100.0, 0.0, 0.0, 0.0]]), 0.01).exp()
        >>> bool(p.min() >= 0.01 / 4 - 1e-7)
        True
    """
    if not 0.0 <= unimix < 1.0:
        raise ValueError(f"unimix must be in [0, 1), got {unimix}")
    logits = logits.float()  # under bfloat16 autocast the distribution is still evaluated in float32
    if unimix == 0.0:
        return torch.log_softmax(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    # mixed probabilities are >= unimix / C > 0, so the log is finite
    return (probs * (1.0 - unimix) + unimix / logits.shape[-1]).log()


def straight_through_sample(
    log_probs: torch.Tensor, uniform: torch.Tensor | None = None
) -> torch.Tensor:
    """One-hot sample with the straight-through gradient of the probabilities.

    Forward value: a one-hot sample of ``Categorical(exp(log_probs))`` along the last axis.
    Backward: the gradient of ``probs`` (Bengio et al., 2013; as in DreamerV2/V3):
    ``sample = onehot + probs - sg(probs)``.

    Args:
        log_probs: normalised log-probs ``[..., C]``.
        uniform: optional ``U(0, 1)`` draws ``[...]`` (one per categorical), to make the sample
            reproducible or to draw noise for many steps at once.

    Example:
        >>> log_p = torch.tensor([0.2, 0.5, 0.3]).log().expand(3, 3)
        >>> # cumulative mass 0.2, 0.7, 1.0: each draw lands in a different class
        >>> straight_through_sample(log_p, uniform=torch.tensor([0.1, 0.6, 0.95]))
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
    """
    probs = log_probs.exp()
    if uniform is None:
        uniform = torch.rand(probs.shape[:-1], device=probs.device, dtype=probs.dtype)
    elif uniform.shape != probs.shape[:-1]:
        raise ValueError(
            f"uniform must have shape {tuple(probs.shape[:-1])}, got {tuple(uniform.shape)}"
        )
    # inverse-CDF sampling: index = number of classes whose cumulative mass is below u
    index = (probs.cumsum(-1) < uniform.unsqueeze(-1)).sum(-1, keepdim=True)
    index = index.clamp_max(probs.shape[-1] - 1)
    one_hot = torch.zeros_like(probs).scatter_(-1, index, 1.0)
    return one_hot + (probs - probs.detach())


def categorical_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_c p_c (log p_c - log q_c)`` over the last axis.

    Both inputs are normalised log-probs ``[..., C]``; returns ``[...]``. Every entry must be
    finite (each class keeps some mass, as the 1% unimix mixture guarantees): a class with
    probability exactly 0 gives ``0 * -inf = nan``.

    Example:
        >>> p, q = torch.tensor([0.5, 0.5]).log(), torch.tensor([0.25, 0.75]).log()
        >>> categorical_kl(p, p)
        tensor(0.)
        >>> round(categorical_kl(p, q).item(), 4)  # 0.5 log 2 + 0.5 log(2/3)
        0.1438
    """
    if log_p.shape != log_q.shape:
        raise ValueError(
            f"log_p and log_q must have the same shape, got {tuple(log_p.shape)} "
            f"and {tuple(log_q.shape)}"
        )
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def categorical_entropy(log_p: torch.Tensor) -> torch.Tensor:
    """``H(p) = -sum_c p_c log p_c`` over the last axis; returns ``[...]``.

    ``log_p`` must be finite, as for :func:`categorical_kl`.

    Example:
        >>> round(categorical_entropy(torch.full((4,), 0.25).log()).item(), 4)  # log 4
        1.3863
    """
    return -(log_p.exp() * log_p).sum(-1)


def uniform_log_probs(shape, *, device=None, dtype=None) -> torch.Tensor:
    """Log-probs of the uniform categorical, ``log(1 / C)`` everywhere (``C = shape[-1]``).

    Example:
        >>> uniform_log_probs((2, 4)).exp()
        tensor([[0.2500, 0.2500, 0.2500, 0.2500],
                [0.2500, 0.2500, 0.2500, 0.2500]])
    """
    return torch.full(shape, -math.log(shape[-1]), device=device, dtype=dtype)


def gaussian_nll(error: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise negative log-likelihood of a Normal with the given ``std`` at ``error = x - mean``:
    ``0.5 (error / std)^2 + log std + 0.5 log(2 pi)`` (the decoders' loss when they learn a std).

    Example:
        >>> round(gaussian_nll(torch.tensor(0.0), torch.tensor(1.0)).item(), 4)
        0.9189
    """
    return 0.5 * (error / std).square() + std.log() + 0.5 * math.log(2 * math.pi)
