"""Does a trained agent know how its episodes end? Continue head at the run's terminals, and
how greedy episodes end.

DreamerV3's actor learns in imagination, where an episode ends only where the continue head says
so (Hafner et al., 2023). A termination the head has not learned costs the actor nothing, so a
policy can drift into it. Two checks on a ``scripts/train.py`` run folder:

- :func:`continue_at_terminals`: the run's own replay (the snapshot beside its checkpoint) is
  observed once by the world model, and the continue probability ``sigmoid(continue_head(feat))``
  is averaged over non-terminal records and over terminal ones, grouped by cause;
- :class:`EpisodeEnds`: a hook for the evaluator that counts how episodes ended (a cause, or
  ``"cap"`` when one reached its step limit); ``imwm-eval`` reports it as ``ends``.

:func:`training_episodes` reads the episodes the agent played while it trained, with how each
ended, from the same replay snapshot (:func:`stream_records`, cut by :func:`episodes_in`).

A *cause* function maps a terminal observation ``[D]`` to a name; :data:`CAUSES` holds the known
ones (CartPole-v1: ``"edge"`` for the cart leaving the track, ``|x| > 2.4``, ``"pole"`` for the
pole past 12 degrees); in other envs every terminal is ``"terminal"`` (:func:`unnamed_cause`).

Example:
    >>> cause = CAUSES["cartpole"]
    >>> cause(torch.tensor([2.5, 0.0, 0.0, 0.0])), cause(torch.tensor([0.1, 0.0, -0.3, 0.0]))
    ('edge', 'pole')

    On a run: ``imwm-eval --run runs/<run> --terminals`` (both checks), or
    ``evaluate_run("runs/<run>", terminals=True)`` (:mod:`imwm.analysis.play`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Callable

import torch

from imwm.errors import UserError

if TYPE_CHECKING:
    from imwm.analysis.play import LoadedAgent

__all__ = ["CAUSES", "EpisodeEnds", "cartpole_cause", "cause_for", "continue_at_terminals", "episodes_in",
           "stream_records", "training_episodes", "unnamed_cause"]

#: CartPole-v1's termination thresholds (gymnasium): cart position and pole angle (12 degrees).
CARTPOLE_X_LIMIT = 2.4
CARTPOLE_ANGLE_LIMIT = 12 * 2 * math.pi / 360


def cartpole_cause(obs: torch.Tensor) -> str:
    """``"edge"`` when the cart is off the track, ``"pole"`` when the pole fell, else ``"other"``.

    Example:
        >>> cartpole_cause(torch.tensor([-2.5, 0.0, 0.3, 0.0]))  # both past their limits: edge first
        'edge'
        >>> cartpole_cause(torch.tensor([0.1, 0.0, 0.05, 0.0]))  # 0.05 rad < 12 degrees (0.209 rad)
        'other'
    """
    if abs(float(obs[0])) > CARTPOLE_X_LIMIT:
        return "edge"
    if abs(float(obs[2])) > CARTPOLE_ANGLE_LIMIT:
        return "pole"
    return "other"


def unnamed_cause(obs: torch.Tensor) -> str:
    """The cause of a termination in an env without a cause function: ``"terminal"``.

    Example:
        >>> unnamed_cause(torch.zeros(4))
        'terminal'
    """
    return "terminal"


#: env name (the ``env.name`` config key) -> cause function.
CAUSES: dict[str, Callable[[torch.Tensor], str]] = {"cartpole": cartpole_cause}


def cause_for(env_cfg) -> Callable[[torch.Tensor], str]:
    """The cause function of the env an ``env`` config group names (:func:`unnamed_cause` when
    none is known).

    Example:
        >>> cause_for({"name": "cartpole"}).__name__, cause_for({"name": "atari"}).__name__
        ('cartpole_cause', 'unnamed_cause')
    """
    return CAUSES.get(env_cfg.get("name"), unnamed_cause)


def stream_records(loaded: "LoadedAgent") -> list:
    """The run's replay snapshot, one ``[T]`` TensorDict of records per env stream, in the order
    written (keys as :data:`imwm.training.layout.RECORD_KEYS`).

    Raises:
        UserError: the replay has wrapped, so its oldest records are gone.
    """
    from imwm.training.build_replay import build_replay
    from imwm.training.checkpoint import RunCheckpoint

    cfg = loaded.config
    buffer = build_replay(**cfg["replay"], num_streams=cfg["num_envs"], device="cpu", seed=0)
    RunCheckpoint(loaded.run_dir).restore(buffer)
    writer, storage = buffer._writer, buffer.storage
    # one env: TorchRL's round-robin writer; several: imwm's StreamWriter, one ring per env
    streams = getattr(writer, "num_streams", 1)
    ring = storage.max_size // streams
    if writer._write_count > ring:
        raise UserError(f"{loaded.run_dir}: the replay has wrapped ({writer._write_count} records "
                        f"written, {ring} per stream); this check reads runs whose replay holds all")
    ends = getattr(writer, "_offsets", [writer._write_count])
    rows = storage.get(slice(0, len(storage)))
    return [rows[s * ring: s * ring + ends[s]] for s in range(streams)]


def episodes_in(records, cause: Callable[[torch.Tensor], str] = unnamed_cause) -> list[dict]:
    """The finished episodes of one stream of records, in order.

    A record with ``is_first`` is the reset observation, not an env step; every other record is
    one step. An episode opened before the stream begins (its reset not in the records) is left
    out, an unfinished one at the end too.

    Returns:
        One dict per episode: ``env_step`` (the stream's env steps up to its last step),
        ``length`` (steps), ``return`` (summed reward) and ``end`` (``cause(obs)`` at a
        termination, ``"cap"`` when it was cut at a step limit).

    Example:
        >>> from tensordict import TensorDict
        >>> flags = lambda *i: torch.tensor([t in i for t in range(6)])
        >>> records = TensorDict({"reward": torch.tensor([0., 1., 1., 0., 2., 2.]),
        ...     "observation": torch.zeros(6, 4), "is_first": flags(0, 3),
        ...     "is_terminal": flags(2), "is_last": flags(2, 5)}, [6])
        >>> [(e["env_step"], e["length"], e["return"], e["end"]) for e in episodes_in(records)]
        [(2, 2, 2.0, 'terminal'), (4, 2, 4.0, 'cap')]
    """
    first, last = records["is_first"].reshape(-1).tolist(), records["is_last"].reshape(-1).tolist()
    terminal, reward = records["is_terminal"].reshape(-1).tolist(), records["reward"].reshape(-1).tolist()
    steps, start, total, episodes = 0, None, 0.0, []
    for t in range(len(first)):
        if first[t]:
            start, total = steps, 0.0
        else:
            steps, total = steps + 1, total + reward[t]
        if last[t] and start is not None:
            end = cause(records["observation"][t]) if terminal[t] else "cap"
            episodes.append({"env_step": steps, "length": steps - start, "return": total, "end": end})
            start = None
    return episodes


def training_episodes(loaded: "LoadedAgent") -> list[list[dict]]:
    """The episodes a run played while it trained, per env stream (:func:`episodes_in` of
    :func:`stream_records`), their ends named by the run's env (:func:`cause_for`).

    ``env_step`` counts the stream's own steps; with several envs the run's env steps are their
    sum. Example: ``training_episodes(load_agent("runs/<run>"))[0][-1]["return"]``.
    """
    cause = cause_for(loaded.config["env"])
    return [episodes_in(records, cause) for records in stream_records(loaded)]


@torch.no_grad()
def continue_at_terminals(loaded: "LoadedAgent") -> dict:
    """Mean continue probability over the run's replay, at non-terminal records and by cause.

    Returns:
        ``{"non_terminal": {"count", "continue"}, "<cause>": {"count", "continue"}, ...}``, a
        group only where the replay holds such records. Posterior latents are sampled (unseeded),
        so a rerun moves the means slightly.
    """
    wm = loaded.agent.world_model
    device = next(wm.parameters()).device
    cause = cause_for(loaded.config["env"])
    probs: dict[str, list[float]] = defaultdict(list)
    for records in stream_records(loaded):
        if records.shape[0] == 0:
            continue
        records = records.to(device)
        first = records["is_first"].clone()
        first[0] = True  # the stream's first record starts a state whatever its flag says
        feat = wm.observe(records["observation"][None], records["action"][None].float(),
                          first[None])["feat"][0]
        p = wm.continue_head.prob(wm.continue_head(feat)).squeeze(-1).cpu()
        terminal = records["is_terminal"].reshape(-1).cpu()
        assert p.shape == terminal.shape, (p.shape, terminal.shape)
        probs["non_terminal"] += p[~terminal].tolist()
        for t in terminal.nonzero().reshape(-1).tolist():
            probs[cause(records["observation"][t])].append(float(p[t]))
    return {name: {"count": len(v), "continue": sum(v) / len(v)} for name, v in sorted(probs.items())}


class EpisodeEnds:
    """A ``watch`` hook for :func:`imwm.training.evaluate.evaluate` that names how each env's first
    episode ended: its cause at termination, ``"cap"`` when it was cut at a step limit.

    Example:
        >>> from imwm.envs import make_env
        >>> from imwm.training.evaluate import evaluate
        >>> env = make_env(name="cartpole", num_envs=2, seed=0)
        >>> ends = EpisodeEnds(2, cartpole_cause)
        >>> left = lambda td: td.set("action", torch.nn.functional.one_hot(
        ...     torch.zeros(2, dtype=torch.long), 2))
        >>> _ = evaluate(env, left, max_steps=500, watch=ends)
        >>> ends.counts()
        {'pole': 2}
    """

    def __init__(self, num_envs: int, cause: Callable[[torch.Tensor], str] = unnamed_cause):
        self.num_envs = num_envs
        self.cause = cause
        self.ends: list[str | None] = [None] * num_envs

    def __call__(self, td, key, finished) -> None:
        if key != ("next", "observation"):
            return
        terminal = td.get(("next", "terminated")).reshape(self.num_envs)
        obs = td.get(key).reshape(self.num_envs, -1)
        for i in range(self.num_envs):
            if not finished[i] and self.ends[i] is None and terminal[i]:
                self.ends[i] = self.cause(obs[i])

    def counts(self) -> dict[str, int]:
        """``{cause or "cap": episodes}``; an episode that did not terminate was cut at a limit."""
        return dict(sorted(Counter(end or "cap" for end in self.ends).items()))
