"""The interpolate-based resize transform: values, dtype, channel order, reset frames."""
import torch
import torch.nn.functional as F
from torchrl.envs import GymEnv, TransformedEnv

from imwm.envs.resize import ResizeFrames, resize_frames


def test_resize_values_match_antialiased_interpolate():
    img = torch.randint(0, 256, (2, 210, 160, 3), dtype=torch.uint8)
    out = resize_frames(img, 64)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.uint8
    ref = F.interpolate(img.permute(0, 3, 1, 2).float(), size=(64, 64), mode="bilinear", antialias=True)
    assert (out.float() - ref).abs().max() <= 0.5 + 1e-4
    # Constant images stay constant: channels are not mixed up, nothing overflows.
    flat = torch.zeros(4, 4, 3, dtype=torch.uint8)
    flat[..., 0], flat[..., 1], flat[..., 2] = 255, 7, 0
    assert resize_frames(flat, 2)[:, 0, 0].tolist() == [255, 7, 0]


def test_reset_frames_are_resized_too():
    env = TransformedEnv(GymEnv("ALE/Pong-v5", frame_skip=4),
                         ResizeFrames(32, in_keys=["pixels"], out_keys=["observation"]))
    reset = env.reset()
    assert reset["observation"].shape == (3, 32, 32) and reset["observation"].dtype == torch.uint8
    step = env.rand_step(reset)
    assert step["next", "observation"].shape == (3, 32, 32)
    assert env.observation_spec["observation"].shape == (3, 32, 32)
    assert env.observation_spec["observation"].dtype == torch.uint8
    env.close()


def test_bad_size():
    import pytest
    with pytest.raises(ValueError, match="size"):
        ResizeFrames(0)
