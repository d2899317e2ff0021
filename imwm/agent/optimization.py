"""The agent's optimisers, and the guarded step that applies one update phase's gradients.

An update has two optimiser phases, the world model and the behaviour (actor and critic); both
run :func:`guarded_step`: backward of the summed ``loss_*`` terms, an optional gradient
all-reduce (data-parallel training), global-norm clipping per parameter group, then either the
optimiser steps or, when a loss term or a gradient norm is not finite, nothing at all. The
skip leaves every optimiser state untouched (LaProp's warm-up count included); a
:class:`NonFiniteGuard` counts skipped updates and raises :class:`NonFiniteUpdateError`, naming
the term, after too many in a row, before anything that diverged can be saved.

Optimisers (``agent.optimizer``): ``"adam"`` (Hafner et al. 2023, DreamerV3 paper: lr 1e-4 /
eps 1e-8 / clip 1000 for the model, 3e-5 / 1e-5 / 100 for actor and critic) or ``"laprop"``
(danijar/dreamerv3's 2024 code: :class:`imwm.nn.optim.LaProp` with adaptive gradient clipping
and warm-up, no global-norm clipping: ``clip = inf`` here measures the norm only).

Example:
    >>> net = torch.nn.Linear(2, 1)
    >>> opt = make_optimizer("adam", net.parameters(), lr=0.1, eps=1e-8, name="model")
    >>> guard = NonFiniteGuard(max_in_a_row=3)
    >>> loss = {"loss_fit": net(torch.ones(1, 2)).pow(2).sum()}
    >>> norms, skipped = guarded_step(loss, [(list(net.parameters()), opt, 1000.0)], guard=guard,
    ...                               phase="model", update=0)
    >>> len(norms), skipped, guard.streak
    (1, None, 0)
    >>> import warnings
    >>> loss = {"loss_fit": net(torch.ones(1, 2)).sum() * float("nan")}
    >>> with warnings.catch_warnings(record=True):  # "update 1: non-finite model loss_fit=nan; ..."
    ...     _, skipped = guarded_step(loss, [(list(net.parameters()), opt, 1000.0)], guard=guard,
    ...                               phase="model", update=1)
    >>> skipped, guard.streak, guard.total
    ({'nonfinite_skipped': tensor(1.)}, 1, 1)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from imwm.errors import UserError, check_integer
from imwm.nn.optim import LaProp

__all__ = ["OPTIMIZERS", "NonFiniteGuard", "NonFiniteUpdateError", "clip_grad_norm", "guarded_step",
           "make_optimizer"]

#: accepted values of ``agent.optimizer``
OPTIMIZERS = ("adam", "laprop")


class NonFiniteUpdateError(UserError, FloatingPointError):
    """Too many updates in a row had a non-finite loss or gradient; the message names the term.

    Example:
        >>> guard = NonFiniteGuard(max_in_a_row=1)
        >>> try:
        ...     guard.skip("model", 7, {"loss_fit": torch.tensor(math.nan)}, torch.tensor(1.0), optimizers=[])
        ... except UserError as err:  # a script reports it in one line
        ...     print(type(err).__name__, "-", str(err).split(";")[0])
        NonFiniteUpdateError - update 7: non-finite model loss_fit=nan
    """


def _finite_positive(value) -> bool:
    """A finite number > 0 (a 0-d tensor counts; None, a string or a bool does not)."""
    if isinstance(value, (bool, str, bytes)):
        return False
    try:
        return math.isfinite(value) and value > 0
    except (TypeError, ValueError, RuntimeError):
        return False


def make_optimizer(kind: str, params: Iterable[nn.Parameter], *, lr: float, eps: float, name: str,
                   betas: tuple[float, float] = (0.9, 0.999), agc: float = 0.0, agc_pmin: float = 1e-3,
                   warmup: int = 0) -> torch.optim.Optimizer:
    """Adam (fused where the build has it) or :class:`~imwm.nn.optim.LaProp` over ``params``.

    ``name`` is the parameter group's config prefix (``model``, ``actor``, ``critic``), so a bad
    value is reported as ``<name>_lr`` / ``<name>_eps``. ``agc``, ``agc_pmin`` and ``warmup`` are
    LaProp's (ignored by Adam; the agent refuses them there).

    Example:
        >>> net = nn.Linear(2, 1)
        >>> type(make_optimizer("laprop", net.parameters(), lr=1e-4, eps=1e-20, name="actor")).__name__
        'LaProp'
        >>> make_optimizer("adam", net.parameters(), lr=0.0, eps=1e-8, name="actor")
        Traceback (most recent call last):
        ...
        ValueError: actor_lr must be a finite number > 0, got 0.0
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {kind!r}")
    if not _finite_positive(lr):
        raise ValueError(f"{name}_lr must be a finite number > 0, got {lr!r}")
    if not _finite_positive(eps):
        raise ValueError(f"{name}_eps must be a finite number > 0, got {eps!r}")
    params = list(params)
    if kind == "laprop":
        return LaProp(params, lr=lr, eps=eps, betas=betas, agc=agc, agc_pmin=agc_pmin, warmup=warmup)
    try:
        # the fused kernel is the same Adam update; on CPU it measured ~8x faster than the
        # per-tensor loop for DreamerV3-size parameter lists
        return torch.optim.Adam(params, lr=lr, eps=eps, betas=betas, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr, eps=eps, betas=betas)


