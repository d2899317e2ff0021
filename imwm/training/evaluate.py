"""Greedy evaluation: one episode per env of a batched eval env, actions by the policy's mode."""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(env: EnvBase, policy, *, max_steps: int) -> dict[str, torch.Tensor]:
    """Runs ``policy`` greedily until every env of the batch finished one episode.

    Steps with ``step_and_maybe_reset`` (no rollout is stored, so Atari evaluation uses no more
    memory than one step). An episode still running after ``max_steps`` counts with the return it
    has reached (it is reported in ``truncated``).

    Args:
        env: a batched env (``[num_envs]``) with ``RewardSum`` (``episode_reward``) and
            ``StepCounter`` (``step_count``) transforms, as :func:`imwm.envs.make_env` builds.
        policy: a TensorDict module writing ``action`` (e.g. ``agent.policy(num_envs)``); it is
            run under ``ExplorationType.DETERMINISTIC``.
        max_steps: cap on steps per episode.

    Returns:
        ``{"returns": [num_envs], "lengths": [num_envs], "truncated": [num_envs] bool}``.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    n = env.batch_size.numel()
    returns = torch.zeros(n)
    lengths = torch.zeros(n)
    finished = torch.zeros(n, dtype=torch.bool)
    if hasattr(policy, "reset"):
        policy.reset()
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        td: TensorDictBase = env.reset()
        for _ in range(max_steps):
            td = policy(td)
            td, td_next = env.step_and_maybe_reset(td)
            done = td.get(("next", "done")).reshape(n).bool()
            newly = done & ~finished
            if newly.any():
                returns[newly] = td.get(("next", "episode_reward")).reshape(n)[newly].float().cpu()
                lengths[newly] = td.get(("next", "step_count")).reshape(n)[newly].float().cpu()
                finished |= newly
            if finished.all():
                break
            last = td
            td = td_next
        else:
            still = ~finished
            returns[still] = last.get(("next", "episode_reward")).reshape(n)[still].float().cpu()
            lengths[still] = last.get(("next", "step_count")).reshape(n)[still].float().cpu()
    return {"returns": returns, "lengths": lengths, "truncated": ~finished}
