"""Play a trained agent from its run folder: return statistics and a video of the first episode.

The logic of ``scripts/evaluate.py``. :func:`load_agent` rebuilds the agent exactly as it was
trained, from the config saved *in the checkpoint* (``checkpoints/latest.pt``, or ``previous.pt``
when the latest does not load): env (for the observation shape and action count), agent
(``imwm.training.build_model.build_agent``, any dynamics) and, when the run had one, the
intrinsic-reward transform, whose state is part of the agent's ``state_dict``; every tensor must
load (``strict``). :func:`play_episodes` runs one episode in each env of a batch, greedily
(``ExplorationType.DETERMINISTIC``, as training's evaluation) or sampling actions, and films the
first one (:mod:`imwm.analysis.video`). :func:`evaluate_run` ties it together.

Example:
    >>> from imwm.configs import compose_config
    >>> from imwm.envs import make_env
    >>> from imwm.training.build_model import build_agent
    >>> env = make_env(name="cartpole", num_envs=2, seed=0)
    >>> agent = build_agent(compose_config(["preset=debug"]), obs_shape=(4,), action_dim=2)
    >>> result = play_episodes(env, agent.policy(2), mode="sample", max_steps=50)
    >>> result["returns"].shape, bool((result["returns"] >= 1).all())
    (torch.Size([2]), True)

    On a trained run: ``evaluate_run("runs/<run>", episodes=5)`` gives ``return_mean`` and the
    path of the first episode's video.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torchrl.envs.utils import ExplorationType

from imwm.analysis.terminals import EpisodeEnds, cause_for, continue_at_terminals, unnamed_cause
from imwm.analysis.video import (FrameSource, cartpole_frame, check_video_path, choose_frame_source,
                                 default_scale, default_video_suffix, observation_frame, render_frame,
                                 write_video)
from imwm.errors import UserError, is_integer
from imwm.training.evaluate import evaluate

__all__ = ["LoadedAgent", "load_agent", "play_episodes", "evaluate_run", "MODES"]

#: ``--mode``: how actions are chosen.
MODES = {"greedy": ExplorationType.DETERMINISTIC, "sample": ExplorationType.RANDOM}
#: Cap on filmed frames (a 27,000-step Atari episode would make a huge GIF).
MAX_VIDEO_FRAMES = 1000


@dataclass
class LoadedAgent:
    """A trained agent rebuilt from its run folder.

    Attributes:
        run_dir: the run folder.
        checkpoint: the checkpoint file that loaded.
        config: the resolved training config saved in the checkpoint.
        agent: the :class:`~imwm.agent.DreamerAgent` with its weights, in ``eval()`` mode.
        env_steps: env steps the agent was trained for.
        run_id: the wandb run id of the training run (None without wandb).
    """

    run_dir: Path
    checkpoint: Path
    config: dict
    agent: Any
    env_steps: int
    run_id: str | None = None
    counters: dict = field(default_factory=dict)


def _env_shapes(env) -> tuple[tuple[int, ...], int, Any]:
    spec = env.observation_spec["observation"]
    return tuple(spec.shape[1:]), int(env.action_spec.shape[-1]), spec.dtype


def load_agent(run_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedAgent:
    """Rebuilds a ``scripts/train.py`` run's agent from its newest loadable checkpoint.

    Raises:
        UserError: no such folder, no loadable checkpoint (:class:`CheckpointError`), a run of
            another trainer, or weights that do not fit the rebuilt agent.
    """
    from imwm.envs import make_env
    from imwm.training.build_intrinsic import build_intrinsic
    from imwm.training.build_model import build_agent
    from imwm.training.checkpoint import load_latest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    if not (run_dir / "checkpoints").is_dir():
        raise UserError(f"{run_dir} has no checkpoints/ folder: not a scripts/train.py run folder, or one "
                        "that has not saved a checkpoint yet")
    path, state = load_latest(run_dir / "checkpoints", required=("agent", "config"), map_location="cpu")
    cfg = state["config"]
    if not all(k in cfg for k in ("env", "agent", "dynamics")):
        raise UserError(f"{path} was not written by scripts/train.py (its config has {sorted(cfg)}); "
                        "VTA runs of scripts/train_vta.py have scripts/vta_boundary_eval.py")
    env = make_env(**cfg["env"], num_envs=1, seed=int(cfg.get("seed", 0)))
    try:
        obs_shape, action_dim, _ = _env_shapes(env)
    finally:
        env.close()
    agent = build_agent(cfg, obs_shape=obs_shape, action_dim=action_dim, device=device)
    # the intrinsic transform is a submodule of the agent: its tensors are in state["agent"]
    agent.intrinsic = build_intrinsic(cfg.get("intrinsic") or {}, agent)
    try:
        agent.load_state_dict(state["agent"])
    except RuntimeError as err:
        raise UserError(f"{path}: the saved config does not rebuild the saved weights "
                        f"({str(err).splitlines()[0]})") from err
    agent.eval()
    counters = dict(state.get("counters") or {})
    return LoadedAgent(run_dir=run_dir, checkpoint=path, config=cfg, agent=agent,
                       env_steps=int(counters.get("env_steps", 0)),
                       run_id=(state.get("logger") or {}).get("run_id"), counters=counters)


class _OnDevice:
    """A policy whose networks live on ``device`` acting in an env on the CPU: observations go
    there, actions come back."""

    def __init__(self, policy, device: str | torch.device):
        self.policy, self.device = policy, torch.device(device)

    def reset(self) -> None:
        self.policy.reset()

    def __call__(self, td):
        action = self.policy(td.to(self.device)).get("action")
        return td.set("action", action.to(td.get("observation").device))


@torch.no_grad()
def play_episodes(env, policy, *, mode: str = "greedy", max_steps: int,
                  frames: FrameSource | None = None, max_frames: int = MAX_VIDEO_FRAMES,
                  cause: Callable[[torch.Tensor], str] = unnamed_cause) -> dict[str, Any]:
    """Plays one episode in each env of a batched env; films env 0 when ``frames`` says how.

    :func:`imwm.training.evaluate.evaluate` with the exploration type chosen by ``mode`` and a
    camera on env 0 (its ``watch`` hook sees each transition before the reset, so the filmed
    episode's last frame is its terminal state).

    Args:
        env: a batched env from :func:`imwm.envs.make_env` (``episode_reward``, ``step_count``).
        policy: e.g. ``agent.policy(num_envs)``.
        mode: ``"greedy"`` or ``"sample"`` (:data:`MODES`).
        max_steps: cap on steps per episode (a capped episode counts as ``truncated``).
        frames: how to film env 0 (None: no video).
        max_frames: frames kept at most.
        cause: names a terminal observation's cause (:data:`imwm.analysis.terminals.CAUSES`).

    Returns:
        ``{"returns", "lengths", "truncated"}`` (``[num_envs]`` tensors), ``"frames"`` (a list
        of ``[H, W, 3]`` uint8 arrays, empty without video) and ``"ends"`` (``{cause or "cap":
        episodes}``, :class:`~imwm.analysis.terminals.EpisodeEnds`).
    """
    if mode not in MODES:
        raise UserError(f"--mode must be one of {sorted(MODES)}, got {mode!r}")
    if max_steps < 1:
        raise UserError(f"max_steps must be >= 1, got {max_steps}")
    n = env.batch_size.numel()
    film: list[np.ndarray] = []
    kind = frames.kind if frames is not None else None

    def shoot(td, key, finished) -> None:
        if kind is None or finished[0] or len(film) >= max_frames:
            return
        if kind == "render":
            film.append(render_frame(env, 0))
            return
        obs = td.get(key).reshape(n, *td.get(key).shape[len(td.batch_size):])[0]
        film.append(observation_frame(obs) if kind == "observation" else cartpole_frame(obs))

    ends = EpisodeEnds(n, cause)

    def watch(td, key, finished) -> None:
        shoot(td, key, finished)
        ends(td, key, finished)

    result = evaluate(env, policy, max_steps=max_steps, exploration=MODES[mode], watch=watch)
    return {**result, "frames": film, "ends": ends.counts()}


def evaluate_run(run_dir: str | os.PathLike, *, episodes: int = 10, mode: str = "greedy",
                 seed: int | None = None, max_steps: int | None = None,
                 video: str | os.PathLike | None | bool = True, fps: float | None = None,
                 scale: int | None = None, max_frames: int = MAX_VIDEO_FRAMES, wandb: bool = False,
                 device: str = "cpu", json_path: str | os.PathLike | None = None,
                 terminals: bool = False,
                 printer: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Loads a run's agent, plays ``episodes`` episodes and films the first one.

    Args:
        run_dir: a ``scripts/train.py`` run folder.
        episodes: episodes to play (one per env of a batch).
        mode: ``"greedy"`` (the policy's most likely action, as training's evaluation) or
            ``"sample"``.
        seed: env and torch seed (default: the run's ``seed + 10_000``, the training evaluator's).
        max_steps: cap per episode (default: the run's ``eval_max_steps``).
        video: the video file (``.gif`` / ``.mp4``), True for
            ``<run>/videos/eval-<env_step>-<mode>.mp4|.gif`` (MP4 when imageio-ffmpeg is
            installed), False / None for none.
        fps: playback rate (default: the env's; real time where known).
        scale: upscale factor of the frames (default: image observations to a 256-pixel short side).
        max_frames: frames filmed at most.
        wandb: also log the video and the return statistics to the run's wandb run (continuing its
            id; offline unless ``logger.mode`` / ``WANDB_MODE`` say otherwise).
        device: where the agent runs.
        json_path: also write the result (without frames) as JSON there.
        terminals: also average the continue head over the run's replay, at non-terminal records
            and at terminal ones by cause (:func:`imwm.analysis.terminals.continue_at_terminals`),
            as ``"continue"``.
        printer: where the report lines go (None: silent).

    Returns:
        ``{"run_dir", "checkpoint", "env_step", "mode", "seed", "episodes", "returns", "lengths",
        "truncated", "return_mean", "return_std", "length_mean", "ends", "video", "video_note",
        "wandb_run"}`` (and ``"continue"`` with ``terminals``).
    """
    from imwm.envs import make_env

    say = printer or (lambda _msg: None)
    _check_eval_args(episodes=episodes, mode=mode, max_frames=max_frames, scale=scale, fps=fps, device=device,
                     video=video)
    loaded = load_agent(run_dir, device=device)
    cfg = loaded.config
    seed = int(cfg.get("seed", 0)) + 10_000 if seed is None else int(seed)
    max_steps = int(max_steps or cfg.get("eval_max_steps") or 27_000)
    env_cfg, source, video_path, note = _film_setup(loaded, video, mode=mode, seed=seed)
    if note:
        say(f"[imwm] video: {note}")

    say(f"[imwm] {loaded.checkpoint} (env step {loaded.env_steps}): {episodes} episode(s), {mode} actions, "
        f"seed {seed}, at most {max_steps} steps each")
    env = make_env(**env_cfg, num_envs=episodes, seed=seed, device="cpu")
    torch.manual_seed(seed)  # the posterior samples its latent, even for greedy actions
    try:
        policy = loaded.agent.policy(episodes, action_dtype=env.action_spec.dtype)
        if torch.device(device).type != "cpu":
            policy = _OnDevice(policy, device)
        out = play_episodes(env, policy, mode=mode, max_steps=max_steps, frames=source, max_frames=max_frames,
                            cause=cause_for(cfg["env"]))
    finally:
        env.close()
    result = _summary(loaded, out, mode=mode, seed=seed, episodes=episodes, note=note)
    say(f"[imwm] return {result['return_mean']:.2f} +- {result['return_std']:.2f} (mean +- std over "
        f"{episodes} episode(s); min {min(result['returns']):g}, max {max(result['returns']):g}); "
        f"length {result['length_mean']:.1f}; {result['truncated']} truncated at {max_steps} steps; "
        f"ends {result['ends']}")
    if video_path is not None:
        result["video"] = _write_film(out["frames"], video_path, source, fps=fps, scale=scale,
                                      max_frames=max_frames, first_return=result["returns"][0], say=say)
    if wandb:
        result["wandb_run"] = _log_to_wandb(loaded, result, video_path, say)
    if terminals:
        result["continue"] = continue_at_terminals(loaded)
        for name, group in result["continue"].items():
            say(f"[imwm] continue head over the replay, {name}: {group['continue']:.3f} "
                f"({group['count']} records)")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _check_eval_args(*, episodes, mode, max_frames, scale, fps, device, video) -> None:
    """One-line :class:`UserError` naming the first bad option, before anything is loaded or played."""
    from imwm.training.config import check_device

    if not is_integer(episodes, 1):
        raise UserError(f"--episodes must be an integer >= 1, got {episodes}")
    if mode not in MODES:
        raise UserError(f"--mode must be one of {sorted(MODES)}, got {mode!r}")
    if max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {max_frames}")
    if scale is not None and scale < 1:
        raise UserError(f"--scale must be >= 1, got {scale}")
    if fps is not None and not fps > 0:
        raise UserError(f"--fps must be > 0, got {fps}")
    check_device(device, "--device")
    if video and not isinstance(video, bool):
        check_video_path(video)


def _film_setup(loaded, video, *, mode: str, seed: int) -> tuple[dict, FrameSource | None, Path | None, str]:
    """The env config to play with, the frame source and video path (None: no film), and why."""
    from imwm.envs import make_env

    env_cfg = dict(loaded.config["env"])
    if not video:
        return env_cfg, None, None, ""
    probe = make_env(**env_cfg, num_envs=1, seed=seed)
    try:
        obs_shape, _, obs_dtype = _env_shapes(probe)
    finally:
        probe.close()
    source = choose_frame_source(env_cfg, obs_shape, obs_dtype)
    if source.kind is None:
        return env_cfg, None, None, source.reason
    if source.env_kwargs:  # e.g. rgb_array rendering
        env_cfg["kwargs"] = {**(env_cfg.get("kwargs") or {}), **source.env_kwargs}
    path = (Path(video) if not isinstance(video, bool) else
            loaded.run_dir / "videos" / f"eval-{loaded.env_steps}-{mode}{default_video_suffix()}")
    return env_cfg, source, path, source.reason


def _summary(loaded, out: dict, *, mode: str, seed: int, episodes: int, note: str) -> dict[str, Any]:
    returns, lengths = out["returns"], out["lengths"]
    return {
        "run_dir": str(loaded.run_dir), "checkpoint": str(loaded.checkpoint), "env_step": loaded.env_steps,
        "mode": mode, "seed": seed, "episodes": episodes, "returns": returns.tolist(),
        "lengths": lengths.tolist(), "truncated": int(out["truncated"].sum()),
        "return_mean": returns.mean().item(), "return_std": returns.std(unbiased=False).item(),
        "length_mean": lengths.mean().item(), "ends": out["ends"], "video": None, "video_note": note,
        "wandb_run": None,
    }


def _write_film(frames: list, path: Path, source: FrameSource, *, fps, scale, max_frames: int,
                first_return: float, say) -> str:
    if not frames:
        raise UserError("the filmed episode produced no frames")
    fps = fps or source.fps
    if scale is None:
        scale = default_scale(frames[0]) if source.kind == "observation" else 1
    write_video(frames, path, fps=fps, scale=scale)
    capped = " (capped by --max-frames)" if len(frames) >= max_frames else ""
    say(f"[imwm] video of episode 1 (return {first_return:g}): {path} ({len(frames)} frames{capped}, {fps:g} fps)")
    return str(path)


def _log_to_wandb(loaded, result: dict, video_path: Path | None, say) -> str | None:
    """The video (if any) and the return statistics, into the run's own wandb run."""
    from imwm.training.logging import log_video_to_run

    if video_path is None:
        say("[imwm] wandb: no video to log; logging the return statistics only")
    stats = {f"evaluate/{k}": result[k] for k in ("return_mean", "return_std", "length_mean")}
    run = log_video_to_run(loaded.run_dir, loaded.config, video_path, step=loaded.env_steps,
                           run_id=loaded.run_id, name="evaluate/video", metrics=stats)
    say(f"[imwm] wandb: logged to run {run} under {loaded.run_dir / 'wandb'}"
        if run else "[imwm] wandb: disabled (WANDB_MODE / logger.mode), nothing logged")
    return run
