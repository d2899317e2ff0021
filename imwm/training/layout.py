"""Collector batches -> DreamerV3 replay records (docs/architecture.md, "Replay record layout").

A TorchRL collector yields transitions: ``observation`` o_t, ``action`` a_t, ``is_init`` and under
``"next"`` o_{t+1}, ``reward``, ``terminated``, ``truncated``, ``done``. DreamerV3 (Hafner et al.,
2023) instead stores one record per *observation*, each with the action that led to it and an
``is_first`` flag, so the first observation of every episode is encoded by the world model and the
terminal observation is stored as its own record. The conversion per env and step t:

- if ``is_init[t]``: a record (o_t, action 0, reward 0, is_first) opens a new episode;
- always: a record (o_{t+1}, a_t, r_{t+1}, is_terminal = terminated, is_last = done).

An episode of L steps therefore gives L + 1 records. Records are written env by env (each env's
records contiguous and in time order), so a slice of consecutive storage indices with one
``traj_ids`` value never mixes envs. ``traj_ids`` are unique over envs and over the whole run: the
counter is part of :meth:`DreamerRecordLayout.state_dict`, which goes into checkpoints.

A batch may hold only some of the envs (one worker's of a multi-process collector, see
:mod:`imwm.training.collectors`): ``layout(batch, first_env=w * k)`` converts the rows as envs
``w*k, w*k + 1, ...``, continuing exactly those envs' episodes. With ``stream_key`` set, every
record also carries its env index under that key: :class:`~imwm.replay.StreamWriter` writes env
``i``'s records to replay stream ``i`` (and does not store the key).
"""
from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase

from imwm.errors import UserError

__all__ = ["DreamerRecordLayout", "NonFiniteRecordError", "finished_episodes"]

RECORD_KEYS = ("observation", "action", "reward", "is_first", "is_terminal", "is_last", "traj_ids")


class NonFiniteRecordError(UserError, ValueError):
    """A collector batch holds a NaN or an infinity where a replay record takes its values.

    Example:
        >>> batch = TensorDict({"observation": torch.zeros(1, 2, 3), "action": torch.zeros(1, 2, 2),
        ...     "is_init": torch.tensor([[[True], [False]]]),
        ...     "next": {"observation": torch.zeros(1, 2, 3), "reward": torch.tensor([[[0.0], [float("nan")]]]),
        ...              "terminated": torch.zeros(1, 2, 1, dtype=torch.bool),
        ...              "done": torch.zeros(1, 2, 1, dtype=torch.bool)}}, [1, 2])
        >>> DreamerRecordLayout(num_envs=1)(batch)
        Traceback (most recent call last):
        ...
        imwm.training.layout.NonFiniteRecordError: env 0 returned a NaN or infinity in ('next', 'reward'); nothing of this batch was stored in the replay (check the env and its transforms)
    """


