"""Run a restored model over data it was not trained on and record what its boundary does.

A *trace* is a plain ``dict`` of per-step numpy arrays for one episode or one sequence, the
input of ``imwm.analysis.figures`` and of the evaluation script:

| key | shape | meaning |
|---|---|---|
| ``frames`` | ``[T, 3, H, W]`` uint8, or ``[T, D]`` | the observations (images, or vectors such as CartPole's) |
| ``boundary`` | ``[T]`` bool | posterior READ (1 = a new segment starts at t) |
| ``read_prob`` | ``[T]`` | posterior P(READ) (before forcing, from the boundary detector) |
| ``seg_len``, ``seg_num`` | ``[T]`` | segment counters after step t |
| ``kl_abs`` | ``[T]`` | abstract KL(post || prior) at t, *not* weighted by READ |
| ``kl_obs`` | ``[T]`` | observation KL(post || prior) at t |
| ``frame_delta`` | ``[T]`` | ``mean |f_t - f_{t-1}|`` over pixels or vector entries (NaN at t = 0) |
| ``reward``, ``raw_reward``, ``lives``, ``is_last``, ``action`` | ``[T]`` | env signals (Atari only) |
| ``true_boundary`` | ``[T]`` bool | known segment starts (Moving Shapes only) |

Step 0 of a sequence or episode is a segment start by construction (the state is reset), so
evaluations leave it out; figures show it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from imwm.analysis.events import frame_delta as compute_frame_delta
from imwm.errors import check_integer

__all__ = ["rollout_vta_sequences", "heldout_moving_shapes", "trace_slice", "play_episode",
           "boundary_trace", "episode_windows", "rollout_agent"]


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


@torch.no_grad()
def rollout_vta_sequences(model: torch.nn.Module, observation: torch.Tensor, *,
                         true_boundary: torch.Tensor | None = None, batch_size: int = 16) -> list[dict]:
    """Traces of a ``train_vta`` model on sequences ``observation [N, T, 3, H, W]`` (uint8).

    Works for any module whose ``forward(obs)`` returns the ``VTAOriginal`` keys ``boundary``,
    ``read_prob``, ``seg_len``, ``seg_num`` ``[N, T, 1]`` and ``kl_obs``, ``kl_abs_raw`` (or,
    failing that, ``kl_abs``) ``[N, T]``.

    The model runs in ``eval()`` mode: boundaries are the posterior's mode (argmax), not a
    Gumbel sample, so the result is deterministic in the boundary (the latent states are still
    sampled, which affects only the KL curves).
    """
    if observation.dim() != 5:
        raise ValueError(f"observation must be [N, T, C, H, W], got shape {tuple(observation.shape)}")
    if true_boundary is not None and tuple(true_boundary.shape[:2]) != tuple(observation.shape[:2]):
        raise ValueError(f"true_boundary must be [N, T(, 1)] like observation's first two dims "
                         f"{tuple(observation.shape[:2])}, got {tuple(true_boundary.shape)}")
    was_training = model.training
    model.eval()
    traces = []
    try:
        for lo in range(0, observation.shape[0], batch_size):
            obs = observation[lo:lo + batch_size]
            out = model(obs)
            kl_abs_key = "kl_abs_raw" if "kl_abs_raw" in out.keys() else "kl_abs"
            for i in range(obs.shape[0]):
                frames = _np(obs[i])
                trace = {
                    "frames": frames,
                    "boundary": _np(out["boundary"][i, :, 0]) > 0.5,
                    "read_prob": _np(out["read_prob"][i, :, 0]).astype(np.float64),
                    "seg_len": _np(out["seg_len"][i, :, 0]).astype(np.float64),
                    "seg_num": _np(out["seg_num"][i, :, 0]).astype(np.float64),
                    "kl_abs": _np(out[kl_abs_key][i]).reshape(-1).astype(np.float64),
                    "kl_obs": _np(out["kl_obs"][i]).reshape(-1).astype(np.float64),
                    "frame_delta": compute_frame_delta(frames),
                }
                if "prior_read_prob" in out.keys():
                    trace["prior_read_prob"] = _np(out["prior_read_prob"][i, :, 0]).astype(np.float64)
                if true_boundary is not None:
                    tb = true_boundary[lo + i]
                    trace["true_boundary"] = _np(tb.reshape(tb.shape[0])).astype(bool)
                traces.append(trace)
    finally:
        model.train(was_training)
    return traces


def heldout_moving_shapes(data_cfg: Mapping[str, Any], num_sequences: int, *, seed: int | None = None,
                          seq_len: int | None = None):
    """Held-out sequences of the run's known-boundary dataset, generated with its own options.

    ``data.kind`` picks the dataset (Moving Shapes when absent: older runs); every key of the
    run's dataset section that the dataset's generator accepts is passed on (``image_size``,
    ``min_seg_len``, ``object_size``, ``seed``, ...), so the held-out data looks like the training
    data (:func:`imwm.envs.boundary_data.generate_boundary_data`); loader keys (``batch_size``,
    ...) are ignored. The split is always ``"heldout"``.

    Args:
        data_cfg: the run's ``data`` section.
        num_sequences: how many sequences (the first ones of the held-out split).
        seed, seq_len: replace the run's values when given.
    """
    from imwm.envs.boundary_data import generate_boundary_data

    return generate_boundary_data(data_cfg, num_sequences, split="heldout", seq_len=seq_len, seed=seed)


def trace_slice(trace: Mapping[str, Any], start: int, stop: int | None = None) -> dict:
    """The steps ``[start, stop)`` of every per-step entry of a trace (other entries kept).

    Per step: an array or tensor whose first dim, or a list or tuple whose length, is the trace's
    length (that of ``boundary``).

    Example:
        >>> trace = {"boundary": np.array([1, 0, 0, 1]), "read_prob": torch.tensor([0.9, 0.1, 0.2, 0.8]),
        ...          "events": [[], ["reward"], [], []], "auc": 0.75}
        >>> part = trace_slice(trace, 1, 3)
        >>> part["boundary"].tolist(), part["read_prob"].tolist(), part["events"], part["auc"]
        ([0, 0], [0.10000000149011612, 0.20000000298023224], [['reward'], []], 0.75)
    """
    return _slice_steps(trace, len(trace["boundary"]), start, stop)


def _slice_steps(record: Mapping[str, Any], length: int, start: int, stop: int | None) -> dict:
    """``record`` with every per-step entry (an array or tensor whose first dim, or a list or tuple
    whose length, is ``length``) cut to ``[start, stop)``; other entries kept."""

    def per_step(v: Any) -> bool:
        if isinstance(v, (np.ndarray, torch.Tensor)):
            return v.ndim > 0 and v.shape[0] == length
        return isinstance(v, (list, tuple)) and len(v) == length

    return {k: (v[start:stop] if per_step(v) else v) for k, v in record.items()}


@torch.no_grad()
def play_episode(env, *, policy=None, max_steps: int = 1000) -> dict[str, np.ndarray]:
    """Play one episode of a TorchRL env with batch ``[1]`` and record it in replay layout.

    Record ``t`` holds ``observation`` o_t, the ``action`` that led to it (zeros at t = 0),
    the ``reward`` received on arriving at it, ``lives`` and ``is_last`` (docs/architecture.md).

    Args:
        env: e.g. ``imwm.envs.make_env(name="atari", ...)`` with ``num_envs=1``.
        policy: a TensorDict module writing ``action`` (``agent.policy(1)``, reset here), or
            ``None`` for uniformly random actions.
        max_steps: cap on actions taken; the episode is cut (``is_last`` set) when reached.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if policy is not None and hasattr(policy, "reset"):
        policy.reset()
    from torchrl.envs.utils import ExplorationType, set_exploration_type, step_mdp

    with set_exploration_type(ExplorationType.RANDOM):  # the actor samples, as when collecting data
        return _play(env, policy, max_steps, step_mdp)


