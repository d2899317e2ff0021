"""Episode videos: where the frames come from, and writing them as GIF (Pillow) or MP4.

Frames come from one of three sources (:func:`choose_frame_source`):

- ``"observation"``: image observations (Atari, ``imwm/SparseChainPixels-v0``, Catch) are the
  frames themselves (upscaled with nearest neighbours when written, :func:`default_scale`);
- ``"render"``: a vector-observation gymnasium env built with ``render_mode="rgb_array"`` whose
  render works here (CartPole needs ``pygame``, gymnasium's ``classic-control`` extra);
- ``"cartpole"``: CartPole without pygame: the cart and pole are drawn with Pillow from the
  observation (cart position, pole angle), with gymnasium's geometry.

Any other vector env has no video, and :func:`choose_frame_source` says why. GIFs need only
Pillow; MP4 needs ``imageio-ffmpeg`` (:func:`default_video_suffix` picks MP4 when it is there).

Example:
    >>> import numpy as np, tempfile, os
    >>> frames = [cartpole_frame(np.array([x, 0.0, 0.1, 0.0])) for x in (-1.0, 0.0, 1.0)]
    >>> frames[0].shape, frames[0].dtype
    ((400, 600, 3), dtype('uint8'))
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_video(frames, os.path.join(tmp.name, "cart.gif"), fps=10)
    >>> path.suffix, path.stat().st_size > 0
    ('.gif', True)
    >>> tmp.cleanup()
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from imwm.errors import UserError

__all__ = ["FrameSource", "choose_frame_source", "observation_frame", "cartpole_frame", "render_frame",
           "upscale", "default_scale", "check_video_path", "write_video", "default_video_suffix", "VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = (".gif", ".mp4")
TARGET_SIDE = 256  # image observations are upscaled until their short side reaches this


class FrameSource:
    """How frames of an env's episodes are made.

    Attributes:
        kind: ``"observation"``, ``"render"``, ``"cartpole"`` or ``None`` (no video possible).
        env_kwargs: extra ``env.kwargs`` (``gymnasium.make`` arguments) the env must be built with.
        fps: playback rate (real time where the env says so).
        reason: for ``kind=None``, why there is no video; otherwise a note for the user.
    """

    def __init__(self, kind: str | None, *, env_kwargs: Mapping[str, Any] | None = None,
                 fps: float = 15.0, reason: str = ""):
        self.kind, self.env_kwargs, self.fps, self.reason = kind, dict(env_kwargs or {}), float(fps), reason

    def __repr__(self) -> str:
        return f"FrameSource(kind={self.kind!r}, fps={self.fps}, reason={self.reason!r})"


def _gym_task(env_cfg: Mapping[str, Any]) -> str | None:
    name = env_cfg.get("name")
    if name == "cartpole":
        return "CartPole-v1"
    return env_cfg.get("task") if name == "gym" else None


def _probe_render(task: str, kwargs: Mapping[str, Any]) -> tuple[str | None, float]:
    """``(None, fps)`` when ``gymnasium.make(task, render_mode="rgb_array")`` renders an RGB frame
    here, else ``(reason, fps)`` with the reason phrased about "it" (the env)."""
    import gymnasium as gym

    import imwm.envs  # noqa: F401  (registers imwm's gymnasium ids)

    try:
        env = gym.make(task, **kwargs)
        metadata = dict(env.metadata)
        env.close()
    except Exception as err:  # noqa: BLE001 - any failure means: no render
        return f"it could not be built ({type(err).__name__}: {err})", 15.0
    fps = float(metadata.get("render_fps") or 15.0)
    if "rgb_array" not in (metadata.get("render_modes") or []):
        return "it has no rgb_array render mode", fps
    try:
        env = gym.make(task, render_mode="rgb_array", **kwargs)
        try:
            env.reset(seed=0)
            frame = env.render()
        finally:
            env.close()
    except Exception as err:  # noqa: BLE001 - e.g. gymnasium.error.DependencyNotInstalled (pygame)
        return f"gymnasium cannot render it here ({type(err).__name__}: {err})", fps
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[-1] == 3):
        return "its rgb_array render returned no RGB frame", fps
    return None, fps


def choose_frame_source(env_cfg: Mapping[str, Any], obs_shape: Sequence[int], obs_dtype: Any) -> FrameSource:
    """Picks how to film an env (see the module docstring).

    Args:
        env_cfg: the run's ``env`` config group.
        obs_shape: one observation's shape (``(3, 64, 64)``, ``(4,)``, ...).
        obs_dtype: the observation dtype (``torch.uint8`` for images).

    Example:
        >>> import torch
        >>> choose_frame_source({"name": "atari", "frame_skip": 4}, (3, 64, 64), torch.uint8)
        FrameSource(kind='observation', fps=15.0, reason='')
        >>> source = choose_frame_source({"name": "sparse_chain"}, (8,), torch.float32)
        >>> source.kind is None, source.reason
        (True, "no video can be made: env.name='sparse_chain' has vector observations and no renderer")
    """
    if len(obs_shape) == 3 and "uint8" in str(obs_dtype):
        frame_skip = int(env_cfg.get("frame_skip") or 1)
        fps = 60.0 / frame_skip if env_cfg.get("name") == "atari" else 10.0  # ALE runs at 60 Hz
        return FrameSource("observation", fps=fps)
    task = _gym_task(env_cfg)
    if task is None:
        return FrameSource(None, reason=f"no video can be made: env.name={env_cfg.get('name')!r} has vector "
                                        "observations and no renderer")
    kwargs = dict(env_cfg.get("kwargs") or {})
    reason, fps = _probe_render(task, kwargs)
    if reason is None:
        return FrameSource("render", env_kwargs={"render_mode": "rgb_array"}, fps=fps)
    if task == "CartPole-v1":
        return FrameSource("cartpole", fps=fps,
                           reason=f"CartPole: {reason}; drawing it from its observations instead")
    return FrameSource(None, reason=f"no video can be made: {task} has vector observations and {reason}")


def upscale(frame: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of an ``[H, W, 3]`` frame by an integer ``factor``.

    Example:
        >>> frame = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)  # 1 x 2: black, white
        >>> upscale(frame, 2)[..., 0].tolist()
        [[0, 0, 255, 255], [0, 0, 255, 255]]
    """
    return frame if factor <= 1 else frame.repeat(factor, axis=0).repeat(factor, axis=1)