class DreamerRecordLayout:
    """Stateful converter from collector batches ``[num_envs, T]`` to replay records ``[M]``.

    Carries, per env, the id of the episode in progress across batches; vectorised over envs
    and time (no Python loop over steps). It also keeps each env's last observation and refuses a
    batch that continues an episode from anywhere else: a collector that loses steps between
    batches (TorchRL's one-slot ``MultiAsyncCollector`` did, see
    :class:`~imwm.training.collectors.LosslessMultiAsyncCollector`) would otherwise store an
    episode whose records are not consecutive steps, silently.

    Args:
        num_envs: number of envs the run steps (over all collector workers).
        observation_key: key of the observation in the collector batch.
        stream_key: when set, each record gets its env index under this key (the replay stream
            the record belongs to); ``None`` (the default) adds nothing.

    Example:
        >>> b = lambda *shape: torch.zeros(2, 3, *shape, dtype=torch.bool)  # 2 envs, 3 steps
        >>> batch = TensorDict({"observation": torch.randn(2, 3, 4), "action": torch.zeros(2, 3, 2),
        ...     "is_init": torch.tensor([[True, False, False], [True, False, True]]).unsqueeze(-1),
        ...     "next": {"observation": torch.randn(2, 3, 4), "reward": torch.ones(2, 3, 1),
        ...              "terminated": b(1), "done": torch.tensor([[0, 0, 0], [0, 1, 0]]).bool().unsqueeze(-1)}},
        ...     [2, 3])
        >>> layout = DreamerRecordLayout(num_envs=2)
        >>> layout(batch)["traj_ids"].tolist()  # env 0: one episode; env 1: two
        [0, 0, 0, 0, 1, 1, 1, 2, 2]

        One worker's batch: envs 2 and 3 of 4, each record tagged with its env (stream):

        >>> layout = DreamerRecordLayout(num_envs=4, stream_key="stream")
        >>> layout(batch, first_env=2)["stream"].tolist()
        [2, 2, 2, 2, 3, 3, 3, 3, 3]
    """

    def __init__(self, num_envs: int, *, observation_key: str = "observation",
                 stream_key: str | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.observation_key = observation_key
        self.stream_key = stream_key
        self.next_traj_id = 0
        # -1: no episode in progress (start of run, or after a resume: envs restart episodes).
        self.current_traj = torch.full((num_envs,), -1, dtype=torch.int64)
        self._last_obs: dict[int, torch.Tensor] = {}  # env -> its latest next-observation

    def state_dict(self) -> dict:
        return {"next_traj_id": self.next_traj_id}

    def load_state_dict(self, state: dict) -> None:
        self.next_traj_id = int(state["next_traj_id"])
        self.current_traj.fill_(-1)
        self._last_obs.clear()

    def __call__(self, batch: TensorDictBase, first_env: int | None = None) -> TensorDict:
        """Converts one collector batch; returns a TensorDict of records with batch ``[M]``.

        Args:
            batch: ``[n, T]`` transitions (``[T]`` for one env).
            first_env: global index of the batch's first row; rows are envs ``first_env`` ..
                ``first_env + n - 1``. ``None``: the batch holds all ``num_envs`` envs.
        """
        if batch.ndim == 1:
            batch = batch.unsqueeze(0)
        if first_env is None:
            if batch.ndim != 2 or batch.shape[0] != self.num_envs:
                raise ValueError(
                    f"collector batch must be [num_envs={self.num_envs}, T] (or [T] for one env), "
                    f"got batch_size {tuple(batch.batch_size)}"
                )
            first_env = 0
        elif batch.ndim != 2 or first_env < 0 or first_env + batch.shape[0] > self.num_envs:
            raise ValueError(
                f"collector batch of envs {first_env}.. must be [n, T] with first_env + n <= "
                f"num_envs={self.num_envs}, got batch_size {tuple(batch.batch_size)}"
            )
        envs = slice(first_env, first_env + batch.shape[0])
        current = self.current_traj[envs].clone()
        for key in ("action", "is_init", ("next", self.observation_key), ("next", "reward"),
                    ("next", "terminated"), ("next", "done")):
            if key not in batch.keys(True):
                raise KeyError(f"collector batch lacks key {key!r} (needed for replay records)")
        n_env, steps = batch.shape
        self._check_finite(batch, first_env)
        obs = batch.get(self.observation_key)
        next_obs = batch.get(("next", self.observation_key))
        action = batch.get("action").float()
        is_init = batch.get("is_init").reshape(n_env, steps).bool()
        reward = batch.get(("next", "reward")).reshape(n_env, steps, 1).float()
        terminated = batch.get(("next", "terminated")).reshape(n_env, steps, 1).bool()
        done = batch.get(("next", "done")).reshape(n_env, steps, 1).bool()
        if (~is_init[:, 0] & (current < 0)).any():
            bad = (torch.nonzero(~is_init[:, 0] & (current < 0)).flatten() + first_env).tolist()
            raise ValueError(
                f"envs {bad} continue an episode this layout never saw start (is_init is False at "
                "the batch start); feed batches in order from the collector's first one"
            )
        self._check_continuity(obs, is_init[:, 0], first_env)

        # Two slots per step: [2t] = the first record of an episode (valid where is_init),
        # [2t+1] = the record of o_{t+1} (always valid). Row-major selection keeps envs contiguous.
        def pair(first: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
            return torch.stack((first, nxt), dim=2).flatten(1, 2)

        valid = pair(is_init, torch.ones_like(is_init))  # [N, 2T]
        zeros_flag = torch.zeros_like(terminated)
        records = {
            "observation": pair(obs, next_obs)[valid],
            "action": pair(torch.zeros_like(action), action)[valid],
            "reward": pair(torch.zeros_like(reward), reward)[valid],
            "is_first": pair(is_init.unsqueeze(-1), zeros_flag)[valid],
            "is_terminal": pair(zeros_flag, terminated)[valid],
            "is_last": pair(zeros_flag, done)[valid],
        }

        # Episode ids: new episodes get consecutive ids in env-major order.
        starts = pair(is_init, torch.zeros_like(is_init))  # [N, 2T]
        starts_per_env = starts.sum(1)
        first_id = self.next_traj_id + torch.cumsum(starts_per_env, 0) - starts_per_env  # [N]
        episode_in_batch = torch.cumsum(starts.long(), 1)  # [N, 2T], 0 = carried episode
        traj = torch.where(
            episode_in_batch == 0,
            current.unsqueeze(1),
            first_id.unsqueeze(1) + episode_in_batch - 1,
        )
        records["traj_ids"] = traj[valid]
        if self.stream_key is not None:
            env_of_row = torch.arange(first_env, first_env + n_env).unsqueeze(1).expand_as(valid)
            records[self.stream_key] = env_of_row[valid]
        self.next_traj_id += int(starts_per_env.sum())
        self.current_traj[envs] = traj[:, -1]
        for row in range(n_env):
            self._last_obs[first_env + row] = next_obs[row, -1].clone()
        return TensorDict(records, batch_size=[records["traj_ids"].shape[0]])

    def _check_finite(self, batch: TensorDictBase, first_env: int) -> None:
        """Refuses the batch before anything is converted: a replay never holds a non-finite record."""
        for key in (self.observation_key, "action", ("next", self.observation_key), ("next", "reward")):
            value = batch.get(key)
            if not value.is_floating_point():
                continue  # integer frames and flags hold no NaN
            finite = torch.isfinite(value).reshape(batch.shape[0], -1).all(1)
            if not bool(finite.all()):
                envs = (torch.nonzero(~finite).flatten() + first_env).tolist()
                raise NonFiniteRecordError(
                    f"env{'s' if len(envs) > 1 else ''} {', '.join(map(str, envs))} returned a NaN or infinity in "
                    f"{key!r}; nothing of this batch was stored in the replay (check the env and its transforms)"
                )

    def _check_continuity(self, obs: torch.Tensor, starts: torch.Tensor, first_env: int) -> None:
        """Every env that carries its episode into this batch must start where its last batch ended."""
        broken = [first_env + row for row in range(obs.shape[0])
                  if not starts[row] and first_env + row in self._last_obs
                  and not torch.equal(obs[row, 0], self._last_obs[first_env + row])]
        if broken:
            raise ValueError(
                f"collector batch for envs {broken} does not start where their previous batch ended: "
                "env steps were lost between batches (a collector dropped data); refusing to store "
                "an episode whose records are not consecutive steps"
            )


def finished_episodes(batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (returns, lengths) of the episodes that ended in a collector batch.

    Reads ``("next", "done")``, ``("next", "episode_reward")`` (TorchRL ``RewardSum``) and
    ``("next", "step_count")`` (``StepCounter``); both results are 1-D float tensors.

    Example:
        >>> batch = TensorDict({"next": {  # 2 envs, 3 steps: env 0 ends at step 1, env 1 at step 2
        ...     "done": torch.tensor([[0, 1, 0], [0, 0, 1]]).bool().unsqueeze(-1),
        ...     "episode_reward": torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 5.0]]).unsqueeze(-1),
        ...     "step_count": torch.tensor([[4, 5, 1], [7, 8, 9]]).unsqueeze(-1)}}, [2, 3])
        >>> finished_episodes(batch)
        (tensor([2., 5.]), tensor([5., 9.]))
    """
    done = batch.get(("next", "done")).squeeze(-1).bool()
    returns = batch.get(("next", "episode_reward")).squeeze(-1)[done].float()
    lengths = batch.get(("next", "step_count")).squeeze(-1)[done].float()
    return returns, lengths
