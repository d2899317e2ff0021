"""Boundary maths of Variational Temporal Abstraction (Kim, Ahn & Bengio, NeurIPS 2019).

The boundary ``m_t`` is a two-way categorical: READ (a new segment starts at ``t`` and the
abstract level transitions) or COPY (the segment continues; the abstract state is copied). Two
encodings of it meet in the code, with one pair of constants each so that neither is read as the
other:

- class indices of the logits / one-hot samples ``[..., 2]``: :data:`READ_INDEX` ``= 0`` and
  :data:`COPY_INDEX` ``= 1`` (``logits[..., READ_INDEX]`` is the READ logit);
- the ``boundary`` value ``[..., 1]`` of a state TensorDict, a READ flag:
  :data:`BOUNDARY_READ` ``= 1.0`` and :data:`BOUNDARY_COPY` ``= 0.0``
  (``state["boundary"] == BOUNDARY_READ`` selects READ steps).

Comparing a ``boundary`` value with an index (``boundary == READ_INDEX``) would select the COPY
steps, hence the distinct names.

Contents:

- :func:`gumbel_sampling` -- Gumbel-perturbed, temperature-scaled logits (Jang et al. 2017).
- :func:`straight_through` / :func:`boundary_sample` -- one-hot forward, soft backward.
- :func:`log_density_concrete` -- log density of the Concrete / relaxed-categorical distribution
  (Maddison et al. 2017) used by the original VTA boundary KL.
- :func:`regularize_boundary` -- push the logits towards READ after ``max_seg_len`` steps and
  towards COPY after ``max_seg_num`` segments.
- :func:`force_scale_at` -- a schedule that forces boundaries weakly early in training and then
  decays to the configured value (a remedy for a boundary detector that collapses to all-READ
  or all-COPY).
- :func:`temperature_at` -- Gumbel temperature annealing towards a floor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from imwm.errors import check_integer

# class indices of the boundary logits / one-hot samples [..., 2]
READ_INDEX, COPY_INDEX = 0, 1
# values of a state's `boundary` entry [..., 1] (a READ flag)
BOUNDARY_READ, BOUNDARY_COPY = 1.0, 0.0

__all__ = [
    "READ_INDEX",
    "COPY_INDEX",
    "BOUNDARY_READ",
    "BOUNDARY_COPY",
    "gumbel_sampling",
    "straight_through",
    "boundary_sample",
    "log_density_concrete",
    "regularize_boundary",
    "boundary_push",
    "force_scale_at",
    "temperature_at",
    "check_boundary_options",
    "bernoulli_kl",
    "rate_prior_kl",
]


def _check_temp(temp: float, name: str = "temp") -> None:
    if not (isinstance(temp, (int, float)) and math.isfinite(temp) and temp > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {temp!r}")


def gumbel_sampling(
    log_alpha: Tensor, temp: float, margin: float = 1e-4, generator: torch.Generator | None = None
) -> Tensor:
    """Gumbel-perturbed logits divided by a temperature.

    ``(log_alpha + g) / temp`` with ``g = -log(-log u)``, ``u ~ U(margin, 1 - margin)``; the margin
    keeps ``g`` finite. The softmax of the result is a Gumbel-softmax (Concrete) sample.

    Args:
        log_alpha: unnormalised logits ``[..., K]``.
        temp: temperature > 0.
        margin: keeps the uniform noise away from 0 and 1.
        generator: optional ``torch.Generator`` for reproducible noise.

    Example:
        >>> x = gumbel_sampling(torch.zeros(4, 2), temp=1.0)
        >>> x.shape
        torch.Size([4, 2])
    """
    _check_temp(temp)
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin!r}")
    noise = torch.empty_like(log_alpha).uniform_(margin, 1.0 - margin, generator=generator)
    return (log_alpha - torch.log(-torch.log(noise))) / temp


def straight_through(prob: Tensor) -> Tensor:
    """Straight-through one-hot: forward is ``onehot(argmax(prob))``, backward is ``d prob``.

    ``hard + (prob - prob.detach())`` (Bengio et al. 2013): the value is exactly one-hot,
    the gradient is the gradient of the soft probabilities.

    Example:
        >>> prob = torch.tensor([0.3, 0.7], requires_grad=True)
        >>> hard = straight_through(prob)
        >>> hard.tolist()
        [0.0, 1.0]
        >>> (hard * torch.tensor([1.0, 2.0])).sum().backward()
        >>> prob.grad  # the identity Jacobian of the soft probabilities
        tensor([1., 2.])
    """
    hard = torch.nn.functional.one_hot(prob.argmax(-1), prob.shape[-1]).to(prob.dtype)
    return hard + (prob - prob.detach())  # bracketed: the forward value is exactly one-hot


def boundary_sample(
    log_alpha: Tensor,
    temp: float,
    *,
    sample: bool = True,
    margin: float = 1e-4,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw a straight-through boundary from logits, as the original VTA ``boundary_sampler``.

    With ``sample=True`` the logits are Gumbel-perturbed (training); with ``sample=False`` they
    are only divided by ``temp`` (evaluation: the mode). The perturbed logits are normalised with
    log-softmax; the returned one-hot has the soft probabilities' gradient.

    Returns:
        ``(boundary_onehot [..., 2], log_sample [..., 2])`` where ``log_sample`` are the normalised
        log-probabilities of the relaxed sample (the Concrete sample's log), used by
        :func:`log_density_concrete`.

    Example:
        >>> onehot, log_sample = boundary_sample(torch.tensor([[2.0, 0.0]]), temp=1.0, sample=False)
        >>> onehot.tolist(), round(log_sample.exp()[0, READ_INDEX].item(), 4)  # sigmoid(2)
        ([[1.0, 0.0]], 0.8808)
        >>> _ = torch.manual_seed(0)
        >>> boundary_sample(torch.zeros(3, 2), temp=0.5)[0].sum(-1).tolist()
        [1.0, 1.0, 1.0]
    """
    if sample:
        logits = gumbel_sampling(log_alpha, temp, margin, generator)
    else:
        _check_temp(temp)
        logits = log_alpha / temp
    log_sample = torch.log_softmax(logits, dim=-1)
    return straight_through(log_sample.exp()), log_sample