def default_scale(frame: np.ndarray) -> int:
    """The integer upscale that brings a frame's short side to at least 256 pixels (1 if it is).

    Example:
        >>> [default_scale(np.zeros((h, w, 3))) for h, w in [(64, 64), (210, 160), (400, 600)]]
        [4, 2, 1]
    """
    return max(1, math.ceil(TARGET_SIDE / min(frame.shape[:2])))


def observation_frame(obs: Any) -> np.ndarray:
    """An image observation (``[3, H, W]``, ``[1, H, W]`` or ``[H, W, 3]`` uint8) as an
    ``[H, W, 3]`` uint8 RGB frame (kept small: :func:`write_video` upscales).

    Example:
        >>> observation_frame(np.zeros((3, 64, 48), np.uint8)).shape
        (64, 48, 3)
        >>> observation_frame(np.full((1, 2, 2), 7, np.uint8))[0, 0].tolist()  # grey to RGB
        [7, 7, 7]
        >>> observation_frame(np.zeros(4))
        Traceback (most recent call last):
        ...
        ValueError: not an image observation: shape (4,)
    """
    arr = np.asarray(obs.cpu() if hasattr(obs, "cpu") else obs)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"not an image observation: shape {tuple(np.shape(obs))}")
    if arr.shape[-1] == 1:
        arr = arr.repeat(3, axis=-1)
    return np.ascontiguousarray(arr.astype(np.uint8))


def cartpole_frame(obs: Any, width: int = 600, height: int = 400) -> np.ndarray:
    """CartPole-v1 drawn from its observation ``(x, x_dot, theta, theta_dot)`` with Pillow, with
    the geometry of gymnasium's renderer (track +-2.4, pole half-length 0.5).

    Example:
        >>> frame = cartpole_frame(np.array([0.0, 0.0, 0.1, 0.0]), width=60, height=40)
        >>> frame.shape, frame.dtype
        ((40, 60, 3), dtype('uint8'))
    """
    from PIL import Image, ImageDraw

    x, _, theta, _ = (float(v) for v in np.asarray(obs.cpu() if hasattr(obs, "cpu") else obs).reshape(-1)[:4])
    scale = width / (2 * 2.4)
    cart_w, cart_h, pole_w, pole_len = 50.0, 30.0, 10.0, scale * 1.0
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    track_y = height * 0.75  # gymnasium draws y-up with the cart 100 px above the bottom of 400
    cx = x * scale + width / 2
    draw.line([(0, track_y), (width, track_y)], fill=(0, 0, 0))
    draw.rectangle([cx - cart_w / 2, track_y - cart_h / 2, cx + cart_w / 2, track_y + cart_h / 2], fill=(0, 0, 0))
    axle_y = track_y - cart_h / 4
    # the pole as a rotated rectangle; theta > 0 leans right
    corners = [(-pole_w / 2, -pole_w / 2), (pole_w / 2, -pole_w / 2), (pole_w / 2, pole_len - pole_w / 2),
               (-pole_w / 2, pole_len - pole_w / 2)]
    c, s = math.cos(theta), math.sin(theta)
    pole = [(cx + u * c + v * s, axle_y - (-u * s + v * c)) for u, v in corners]
    draw.polygon(pole, fill=(202, 152, 101))
    r = pole_w / 2
    draw.ellipse([cx - r, axle_y - r, cx + r, axle_y + r], fill=(129, 132, 203))
    return np.asarray(img)


