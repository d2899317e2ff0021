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

__all__ = ["CAUSES", "EpisodeEnds", "cartpole_cause", "cause_for", "continue_at_terminals", "unnamed_cause"]

#: CartPole-v1's termination thresholds (gymnasium): cart position and pole angle (12 degrees).
CARTPOLE_X_LIMIT = 2.4
CARTPOLE_ANGLE_LIMIT = 12 * 2 * math.pi / 360


def cartpole_cause(obs: torch.Tensor) -> str:
    """``"edge"`` when the cart is off the track, ``"pole"`` when the pole fell, else ``"other"``."""
    if abs(float(obs[0])) > CARTPOLE_X_LIMIT:
        return "edge"
    if abs(float(obs[2])) > CARTPOLE_ANGLE_LIMIT:
        return "pole"
    return "other"


def unnamed_cause(obs: torch.Tensor) -> str:
    """The cause of a termination in an env without a cause function: ``"terminal"``."""
    return "terminal"


#: env name (the ``env.name`` config key) -> cause function.
CAUSES: dict[str, Callable[[torch.Tensor], str]] = {"cartpole": cartpole_cause}


def cause_for(env_cfg) -> Callable[[torch.Tensor], str]:
    """The cause function of the env an ``env`` config group names (:func:`unnamed_cause` when
    none is known)."""
    return CAUSES.get(env_cfg.get("name"), unnamed_cause)


def _stream_records(loaded: "LoadedAgent"):
    """The replay snapshot's records, one ``[T]`` TensorDict per stream, in the order written."""
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
    for records in _stream_records(loaded):
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