def log_density_concrete(log_alpha: Tensor, log_sample: Tensor, temp: float, exact: bool = False) -> Tensor:
    """Log density of a Concrete (relaxed one-hot) sample (Maddison et al. 2017, eq. 3).

    With ``e_k = log_alpha_k - temp * log_sample_k`` and ``K`` categories, the original VTA uses
    ``sum_k e_k - K * logsumexp_k(e_k)`` (``K = 2`` for boundaries). The full density adds
    ``log((K-1)!) + (K-1) * log(temp) - sum_k log_sample_k``; those terms cancel in a
    posterior-minus-prior KL evaluated at the same sample and temperature, so they are added only
    with ``exact=True``.

    Args:
        log_alpha: logits ``[..., K]`` of the distribution whose density is evaluated.
        log_sample: log of the relaxed sample ``[..., K]`` (normalised: ``logsumexp == 0``).
        temp: temperature > 0.
        exact: add the sample- and temperature-dependent constant terms.

    Returns:
        ``[...]`` log density.

    Example:
        >>> log_alpha, log_sample = torch.zeros(2), torch.tensor([0.5, 0.5]).log()
        >>> round(log_density_concrete(log_alpha, log_sample, 1.0).item(), 4)  # -2 log 2
        -1.3863
        >>> # uniform logits at temp 1: the density is 1 all over the simplex
        >>> round(log_density_concrete(log_alpha, log_sample, 1.0, exact=True).item(), 4)
        0.0
    """
    _check_temp(temp)
    if log_alpha.shape != log_sample.shape:
        raise ValueError(
            f"log_alpha and log_sample must have the same shape, got {tuple(log_alpha.shape)} "
            f"and {tuple(log_sample.shape)}"
        )
    k = log_alpha.shape[-1]
    exp_term = log_alpha - temp * log_sample
    log_prob = exp_term.sum(-1) - k * torch.logsumexp(exp_term, dim=-1)
    if exact:
        log_prob = log_prob + math.lgamma(k) + (k - 1) * math.log(temp) - log_sample.sum(-1)
    return log_prob


def check_boundary_options(
    *, max_seg_len: int, max_seg_num: int, force_scale: float, temp: float | None = None
) -> None:
    """Raise ``ValueError`` naming the first bad boundary option.

    Example:
        >>> check_boundary_options(max_seg_len=10, max_seg_num=5, force_scale=3.0, temp=0.5)  # passes
        >>> check_boundary_options(max_seg_len=10, max_seg_num=0, force_scale=3.0)
        Traceback (most recent call last):
        ...
        ValueError: max_seg_num must be an integer >= 1, got 0
    """
    check_integer("max_seg_len", max_seg_len)
    check_integer("max_seg_num", max_seg_num)
    if not (isinstance(force_scale, (int, float)) and math.isfinite(force_scale) and force_scale >= 0):
        raise ValueError(f"boundary force_scale must be a finite number >= 0, got {force_scale!r}")
    if temp is not None:
        _check_temp(temp, "boundary_temp")