def _play(env, policy, max_steps: int, step_mdp) -> dict[str, np.ndarray]:
    td = env.reset()
    action_dim = int(env.action_spec.shape[-1])
    rec = {"observation": [], "action": [], "reward": [], "lives": [], "is_last": []}

    def record(src, action, reward):
        rec["observation"].append(_np(src["observation"][0]))
        rec["action"].append(action)
        rec["reward"].append(reward)
        rec["lives"].append(float(src["lives"].reshape(-1)[0]) if "lives" in src.keys() else np.nan)

    record(td, np.zeros(action_dim, np.float32), 0.0)
    for step in range(max_steps):
        td = policy(td) if policy is not None else td.set("action", env.action_spec.rand())
        action = _np(td["action"].reshape(-1, action_dim)[0]).astype(np.float32)
        td = env.step(td)
        nxt = td["next"]
        record(nxt, action, float(nxt["reward"].reshape(-1)[0]))
        done = bool(nxt["done"].reshape(-1)[0])
        rec["is_last"].append(done)
        if done:
            break
        td = step_mdp(td)
    rec["is_last"] = [False] + rec["is_last"]
    rec["is_last"][-1] = True  # done, or cut at max_steps
    out = {k: np.stack(v) if k in ("observation", "action") else np.asarray(v) for k, v in rec.items()}
    out["is_last"] = out["is_last"].astype(bool)
    return out


def _require_boundary(dynamics) -> None:
    if not hasattr(dynamics, "post_boundary"):
        raise ValueError(f"this run's dynamics is {type(dynamics).__name__}, which has no boundary; "
                         f"boundary analysis needs a run trained with dynamics=vta")


