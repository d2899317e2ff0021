"""``SurpriseSkip``: READ log-odds read straight from how surprised the running segment is.

A segment starts where the running segment's prediction fails (event segmentation by prediction
error, Zacks et al. 2007). :class:`~imwm.vta.dynamics.VTADynamics` measures that failure per step
as the surprise of a gradient-free pass without READs, ``log(1 + KL(q(s_t) || p(s_t)))``; this
module turns it into an offset on the READ logit with a handful of learned numbers::

    offset_t = sum_{k < window} g_k * norm(surprise_{t-k})    (g_0: ``gain``, g_1..: ``history_gain``)
             + g_a * norm_a(abstract_step_t)                     (``abstract=True``)
             + b                                                 (``threshold=True``)

``norm`` is a batch norm without affine terms over the steps ``t >= 1`` (step 0 is read against a
fresh state and counts as 0), a step before an episode start counts as 0, and every weight starts
at 0 and is stored divided by :data:`GAIN_STEP`. A few weights gather the boundary gradient of every
step, where a detector's first layer spreads it over all its inputs, so they learn with little
noise where a network over the embeddings fits whatever else the noisy cost differences reward.

Example:
    >>> skip = SurpriseSkip(window=2)
    >>> surprise, keep = torch.rand(3, 6, 1), torch.ones(3, 6, 1)
    >>> skip(surprise, keep).shape, float(skip(surprise, keep).detach().abs().max())  # every gain starts at 0
    (torch.Size([3, 6, 1]), 0.0)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from imwm.errors import check_bool, check_integer

__all__ = ["SurpriseSkip", "GAIN_STEP", "LEGACY_KEYS", "rename_legacy_keys"]

#: The weights are stored divided by this: Adam moves a scalar by about the learning rate per update,
#: and a gain of a few units should be reachable in a few hundred updates, not thousands.
GAIN_STEP = 10.0

#: State-dict names these weights had as attributes of ``VTADynamics`` itself -> names under the skip.
LEGACY_KEYS = {"surprise_norm.": "norm.", "surprise_gain": "gain", "surprise_history_gain": "history_gain",
               "abstract_norm.": "abstract_norm.", "abstract_gain": "abstract_gain", "surprise_bias": "bias"}


def rename_legacy_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """A ``load_state_dict`` pre-hook for the skip's owner (``module``, at ``prefix``): renames the
    weights of a checkpoint saved when they were the owner's own attributes (:data:`LEGACY_KEYS`)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name = key[len(prefix):]
        old = next((o for o in LEGACY_KEYS if name == o or (o.endswith(".") and name.startswith(o))), None)
        if old is not None:
            state_dict[f"{prefix}surprise_skip.{LEGACY_KEYS[old]}{name[len(old):]}"] = state_dict.pop(key)


def _normed_after_first(norm: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """``norm`` over the steps ``t >= 1`` of ``x [B, T, 1]`` (the first is read against a fresh state), 0 at ``t = 0``."""
    B, T = x.shape[:2]
    return F.pad(norm(x[:, 1:].reshape(-1, 1)).reshape(B, T - 1, 1), (0, 0, 1, 0))


class SurpriseSkip(nn.Module):
    """Learned READ log-odds offset from the per-step surprise (module docstring).

    Args:
        window: steps of surprise read, ``surprise_t .. surprise_{t-window+1}`` (1: ``surprise_t`` alone).
            A pass without READs stays surprised for a step after a change, while the running segment
            takes the new frame in; a negative ``g_1`` lets the offset rise on the surprise's rise.
        abstract: also read the abstract step, the second channel of ``surprise`` (how far the abstract
            posterior would move between two frames), with its own norm and gain.
        threshold: add a learned constant ``b`` (the READ threshold when this offset is the whole detector).
    """

    def __init__(self, *, window: int = 1, abstract: bool = False, threshold: bool = False):
        super().__init__()
        self.window = check_integer("boundary_surprise_window", window)
        self.abstract = check_bool("boundary_surprise_abstract", abstract)
        self.norm = nn.BatchNorm1d(1, affine=False)
        self.gain = nn.Parameter(torch.zeros(()))
        self.history_gain = None if self.window == 1 else nn.Parameter(torch.zeros(self.window - 1))
        if self.abstract:
            self.abstract_norm = nn.BatchNorm1d(1, affine=False)
            self.abstract_gain = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(())) if check_bool("threshold", threshold) else None

    def forward(self, surprise: Tensor, keep: Tensor) -> Tensor:
        """``[B, T, 1]`` offsets from ``surprise [B, T, 1 + abstract]`` and ``keep [B, T, 1]`` (0 where an episode starts)."""
        channels = 1 + int(self.abstract)
        if surprise.dim() != 3 or surprise.shape[-1] != channels or keep.shape != surprise.shape[:2] + (1,):
            raise ValueError(f"surprise must be [B, T, {channels}] and keep [B, T, 1], "
                             f"got {tuple(surprise.shape)} and {tuple(keep.shape)}")
        z = _normed_after_first(self.norm, surprise[..., :1])
        offset = GAIN_STEP * self.gain * z
        for k in range(1, self.window):
            z = F.pad(z[:, :-1], (0, 0, 1, 0)) * keep  # z_{t-k}, cut where an episode starts in (t-k, t]
            offset = offset + GAIN_STEP * self.history_gain[k - 1] * z
        if self.abstract:
            offset = offset + GAIN_STEP * self.abstract_gain * _normed_after_first(self.abstract_norm, surprise[..., 1:2])
        if self.bias is not None:
            offset = offset + GAIN_STEP * self.bias
        return offset