def regularize_boundary(
    logits: Tensor,
    seg_len: Tensor,
    seg_num: Tensor,
    max_seg_len: int,
    max_seg_num: int,
    force_scale: float,
) -> Tensor:
    """Push boundary logits to respect the segment constraints.

    ``logits[..., READ_INDEX]`` is READ and ``logits[..., COPY_INDEX]`` is COPY. Where ``seg_len >= max_seg_len``
    the READ logit is raised by ``force_scale``; elsewhere, where ``seg_num >= max_seg_num``, the
    COPY logit is raised by ``force_scale`` (the length rule takes precedence). ``force_scale == 0``
    returns ``logits`` itself, unchanged. The original VTA code replaced the logits with
    near-one-hot constants; the additive form lets the strength be tuned or scheduled
    (:func:`force_scale_at`), and ``force_scale=0`` turns forcing off.

    Args:
        logits: ``[..., 2]``.
        seg_len: ``[..., 1]`` length of the current segment *before* this step.
        seg_num: ``[..., 1]`` number of segments so far *before* this step.
        max_seg_len, max_seg_num: ints >= 1.
        force_scale: >= 0.

    Example:
        >>> lg = torch.zeros(2, 2)
        >>> regularize_boundary(lg, torch.tensor([[10.], [0.]]), torch.tensor([[9.], [9.]]), 10, 5, 3.0)
        tensor([[3., 0.],
                [0., 3.]])
    """
    check_boundary_options(max_seg_len=max_seg_len, max_seg_num=max_seg_num, force_scale=force_scale)
    if logits.shape[-1] != 2:
        raise ValueError(f"boundary logits must have last dim 2 (READ, COPY), got {tuple(logits.shape)}")
    if seg_len.shape[-1] != 1 or seg_num.shape[-1] != 1:
        raise ValueError(
            f"seg_len and seg_num must end in a dim of 1, got {tuple(seg_len.shape)} and {tuple(seg_num.shape)}"
        )
    if force_scale == 0:
        return logits
    return logits + boundary_push(logits, seg_len, seg_num, max_seg_len, max_seg_num) * force_scale


def boundary_push(logits: Tensor, seg_len: Tensor, seg_num: Tensor, max_seg_len: int, max_seg_num: int) -> Tensor:
    """The unscaled push of :func:`regularize_boundary`: 1 on READ where ``seg_len >= max_seg_len``,
    else 1 on COPY where ``seg_num >= max_seg_num``, 0 elsewhere (``logits`` gives dtype and shape).

    Example:
        >>> boundary_push(torch.zeros(2, 2), torch.tensor([[10.], [0.]]), torch.tensor([[9.], [9.]]), 10, 5)
        tensor([[1., 0.],
                [0., 1.]])
    """
    over_len = (seg_len >= max_seg_len).to(logits.dtype)
    over_num = (seg_num >= max_seg_num).to(logits.dtype) * (1.0 - over_len)
    # columns in class order: READ_INDEX (0) then COPY_INDEX (1)
    return torch.cat([over_len, over_num], dim=-1)


def force_scale_at(
    update: int,
    *,
    force_scale: float,
    schedule: str = "constant",
    start: float = 1.0,
    decay_updates: int = 0,
) -> float:
    """Force scale for a given update counter.

    ``schedule="constant"``: always ``force_scale``. ``"linear"``: from ``start`` at update 0 to
    ``force_scale`` at ``decay_updates``, then ``force_scale``. ``"exponential"``: ``force_scale +
    (start - force_scale) * 0.01 ** (update / decay_updates)`` then exactly ``force_scale`` after
    ``decay_updates``. With ``force_scale=0`` and a small ``start`` this forces boundaries weakly
    early in training and then turns forcing off (against a detector that collapses to all-COPY).

    Example:
        >>> decay = dict(force_scale=0.0, start=1.0, decay_updates=100)
        >>> [force_scale_at(u, schedule="linear", **decay) for u in (0, 50, 100)]
        [1.0, 0.5, 0.0]
        >>> round(force_scale_at(50, schedule="exponential", **decay), 4)  # 0.01 ** 0.5
        0.1
    """
    if schedule == "constant":
        return float(force_scale)
    if schedule not in ("linear", "exponential"):
        raise ValueError(f"boundary force schedule must be constant|linear|exponential, got {schedule!r}")
    if decay_updates < 1:
        raise ValueError(f"force_decay_updates must be >= 1 with schedule {schedule!r}, got {decay_updates!r}")
    if start < 0 or force_scale < 0:
        raise ValueError(f"force scales must be >= 0, got start={start!r}, end={force_scale!r}")
    if update >= decay_updates:
        return float(force_scale)
    frac = max(update, 0) / decay_updates
    weight = 1.0 - frac if schedule == "linear" else 0.01**frac
    return float(force_scale + (start - force_scale) * weight)