def clip_grad_norm(params: list[nn.Parameter], clip: float) -> torch.Tensor:
    """Global gradient norm, clipped to ``clip`` unless ``clip`` is infinite (the 2024 recipe).

    Example:
        >>> w = nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> clip_grad_norm([w], 1.0), [round(g, 4) for g in w.grad.tolist()]  # norm before clipping
        (tensor(5.), [0.6, 0.8])
        >>> round(clip_grad_norm([w], math.inf).item(), 4)  # measured only
        1.0
    """
    if math.isinf(clip):
        return nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    return nn.utils.clip_grad_norm_(params, clip)


class NonFiniteGuard:
    """Counts updates skipped for a non-finite loss term or gradient norm.

    Args:
        max_in_a_row: skipped updates in a row after which :meth:`skip` raises
            :class:`NonFiniteUpdateError` (``agent.max_nonfinite_updates``).

    Attributes:
        streak: skipped updates in a row (reset by :meth:`passed`).
        total: skipped updates in all (the agent saves it with its state).

    Example:
        >>> guard = NonFiniteGuard(max_in_a_row=2)
        >>> guard.finite({"loss_fit": torch.tensor(1.0)}, torch.tensor(math.inf))
        False
        >>> nan_loss = {"loss_fit": torch.tensor(math.nan)}
        >>> with warnings.catch_warnings(record=True):  # "update 0: ... update skipped"
        ...     skipped = guard.skip("model", 0, nan_loss, torch.tensor(1.0), optimizers=[])
        >>> guard.passed()
        >>> skipped, guard.streak, guard.total
        ({'nonfinite_skipped': tensor(1.)}, 0, 1)
    """

    def __init__(self, max_in_a_row: int = 5) -> None:
        self.max_in_a_row = check_integer("max_nonfinite_updates", max_in_a_row)
        self.streak = 0
        self.total = 0

    @staticmethod
    def finite(terms: dict[str, torch.Tensor], grad_norm: torch.Tensor) -> bool:
        """Every loss term and the gradient norm are finite (one host sync: one reduction)."""
        values = torch.stack([*(v.detach().float() for v in terms.values()), grad_norm.float()])
        return bool(torch.isfinite(values).all())

    def passed(self) -> None:
        """A whole update went through: the streak of skipped ones ends."""
        self.streak = 0

    def skip(self, phase: str, update: int, terms: dict[str, torch.Tensor], grad_norm: torch.Tensor,
             optimizers: Iterable[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """Drops this phase's gradients (optimiser states untouched), counts the skip, and raises
        once ``max_in_a_row`` updates in a row were skipped."""
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.streak += 1
        self.total += 1
        term = _nonfinite_term(terms) or f"gradient norm={grad_norm.item()}"
        if self.streak >= self.max_in_a_row:
            raise NonFiniteUpdateError(
                f"update {update}: non-finite {phase} {term}; {self.streak} non-finite updates in a row "
                f"(agent.max_nonfinite_updates={self.max_in_a_row}), stopping; "
                "nothing non-finite was saved (try lower learning rates)"
            )
        warnings.warn(f"update {update}: non-finite {phase} {term}; update skipped", stacklevel=4)
        return {"nonfinite_skipped": torch.ones(())}


def _nonfinite_term(terms: dict[str, torch.Tensor]) -> str | None:
    """``"name=value"`` of the first non-finite entry of ``terms`` (0-d tensors), or None."""
    for name, value in terms.items():
        if not bool(torch.isfinite(value)):
            return f"{name}={value.item()}"
    return None


def guarded_step(
    terms: dict[str, torch.Tensor],
    groups: list[tuple[list[nn.Parameter], torch.optim.Optimizer, float]],
    *,
    guard: NonFiniteGuard,
    phase: str,
    update: int,
    gradient_sync: Callable[[list[nn.Parameter]], None] | None = None,
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor] | None]:
    """Backward of ``sum(terms)``, then one optimiser step per ``(params, optimizer, clip)`` group
    unless a term or the groups' summed gradient norm is not finite.

    Returns:
        The groups' gradient norms (before clipping), and None when the optimisers stepped, or
        :meth:`NonFiniteGuard.skip`'s metrics when nothing stepped.

    Example:
        >>> w = nn.Parameter(torch.zeros(2))
        >>> loss = {"loss_fit": (w - torch.tensor([3.0, 4.0])).pow(2).sum() / 2}
        >>> norms, skipped = guarded_step(loss, [([w], torch.optim.SGD([w], lr=1.0), 1.0)],
        ...                               guard=NonFiniteGuard(), phase="model", update=0)
        >>> norms, skipped, [round(v, 4) for v in w.tolist()]  # the step of norm 5, clipped to 1
        ([tensor(5.)], None, [0.6, 0.8])
    """
    for _, optimizer, _ in groups:
        optimizer.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    if gradient_sync is not None:
        gradient_sync([p for params, _, _ in groups for p in params])
    norms = [clip_grad_norm(params, clip) for params, _, clip in groups]
    total = norms[0] if len(norms) == 1 else torch.stack(norms).sum()
    if not guard.finite(terms, total):
        return norms, guard.skip(phase, update, terms, total, [opt for _, opt, _ in groups])
    for _, optimizer, _ in groups:
        optimizer.step()
    return norms, None
