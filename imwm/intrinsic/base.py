"""Shared machinery of the intrinsic-reward transforms.

Every intrinsic reward in :mod:`imwm.intrinsic` is a :class:`torchrl.envs.transforms.Transform`
that can be used in three places with the same object:

* on an imagined trajectory ``TensorDict[N, H+1]`` (``transform(td)``, what
  :class:`imwm.agent.DreamerAgent` does during imagination);
* on any standalone TensorDict that carries the keys it reads (tests, offline analysis);
* appended to a TorchRL model-based env (``env.append_transform(transform)``): during
  ``env.step`` it reads the ``("next", ...)`` entries and writes the rewards there.

Each call reads the extrinsic reward and the signal of the subclass, writes
``intrinsic_reward`` and ``total_reward = reward + intrinsic_reward`` (key names configurable),
optionally centred (``center=True``: a running mean of the bonus is subtracted, see
:class:`IntrinsicRewardTransform`),
and, when the module is in training mode, updates its running statistics once (as TorchRL's
``RNDTransform``; note that ``TransformedEnv`` puts an appended transform in eval mode, so call
``env.train()`` for the statistics to move in the env path). Running
statistics are registered buffers, so they are saved in ``state_dict`` (hence in checkpoints)
and follow ``.to(device)``. Nothing calls ``.item()``: statistics stay on the device and the
first-call initialisation is done with ``torch.where`` on an ``initialized`` flag buffer.

Non-finite inputs. Each subclass marks the elements (steps) whose inputs are all finite as
*valid*; an element with a NaN or +-inf input (extrinsic reward, uncertainty, decoder std, or an
ensemble spread that came out non-finite) is

* excluded from every running statistic: means are masked sums over the valid elements divided
  by their count, so a batch with invalid elements moves the statistics exactly as its valid
  part alone would (up to float summation order), and a batch with no valid element changes no
  statistic at all (nor the first-call flags / update counters);
* given an intrinsic reward of exactly 0 (after centring too): "no bonus" is the neutral choice,
  whereas NaN would poison the lambda-returns and the return normaliser of the whole batch.
  ``total_reward = reward + 0`` still carries a non-finite *extrinsic* reward unchanged: hiding
  it is not this transform's job.

Inputs are replaced by a harmless constant before any arithmetic (``torch.where`` on the inputs,
then again on the output), so no NaN is created in the autograd graph of the valid elements.
All of it is branch-free (``torch.where`` and masked sums, no ``.item()``, no boolean
indexing), so the hot path has no host sync. The number of invalid elements seen is counted in
the non-persistent buffer ``nonfinite_count`` (logged as ``intrinsic/nonfinite``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data.tensor_specs import Unbounded
from torchrl.envs.transforms import Transform


def check_finite_nonnegative(name: str, value: float) -> float:
    """Return ``float(value)`` or raise a ``ValueError`` naming ``name`` if it is negative or not finite."""
    value = float(value)
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_finite(name: str, value: float) -> float:
    """Return ``float(value)`` or raise a ``ValueError`` naming ``name`` if it is NaN or +-inf."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_finite_positive(name: str, value: float) -> float:
    """Return ``float(value)`` or raise a ``ValueError`` naming ``name`` unless it is finite and > 0."""
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_unit_interval(name: str, value: float, *, open_low: bool = False, open_high: bool = False) -> float:
    """Return ``float(value)`` or raise a ``ValueError`` naming ``name`` if it is outside [0, 1]."""
    value = float(value)
    low_ok = value > 0.0 if open_low else value >= 0.0
    high_ok = value < 1.0 if open_high else value <= 1.0
    if not (low_ok and high_ok):
        lo = "(" if open_low else "["
        hi = ")" if open_high else "]"
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value}")
    return value


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``x`` over the elements where ``valid`` is true, and whether there was any.

    Returns ``(mean, any_valid)``, both 0-d; ``mean`` is 0 when no element is valid. Elements
    where ``valid`` is false are never read (replaced by 0 before the sum), so they may hold
    NaN/inf. Branch-free: no host sync, fixed shapes (``torch.compile(fullgraph=True)``-safe).

    Example:
        >>> x = torch.tensor([1.0, 3.0, float("nan")])
        >>> masked_mean(x, torch.tensor([True, True, False]))
        (tensor(2.), tensor(True))
        >>> masked_mean(x, torch.zeros(3, dtype=torch.bool))
        (tensor(0.), tensor(False))
    """
    valid = valid.expand_as(x)
    count = valid.sum()
    total = torch.where(valid, x, torch.zeros_like(x)).sum()
    return total / count.clamp_min(1).to(total.dtype), count > 0


def ema_update(
    buffer: torch.Tensor,
    value: torch.Tensor,
    rate: float,
    initialized: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> None:
    """In place: ``buffer <- value`` on the first update, else ``buffer <- buffer + rate * (value - buffer)``.

    With ``valid`` (0-d bool tensor) false the buffer is left unchanged (e.g. a batch without a
    single finite element: ``value`` is then meaningless and is not read).

    Example:
        >>> buf, yes, no = torch.zeros(()), torch.tensor(True), torch.tensor(False)
        >>> ema_update(buf, torch.tensor(4.0), 0.5, initialized=no); buf
        tensor(4.)
        >>> ema_update(buf, torch.tensor(2.0), 0.5, initialized=yes); buf
        tensor(3.)
        >>> ema_update(buf, torch.tensor(float("nan")), 0.5, initialized=yes, valid=no); buf
        tensor(3.)
    """
    value = value.detach().to(buffer.dtype)
    new = torch.where(initialized, buffer + rate * (value - buffer), value)
    if valid is not None:
        new = torch.where(valid, new, buffer)
    buffer.copy_(new)


class IntrinsicRewardTransform(Transform):
    """Base class: key handling, the three call paths, reward specs and logged metrics.

    Subclasses implement :meth:`_intrinsic` (``td -> intrinsic reward`` with the shape of the
    extrinsic reward, updating statistics when ``update`` is true; optionally also returning the
    mask of valid elements, see the module docstring) and list their metrics in :meth:`metrics`.

    Args:
        reward_key: extrinsic reward read (``[..., 1]``).
        intrinsic_key: where the intrinsic reward is written.
        total_reward_key: where ``reward + intrinsic`` is written. Pass the reward key itself to
            overwrite the reward in place (useful in a TorchRL pipeline whose loss reads
            ``("next", "reward")``).
        extra_in_keys: the other keys the subclass reads (for ``in_keys`` bookkeeping).
        center: subtract a running mean ``b`` of the bonus: ``r_int <- r_int - b``, with
            ``b <- b + (1 - center_decay) (mean(r_int) - b)`` once per training call (``b`` starts
            at the first mean). Why: all the bonuses here are >= 0, and an always-positive bonus
            pays the agent for staying alive -- an episode that ends (reaching a terminal goal)
            forfeits the bonus stream of the steps after it, so with a learned continue flag the
            agent learns to avoid the very reward it was exploring for. A constant shift changes
            nothing in a task without termination; centred, termination is neutral on average.
            (Burda et al., 2019, "Exploration by Random Network Distillation", make the intrinsic
            return non-episodic for the same reason; centring is the cheaper cure that keeps one
            critic.) Off by default in the class (the published formulas); on in the training
            config.
        center_decay: EMA decay of ``b``, in [0, 1).

    Attributes:
        needs_decoder_std (bool): the agent must provide ``("decoded", "image_std")`` before
            calling the transform (LEXA-style only).

    Example:
        >>> from tensordict import TensorDict
        >>> class Bonus(IntrinsicRewardTransform):
        ...     def _intrinsic(self, td, reward, update, prev):
        ...         return td["uncertainty"]
        >>> t = Bonus(extra_in_keys=["uncertainty"])
        >>> td = TensorDict({"reward": torch.tensor([[1.0], [2.0]]),
        ...                  "uncertainty": torch.tensor([[0.5], [float("nan")]])}, [2])
        >>> total = t(td)["total_reward"].flatten().tolist()   # a NaN bonus: 0, counted
        >>> total, int(t.metrics()["intrinsic/nonfinite"])
        ([1.5, 2.0], 1)
    """

    needs_decoder_std: bool = False

    def __init__(
        self,
        *,
        reward_key: NestedKey = "reward",
        intrinsic_key: NestedKey = "intrinsic_reward",
        total_reward_key: NestedKey = "total_reward",
        extra_in_keys: list[NestedKey] | tuple = (),
        center: bool = False,
        center_decay: float = 0.99,
    ):
        super().__init__(in_keys=[reward_key, *extra_in_keys], out_keys=[intrinsic_key, total_reward_key])
        self.reward_key = reward_key
        self.intrinsic_key = intrinsic_key
        self.total_reward_key = total_reward_key
        self.center = bool(center)
        self.center_decay = check_unit_interval("center_decay", center_decay, open_high=True)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("last_intrinsic_mean", torch.zeros(()))
        self.register_buffer("baseline", torch.zeros(()))
        # diagnostic only (not checkpointed): invalid (non-finite input) elements seen so far
        self.register_buffer("nonfinite_count", torch.zeros((), dtype=torch.long), persistent=False)

    # -- to implement -------------------------------------------------------------------------
    def _intrinsic(
        self, td: TensorDictBase, reward: torch.Tensor, update: bool, prev: TensorDictBase | None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Intrinsic reward shaped like ``reward``. ``prev`` is the step-t TensorDict in the env
        path (``td`` is then the ``next`` one); ``None`` on trajectories.

        May return ``(intrinsic, valid)`` with ``valid`` a bool mask shaped like ``reward``: the
        elements whose inputs were all finite (and that the subclass's own statistics used).
        A bare tensor means ``valid = isfinite(intrinsic)``. Either way the base class also
        drops elements whose intrinsic reward is not finite, zeroes the invalid ones and keeps
        them out of its own statistics (centring baseline, logged mean)."""
        raise NotImplementedError

    def metrics(self) -> dict[str, torch.Tensor]:
        """0-d tensors to log (detached). Subclasses extend this."""
        out = {
            "intrinsic/mean": self.last_intrinsic_mean.clone(),
            "intrinsic/nonfinite": self.nonfinite_count.clone(),
        }
        if self.center:
            out["intrinsic/baseline"] = self.baseline.clone()
        return out

    # -- the three call paths ---------------------------------------------------------------
    def _get(self, td: TensorDictBase, key: NestedKey, what: str) -> torch.Tensor:
        value = td.get(key, None)
        if value is None:
            raise KeyError(
                f"{type(self).__name__} needs {what} under key {key!r}; the TensorDict has keys "
                f"{sorted(map(str, td.keys(True, True)))}"
            )
        return value

    def _write_rewards(self, td: TensorDictBase, prev: TensorDictBase | None = None) -> TensorDictBase:
        reward = self._get(td, self.reward_key, "the extrinsic reward")
        if reward.shape[-1:] != (1,):
            raise ValueError(
                f"{type(self).__name__}: {self.reward_key!r} must end with a singleton dim [..., 1], "
                f"got shape {tuple(reward.shape)}"
            )
        update = self.training
        out = self._intrinsic(td, reward, update, prev)
        intrinsic, valid = out if isinstance(out, tuple) else (out, None)
        assert intrinsic.shape == reward.shape, (
            f"{type(self).__name__}: intrinsic reward shape {tuple(intrinsic.shape)} != reward shape "
            f"{tuple(reward.shape)}"
        )
        finite = torch.isfinite(intrinsic.detach())
        valid = finite if valid is None else valid & finite
        zero = torch.zeros_like(intrinsic)
        intrinsic = torch.where(valid, intrinsic, zero)
        if self.center:
            if update:
                mean, any_valid = masked_mean(intrinsic.detach(), valid)
                ema_update(self.baseline, mean, 1.0 - self.center_decay, self.initialized, any_valid)
            intrinsic = torch.where(valid, intrinsic - self.baseline, zero)
        mean, any_valid = masked_mean(intrinsic.detach(), valid)
        last = self.last_intrinsic_mean
        last.copy_(torch.where(any_valid, mean.to(last.dtype), last))
        self.nonfinite_count.add_((~valid).sum())
        if update:
            # a call without a single valid element is not an update: the first-call flag stays
            self.initialized.copy_(self.initialized | any_valid)
        td.set(self.intrinsic_key, intrinsic)
        td.set(self.total_reward_key, reward + intrinsic)
        return td

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Trajectory / standalone path: ``transform(td)`` writes the rewards into ``td``."""
        return self._write_rewards(tensordict)

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        """TorchRL's per-TensorDict hook (``Compose._call``, a parent transform's ``_call``).

        The same computation as :meth:`forward` on ``next_tensordict`` alone: there is no step-t
        TensorDict here, so transforms that read the previous step in the env path (the
        disagreement reward's ``feat`` / ``action``) treat ``next_tensordict`` as a trajectory,
        as :meth:`forward` does.
        """
        return self._write_rewards(next_tensordict)

    def clone(self) -> IntrinsicRewardTransform:
        """A copy with no parent whose running statistics are independent copies of this one's.

        TorchRL's ``Transform.clone`` copies the buffer *dict* but keeps the same tensors, and
        these transforms update their statistics in place, so the copy and the original would
        move each other's statistics. Every buffer of the transform (its own and those of its
        submodules) is cloned here; parameters (the disagreement ensemble) and its optimiser
        stay shared, as with TorchRL's clone, so one training step serves both.

        Example:
            >>> from imwm.intrinsic import AdaptiveIntrinsicReward
            >>> t = AdaptiveIntrinsicReward()
            >>> c = t.clone()
            >>> _ = c.num_updates.add_(1)
            >>> int(t.num_updates), int(c.num_updates)
            (0, 1)
        """
        root = super().clone()
        stack = [(root, self)]
        while stack:
            new, old = stack.pop()
            if new is not old:
                new._buffers = {name: None if b is None else b.clone() for name, b in old._buffers.items()}
            for name, child in old._modules.items():
                if child is None or not any(True for _ in child.buffers()):
                    continue
                # submodules are shared by the parent's clone: copy those that hold buffers
                twin = child.__class__.__new__(child.__class__)
                twin.__dict__.update(child.__dict__)
                twin._modules = dict(child._modules)
                twin._parameters = dict(child._parameters)
                new._modules[name] = twin
                stack.append((twin, child))
        return root

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        """Env path: called by ``TransformedEnv.step`` on the ``next`` TensorDict."""
        return self._write_rewards(next_tensordict, prev=tensordict)

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        # A reset carries no reward: nothing to compute, statistics are kept across episodes.
        return tensordict_reset

    def transform_reward_spec(self, reward_spec):
        reference = None
        for key in reward_spec.keys(True, True):
            if key == self.reward_key or (isinstance(key, tuple) and key == (self.reward_key,)):
                reference = reward_spec[key]
                break
        if reference is None:
            raise KeyError(
                f"{type(self).__name__}: the parent env has no reward spec under {self.reward_key!r} "
                f"(reward keys: {list(reward_spec.keys(True, True))})"
            )
        for key in (self.intrinsic_key, self.total_reward_key):
            if key != self.reward_key:
                reward_spec[key] = Unbounded(shape=reference.shape, device=reference.device, dtype=reference.dtype)
        return reward_spec


class UncertaintyReader:
    """Reads ``uncertainty`` from a TensorDict, or computes it from a state with a function.

    The imagined trajectory of :func:`imwm.agent.imagine` already carries ``uncertainty``
    (``dynamics.uncertainty(state)``). A TorchRL model-based env usually carries only the state;
    there, pass ``uncertainty_fn=dynamics.uncertainty`` and the ``state_key`` it should read.

    Example:
        >>> from tensordict import TensorDict
        >>> from imwm.intrinsic import AdaptiveIntrinsicReward
        >>> owner, like = AdaptiveIntrinsicReward(), torch.zeros(2, 1)
        >>> read = UncertaintyReader("uncertainty", lambda s: s["std"].mean(-1, True), "state")
        >>> td = TensorDict({"state": {"std": torch.tensor([[1.0, 3.0], [2.0, 6.0]])}}, [2])
        >>> read(owner, td, like).flatten().tolist()   # no "uncertainty": from the state
        [2.0, 4.0]
        >>> td["uncertainty"] = torch.tensor([[0.5], [0.25]])
        >>> read(owner, td, like).flatten().tolist()   # the entry wins over the function
        [0.5, 0.25]
    """

    def __init__(
        self,
        uncertainty_key: NestedKey,
        uncertainty_fn: Callable[[TensorDictBase], torch.Tensor] | None,
        state_key: NestedKey,
    ):
        self.uncertainty_key = uncertainty_key
        self.uncertainty_fn = uncertainty_fn
        self.state_key = state_key

    def __call__(self, owner: IntrinsicRewardTransform, td: TensorDictBase, like: torch.Tensor) -> torch.Tensor:
        value = td.get(self.uncertainty_key, None)
        if value is None:
            if self.uncertainty_fn is None:
                raise KeyError(
                    f"{type(owner).__name__} needs {self.uncertainty_key!r} in the TensorDict, or an "
                    f"uncertainty_fn to compute it from {self.state_key!r}; keys present: "
                    f"{sorted(map(str, td.keys(True, True)))}"
                )
            value = self.uncertainty_fn(owner._get(td, self.state_key, "the latent state"))
        if value.shape != like.shape:
            raise ValueError(
                f"{type(owner).__name__}: uncertainty shape {tuple(value.shape)} must equal the reward "
                f"shape {tuple(like.shape)} ([..., 1])"
            )
        return value
