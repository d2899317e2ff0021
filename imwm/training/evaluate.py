"""Evaluation: one episode per env of a batched eval env, actions by the policy's mode by default."""
from __future__ import annotations

from typing import Any, Callable

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(env: EnvBase, policy, *, max_steps: int,
             exploration: ExplorationType = ExplorationType.DETERMINISTIC,
             watch: Callable[[TensorDictBase, Any, torch.Tensor], None] | None = None) -> dict[str, torch.Tensor]:
    """Runs ``policy`` until every env of the batch finished one episode (greedily by default).

    No rollout is stored, so Atari evaluation uses no more memory than one step. An episode still
    running after ``max_steps`` counts with the return it has reached (reported in ``truncated``).
    Each step is ``step``, then ``step_mdp`` + ``maybe_reset`` (what ``step_and_maybe_reset``
    does), so ``watch`` sees every transition, the terminal observation included.

    Args:
        env: a batched env (``[num_envs]``) with ``RewardSum`` (``episode_reward``) and
            ``StepCounter`` (``step_count``) transforms, as :func:`imwm.envs.make_env` builds.
        policy: a TensorDict module writing ``action`` (e.g. ``agent.policy(num_envs)``).
        max_steps: cap on steps per episode.
        exploration: how the policy picks actions (``DETERMINISTIC``: its mode; ``RANDOM``: a sample).
        watch: called as ``watch(td, key, finished)`` with the reset TensorDict and
            ``"observation"``, then after every step with the transition and
            ``("next", "observation")``; ``finished`` flags the envs whose episode already ended
            before this step (e.g. a video recorder films env 0 until it is done).

    Returns:
        ``{"returns": [num_envs], "lengths": [num_envs], "truncated": [num_envs] bool}``.

    Example:
        >>> from imwm.envs import make_env
        >>> env = make_env(name="gym", task="CartPole-v1", num_envs=2, seed=0)
        >>> left = lambda td: td.set("action", torch.nn.functional.one_hot(
        ...     torch.zeros(2, dtype=torch.long), 2))
        >>> out = evaluate(env, left, max_steps=500)
        >>> out["truncated"].tolist(), bool((out["returns"] < 20).all())
        ([False, False], True)
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    n = env.batch_size.numel()
    returns, lengths = torch.zeros(n), torch.zeros(n)
    finished = torch.zeros(n, dtype=torch.bool)

    def record(td: TensorDictBase, which: torch.Tensor) -> None:
        returns[which] = td.get(("next", "episode_reward")).reshape(n)[which].float().cpu()
        lengths[which] = td.get(("next", "step_count")).reshape(n)[which].float().cpu()

    if hasattr(policy, "reset"):
        policy.reset()
    with set_exploration_type(exploration):
        td: TensorDictBase = env.reset()
        if watch is not None:
            watch(td, "observation", finished)
        for _ in range(max_steps):
            td = env.step(policy(td))
            if watch is not None:
                watch(td, ("next", "observation"), finished)
            newly = td.get(("next", "done")).reshape(n).bool() & ~finished
            if newly.any():
                record(td, newly)
                finished |= newly
            if finished.all():
                break
            last = td
            td = env.maybe_reset(env.step_mdp(td))
        else:
            record(last, ~finished)
    return {"returns": returns, "lengths": lengths, "truncated": ~finished}
