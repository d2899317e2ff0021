"""Curious Replay: replay what the world model has seen least and predicts worst."""

from __future__ import annotations

import math

import torch

from imwm.replay.slices import PrioritizedSliceSampler

__all__ = ["CuriousSampler"]


class CuriousSampler(PrioritizedSliceSampler):
    """Curious Replay sampler (Kauvar, Doyle, Zhou & Haber, "Curious Replay for Model-based
    Adaptation", ICML 2023), as a TorchRL ``Sampler`` of sequence slices.

    Priority of an item (a slice start) that has received a world-model loss ``L``::

        priority = c * beta ** visit_count + (adjusted_loss + epsilon) ** alpha
        adjusted_loss = max(L - entropy_lambda * entropy, 0)

    The count term favours rarely replayed data, the loss term data the model predicts badly.
    ``entropy_lambda > 0`` (an imwm extension of the paper) discounts losses that come from
    an inherently noisy (high-entropy) latent rather than from model error; ``entropy_lambda = 0``
    is exactly the paper. Items with no loss yet have priority ``initial``; with ``inf`` they are
    replayed before anything already trained on. ``visit_count`` rises by one each time the item is
    sampled (a start drawn twice in a batch counts twice), and the item's priority is recomputed on
    the spot, so :meth:`priorities` always reflects current counts and losses.

    Args:
        max_capacity: storage capacity.
        c: weight of the count term (>= 0).
        beta: decay of the count term per visit, in ``(0, 1]``.
        alpha: exponent of the loss term (>= 0).
        epsilon: added to the loss before the exponent (>= 0).
        initial: priority before the first loss (> 0, ``inf`` = sample first).
        entropy_lambda: weight of the entropy discount (>= 0).
        **slice_kwargs: the slice arguments of
            :class:`~imwm.replay.slices.PrioritizedSliceSampler`: ``num_slices`` / ``slice_len``,
            ``traj_key``, ``end_key``, ``truncated_key``, ``window``, ``num_streams``,
            ``priority_key`` (default ``"model_loss"``), ``reduction``, ``nan_policy``, ...

    Feedback: ``update_priority(index, model_loss, *, entropy=None)`` with one loss per slice
    (``index`` = slice starts, or the flat ``[B * T]`` index of the sample) or per record of a
    flat sample; ``ReplayBuffer.update_tensordict_priority(td)`` with the loss under
    ``td["model_loss"]`` (the ``priority_key``; a ``td_error`` entry is not read); or
    ``update_signals(index, {"model_loss": ..., "entropy": ...})``.

    Unlike TorchRL's prioritised samplers, priorities change between draws without any feedback:
    every draw counts a visit, so ``c * beta ** visit_count`` shrinks for the starts just drawn
    and the next batch favours other items even if no loss is reported in between.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> rb = TensorDictReplayBuffer(
        ...     storage=LazyTensorStorage(100),
        ...     sampler=CuriousSampler(100, slice_len=4), batch_size=8)   # 2 slices of 4
        >>> _ = rb.extend(TensorDict({"traj_ids": torch.zeros(20, dtype=torch.long)}, [20]))
        >>> batch, info = rb.sample(return_info=True)
        >>> starts = info["index"][0].view(2, 4)[:, 0]
        >>> rb.sampler.update_priority(starts, torch.tensor([0.5, 2.0]))
        >>> bool((rb.sampler.priorities(starts) < float("inf")).all())
        True
    """

    signal_key = "model_loss"
    _uses_visits = True

    def __init__(
        self,
        max_capacity: int,
        *,
        c: float = 1e4,
        beta: float = 0.7,
        alpha: float = 0.7,
        epsilon: float = 0.01,
        initial: float = math.inf,
        entropy_lambda: float = 0.0,
        **slice_kwargs,
    ):
        c, beta, alpha, epsilon = float(c), float(beta), float(alpha), float(epsilon)
        entropy_lambda = float(entropy_lambda)
        for name, value in (("c", c), ("alpha", alpha), ("epsilon", epsilon),
                            ("entropy_lambda", entropy_lambda)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not (0.0 < beta <= 1.0):
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        super().__init__(max_capacity, initial=initial, **slice_kwargs)
        self.c, self.beta, self.alpha, self.epsilon = c, beta, alpha, epsilon
        self.entropy_lambda = entropy_lambda

    def _formula(self, signal: torch.Tensor, visits: torch.Tensor) -> torch.Tensor:
        # signal holds the adjusted loss (>= 0)
        return self.c * self.beta ** visits + (signal + self.epsilon) ** self.alpha

    def update_priority(self, index, priority, *, storage=None, entropy=None) -> None:
        """Sets the world-model loss of the slices at ``index``.

        Args:
            index: slice starts ``[B]``, the flat slice index ``[B * T]`` of the sample (one loss
                per slice), or, from a TorchRL buffer, a flat slice index with one loss per record
                (reduced per slice with ``reduction``); see
                :class:`~imwm.replay.slices.PrioritizedSliceSampler`.
            priority: the world-model loss (not yet a priority: the sampler applies the Curious
                Replay formula). Through TorchRL's ``update_tensordict_priority`` it is the
                TensorDict's ``priority_key`` entry (default ``"model_loss"``; a ``td_error``
                entry is not read unless ``priority_key="td_error"``).
            storage: the storage (TorchRL passes it).
            entropy: the entropy of the latent, laid out like ``priority``; required when
                ``entropy_lambda > 0``.

        A non-finite loss (or, with ``entropy_lambda > 0``, a non-finite entropy) leaves that
        item's signal as it was: skipped and counted in ``nonfinite_skipped`` under the default
        ``nan_policy="skip"`` (see :class:`~imwm.replay.slices.PrioritizedSliceSampler`).
        """
        if self._torchrl_default(priority, storage):
            return
        self._adopt_buffer_key(storage)
        self._update_loss(index, priority, entropy, records=storage is not None)

    def _update_loss(self, index, loss, entropy, *, records: bool) -> None:
        if self.entropy_lambda > 0:
            if entropy is None:
                raise ValueError(
                    f"entropy_lambda={self.entropy_lambda} > 0 needs `entropy` with the loss"
                )
            n_loss, n_ent = torch.as_tensor(loss).numel(), torch.as_tensor(entropy).numel()
            if n_ent != n_loss:
                raise ValueError(f"entropy has {n_ent} values for {n_loss} losses")
            starts, (loss, ent) = self._per_slice(index, [loss, entropy], records=records)
            # a non-finite entropy makes the adjusted loss non-finite: handled as a bad loss
            # (NaN, not inf - inf games: an inf entropy must not turn an inf loss into a value)
            loss = torch.where(torch.isfinite(ent), loss - self.entropy_lambda * ent,
                               torch.full_like(loss, math.nan))
        else:
            starts, (loss,) = self._per_slice(index, [loss], records=records)
        starts, loss = self._finite_values("model_loss", loss, starts)
        self._set_signal(starts, loss.clamp(min=0.0))

    def update_signals(self, index, signals) -> None:
        try:
            loss = signals["model_loss"]
        except KeyError:
            raise KeyError(
                f"CuriousSampler needs the per-sequence signal 'model_loss'; got keys "
                f"{list(signals.keys())}"
            ) from None
        entropy = None
        if self.entropy_lambda > 0:
            if "entropy" not in signals.keys():
                raise KeyError("CuriousSampler with entropy_lambda > 0 needs signals['entropy']")
            entropy = signals["entropy"]
        self._update_loss(index, loss, entropy, records=False)

    def _hyper(self):
        out = super()._hyper()
        out.update(c=self.c, beta=self.beta, alpha=self.alpha, epsilon=self.epsilon,
                   entropy_lambda=self.entropy_lambda)
        return out
