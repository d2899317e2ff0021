"""Resize of uint8 HWC frames to uint8 CHW frames with ``torch.nn.functional.interpolate``.

TorchRL's own ``Resize`` calls ``torchvision.transforms.functional.resize``; torchvision has no
CPU build reachable in this project's stack, so this transform does the same job with
``interpolate(mode="bilinear", antialias=True)``, which is what torchvision uses underneath for
tensors. It also moves channels first and keeps uint8, so the replay stores 3x64x64 bytes.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from torchrl.data import Bounded, TensorSpec
from torchrl.envs.transforms import ObservationTransform
from torchrl.envs.transforms.utils import _set_missing_tolerance

from imwm.errors import check_integer

__all__ = ["ResizeFrames", "resize_frames"]


def resize_frames(frames: torch.Tensor, size: int, *, channels_last: bool = True) -> torch.Tensor:
    """Resizes a batch of uint8 images to ``[..., 3, size, size]`` uint8.

    Args:
        frames: uint8 images ``[..., H, W, C]`` (``channels_last``) or ``[..., C, H, W]``.
        size: output height and width.
        channels_last: whether the input has channels last (gymnasium's ALE layout).

    Example:
        >>> resize_frames(torch.zeros(210, 160, 3, dtype=torch.uint8), 64).shape
        torch.Size([3, 64, 64])
    """
    if frames.ndim < 3:
        raise ValueError(
            f"frames must have at least 3 dims [..., H, W, C], got shape {tuple(frames.shape)}"
        )
    if channels_last:
        frames = frames.movedim(-1, -3)
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *frames.shape[-3:]).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x.reshape(*lead, *x.shape[-3:])


class ResizeFrames(ObservationTransform):
    """Resizes uint8 pixel observations ``[..., H, W, C]`` to ``[..., C, size, size]`` uint8.

    Used on the ``GymEnv`` Atari path (``backend="gym"``); the vector backend resizes in C++.
    Reset observations are resized too (``_reset``), so every frame in an episode has one shape.

    Args:
        size: output height and width (64 for DreamerV3).
        in_keys: observation keys to resize (default ``["observation"]``).
        out_keys: where to write them (default: same as ``in_keys``).
        channels_last: whether inputs are HWC (gymnasium ALE) rather than CHW.

    Example:
        TorchRL's ``GymEnv`` puts ALE's RGB frames under ``"pixels"`` ``[210, 160, 3]``; the
        resized copy goes to ``"observation"``, as in :func:`imwm.envs.make_atari_env`:

        >>> from torchrl.envs import GymEnv, TransformedEnv
        >>> env = TransformedEnv(GymEnv("ALE/Pong-v5"),
        ...                      ResizeFrames(64, in_keys=["pixels"], out_keys=["observation"]))
        >>> env.reset()["observation"].shape
        torch.Size([3, 64, 64])
    """

    def __init__(
        self,
        size: int = 64,
        in_keys: Sequence | None = None,
        out_keys: Sequence | None = None,
        *,
        channels_last: bool = True,
    ):
        check_integer("size", size)
        in_keys = list(in_keys) if in_keys is not None else ["observation"]
        out_keys = list(out_keys) if out_keys is not None else list(in_keys)
        super().__init__(in_keys=in_keys, out_keys=out_keys)
        self.size = size
        self.channels_last = channels_last

    def _apply_transform(self, obs: torch.Tensor) -> torch.Tensor:
        return resize_frames(obs, self.size, channels_last=self.channels_last)

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        with _set_missing_tolerance(self, True):
            tensordict_reset = self._call(tensordict_reset)
        return tensordict_reset

    def transform_observation_spec(self, observation_spec: TensorSpec) -> TensorSpec:
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            spec = observation_spec[in_key]
            lead = spec.shape[:-3]
            channels = spec.shape[-1] if self.channels_last else spec.shape[-3]
            shape = (*lead, channels, self.size, self.size)
            observation_spec[out_key] = Bounded(
                low=0, high=255, shape=shape, dtype=torch.uint8, device=spec.device
            )
        return observation_spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, keys={self.in_keys})"