def temperature_at(update: int, *, temp: float, temp_min: float, anneal_rate: float) -> float:
    """Gumbel temperature ``max(temp_min, temp * exp(-anneal_rate * update))`` (Jang et al. 2017).

    ``anneal_rate == 0`` keeps ``temp`` constant.

    Example:
        >>> anneal = dict(temp=1.0, temp_min=0.5, anneal_rate=0.01)
        >>> [round(temperature_at(u, **anneal), 4) for u in (0, 50, 1000)]  # exp(-0.5) at 50
        [1.0, 0.6065, 0.5]
    """
    _check_temp(temp, "boundary_temp")
    _check_temp(temp_min, "boundary_temp_min")
    if anneal_rate < 0:
        raise ValueError(f"boundary_temp_anneal_rate must be >= 0, got {anneal_rate!r}")
    if anneal_rate == 0:
        return float(temp)
    return float(max(temp_min, temp * math.exp(-anneal_rate * max(update, 0))))


def bernoulli_kl(prob: Tensor, rate: float, eps: float = 1e-6) -> Tensor:
    """``KL(Bernoulli(prob) || Bernoulli(rate))`` elementwise: the boundary-rate prior.

    ``p log(p / r) + (1 - p) log((1 - p) / (1 - r))``; ``prob`` is clamped to ``[eps, 1 - eps]``.

    Example:
        >>> bernoulli_kl(torch.tensor([0.5, 0.9]), 0.5)  # 0.9 log 1.8 + 0.1 log 0.2
        tensor([0.0000, 0.3681])
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"boundary_rate must be in (0, 1), got {rate!r}")
    p = prob.clamp(eps, 1.0 - eps)
    return p * (torch.log(p) - math.log(rate)) + (1.0 - p) * (torch.log1p(-p) - math.log1p(-rate))


def rate_prior_kl(read_prob: Tensor, rate: float, mask: Tensor | None = None) -> Tensor:
    """Boundary-rate prior per sequence: ``KL(Bern(mean_t q_t(READ)) || Bern(rate))`` -> ``[B]``.

    The mean READ probability of each sequence (over the steps where ``mask`` is true, e.g. all
    but the forced first step) is pulled towards ``rate``. Pulling every step's probability to
    ``rate`` instead (a per-step KL) would reward an undecided detector that reads everywhere with
    probability ``rate``; on the mean, the detector stays free to be sure at changes and silent
    elsewhere as long as it fires at the target rate overall.

    Args:
        read_prob: ``[B, T]`` posterior READ probabilities.
        rate: target READ rate in (0, 1).
        mask: optional ``[B, T]`` bool, the steps that count.

    Example:
        >>> q = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.9, 0.9, 0.9, 0.9]])
        >>> rate_prior_kl(q, 0.5)  # a sure detector firing half the time pays nothing
        tensor([0.0000, 0.0000, 0.3681])
        >>> rate_prior_kl(q[:2], 0.5, mask=torch.tensor([[False, True, True, True], [False] * 4]))
        tensor([0.0566, 0.0000])
    """
    if read_prob.dim() != 2:
        raise ValueError(f"read_prob must be [B, T], got shape {tuple(read_prob.shape)}")
    if mask is None:
        mean = read_prob.mean(1)
    else:
        m = mask.to(read_prob.dtype)
        counted = m.sum(1)
        mean = (read_prob * m).sum(1) / counted.clamp_min(1.0)
        # a row with no counted step has no rate to judge: it pays nothing (not KL(0 || rate))
        return bernoulli_kl(mean, rate) * (counted > 0).to(read_prob.dtype)
    return bernoulli_kl(mean, rate)