def _gym_env_at(env, index: int):
    """The gymnasium env of sub-env ``index`` of a ``TransformedEnv(SerialEnv(GymEnv...))``."""
    base = getattr(env, "base_env", env)
    subs = getattr(base, "_envs", None)
    node = subs[index] if subs else base
    while hasattr(node, "base_env") and node.base_env is not node:
        node = node.base_env
    gym_env = getattr(node, "_env", None)
    if gym_env is None or not hasattr(gym_env, "render"):
        raise UserError(f"cannot reach the gymnasium env inside {type(env).__name__} to render it")
    return gym_env


def render_frame(env, index: int = 0) -> np.ndarray:
    """The current ``rgb_array`` render of sub-env ``index`` of a batched gymnasium env."""
    return np.ascontiguousarray(np.asarray(_gym_env_at(env, index).render(), dtype=np.uint8))


def default_video_suffix() -> str:
    """``".mp4"`` when ``imageio-ffmpeg`` is installed, else ``".gif"`` (Pillow only).

    Example:
        >>> suffix = default_video_suffix()  # depends on the installation; always writable
        >>> suffix in VIDEO_SUFFIXES, check_video_path("episode" + suffix).suffix == suffix
        (True, True)
    """
    return ".mp4" if importlib.util.find_spec("imageio_ffmpeg") is not None else ".gif"


def check_video_path(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path`` if a video can be written there (a known suffix, and imageio-ffmpeg for
    MP4), so that a bad name fails before an evaluation runs.

    Raises:
        UserError: an unknown suffix, or MP4 without ``imageio-ffmpeg``.

    Example:
        >>> check_video_path("videos/episode.GIF").name  # the suffix in any case
        'episode.GIF'
        >>> check_video_path("episode.avi")
        Traceback (most recent call last):
        ...
        imwm.errors.UserError: episode.avi: video files end in .gif or .mp4
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise UserError(f"{path}: video files end in {' or '.join(VIDEO_SUFFIXES)}")
    if suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise UserError(f"{path}: MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or write a .gif")
    return path


def write_video(frames: Sequence[np.ndarray], path: str | os.PathLike, *, fps: float = 15.0,
                scale: int = 1) -> Path:
    """Writes ``[H, W, 3]`` uint8 frames as a GIF (Pillow) or an MP4 (``imageio-ffmpeg``), by suffix,
    each upscaled by ``scale`` (nearest neighbour) as it is encoded.

    Raises:
        UserError: no frames, frames of different sizes, an unknown suffix, or MP4 without
            ``imageio-ffmpeg``.
    """
    path = check_video_path(path)
    if not frames:
        raise UserError(f"{path}: no frames to write")
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[-1] != 3:
        raise UserError(f"{path}: frames must all be [H, W, 3], got shapes {sorted(shapes)[:3]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = (Image.fromarray(np.ascontiguousarray(upscale(f, scale), dtype=np.uint8)) for f in frames)
        # GIF delays are in 1/100 s: round to 10 ms, at least 20 ms (viewers slow faster GIFs down)
        duration = max(20, int(round(100.0 / fps)) * 10)
        next(images).save(path, save_all=True, append_images=images, duration=duration, loop=0)
        return path
    import imageio_ffmpeg

    height, width = frames[0].shape[0] * scale, frames[0].shape[1] * scale
    # H.264 with yuv420p wants even sides: pad by one row / column when odd
    pad_h, pad_w = height % 2, width % 2
    writer = imageio_ffmpeg.write_frames(str(path), (width + pad_w, height + pad_h), fps=fps,
                                         codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1)
    writer.send(None)  # start the generator
    try:
        for frame in frames:
            frame = upscale(frame, scale)
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            writer.send(np.ascontiguousarray(frame, dtype=np.uint8))
    finally:
        writer.close()
    return path