@torch.no_grad()
def boundary_trace(world_model, episode: Mapping[str, np.ndarray]) -> dict:
    """Run ``world_model.encoder`` + ``world_model.dynamics.observe`` over a whole recorded episode.

    The posterior is computed as in training (``observe``: the boundary conv sees the next
    frame too), in ``eval()`` mode (boundary = the posterior's mode). ``read_prob`` is the READ
    probability the model acted on (softmax of the stored ``boundary_logit``, after forcing);
    ``detector_read_prob`` is the posterior detector's own, before forcing.

    Raises:
        ValueError: when the dynamics has no boundary (``dynamics=rssm``).
    """
    dynamics = world_model.dynamics
    _require_boundary(dynamics)
    ref = next(world_model.parameters())
    obs = torch.as_tensor(episode["observation"], device=ref.device)
    embed = torch.cat([world_model.encoder(chunk) for chunk in obs.split(256)], 0).unsqueeze(0)
    action = torch.as_tensor(episode["action"], device=ref.device, dtype=ref.dtype).unsqueeze(0)
    is_first = torch.zeros(1, obs.shape[0], 1, dtype=torch.bool, device=ref.device)
    is_first[:, 0] = True
    posterior, prior = dynamics.observe(embed, action, is_first)
    _, metrics = dynamics.kl_loss(posterior, prior, free_bits=0.0, dyn_scale=1.0, rep_scale=1.0)
    detector = torch.softmax(dynamics.detector_logits(embed, action, is_first), -1)[..., 0]
    frames = episode["observation"]
    trace = {
        "frames": frames,
        "boundary": _np(posterior["boundary"][0, :, 0]) > 0.5,
        "read_prob": _np(torch.softmax(posterior["boundary_logit"][0], -1)[:, 0]).astype(np.float64),
        "detector_read_prob": _np(detector[0]).astype(np.float64),
        "seg_len": _np(posterior["seg_len"][0, :, 0]).astype(np.float64),
        "seg_num": _np(posterior["seg_num"][0, :, 0]).astype(np.float64),
        "kl_abs": _np(metrics["kl_abs"][0]).astype(np.float64),
        "kl_obs": _np(metrics["kl_obs"][0]).astype(np.float64),
        "frame_delta": compute_frame_delta(frames),
    }
    for key in ("reward", "lives", "is_last"):
        trace[key] = episode[key]
    trace["raw_reward"] = episode["reward"]  # the env's reward is the raw ALE score change
    trace["action"] = episode["action"].argmax(-1)
    return trace


def episode_windows(episode: Mapping[str, np.ndarray], window: int) -> list[dict]:
    """A recorded episode cut into consecutive windows of ``window`` steps (the last one shorter);
    a last window of a single step is dropped (with its forced first READ left out, nothing remains).

    Example:
        >>> ep = {"observation": np.arange(10), "reward": np.arange(10) * 2, "task": "catch"}
        >>> [w["observation"].tolist() for w in episode_windows(ep, 4)], episode_windows(ep, 4)[2]["task"]
        ([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], 'catch')
    """
    window = check_integer("window", window, 2)
    length = len(episode["observation"])
    return [_slice_steps(episode, length, s, s + window) for s in range(0, length, window) if length - s >= 2]


@torch.no_grad()
def rollout_agent(agent, config: Mapping[str, Any], *, episodes: int, seed: int = 0, max_steps: int = 1000,
                  policy: str = "agent", window: int | None = None) -> list[dict]:
    """Fresh episodes of the run's env, played by the trained actor (or randomly), then traced.

    Episode ``i`` uses a new env seeded ``seed + i`` (never the training seeds' stream). The
    actor samples its actions (as when collecting data); ``policy="random"`` acts uniformly.
    With ``window``, each episode is traced in windows of that many steps, each from a fresh
    state, as the world model trains on ``replay.batch_length`` windows (one trace per window).
    """
    from imwm.envs import make_env

    if policy not in ("agent", "random"):
        raise ValueError(f"policy must be 'agent' or 'random', got {policy!r}")
    _require_boundary(agent.world_model.dynamics)
    was_training = agent.training
    agent.eval()
    traces = []
    try:
        for i in range(episodes):
            env = make_env(**dict(config["env"]), num_envs=1, seed=int(seed) + i)
            try:
                torch.manual_seed(int(seed) + i)
                actor = agent.policy(1) if policy == "agent" else None
                episode = play_episode(env, policy=actor, max_steps=max_steps)
            finally:
                env.close()
            parts = [episode] if window is None else episode_windows(episode, window)
            traces.extend(boundary_trace(agent.world_model, part) for part in parts)
    finally:
        agent.train(was_training)
    return traces
