"""Run identity: which config keys define a training run, and a short stable hash of them.

The default run folder (``configs/config.yaml``) is ``runs/<env>-<task>-<dynamics>-s<seed>-<hash>``,
e.g. ``runs/cartpole-CartPole-v1-rssm-s0-3fa9c2d1``: the readable part is for people, the hash
(:func:`config_hash`) makes every distinct configuration its own folder, so a sweep never collides
and a changed hyperparameter starts a new run instead of silently resuming an old one.

The hash covers every key of the training config except :data:`EXCLUDED_KEYS`: keys that set the
budget, where and how often results are written, the resume policy or the hardware and processes
the run executes on, none of which changes what is learned from which data. Changing one of them
keeps the run folder, so ``total_env_steps=200000`` continues the run that stopped at 100000 (the
change is printed and recorded in ``config.changes-<k>.yaml``, :mod:`imwm.training.history`).
:data:`PINNED_KEYS` are execution keys that were hashed before they were known to be execution
keys: they enter the hash with one fixed value whatever their value, so the folders named before
keep their names and every value shares them.

The hash is the first 8 hex digits of the sha256 of a canonical JSON of that subset (keys sorted,
no whitespace), the same in every process and on every machine. A new key with a default added to
``configs/`` later changes every hash: the next start of an old command makes a new folder; pass
``run_dir=<old folder>`` (and ``resume=true``, since the configs differ) to continue the old run.

Importing this module registers the OmegaConf resolver ``${imwm.run_hash:}`` used by
``configs/config.yaml`` (``imwm.training`` imports it, so any ``imwm.training.*`` import does).

A sweep (``-m``) also keeps a record, ``runs/sweeps/<date>_<time>/``: Hydra's ``multirun.yaml`` and
``jobs.tsv``, one line per job (number, status, run folder, overrides) written by the
:class:`SweepRecord` Hydra callback, which also prints that table when the sweep ends.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra-core is a dependency
    Callback = object

__all__ = ["EXCLUDED_KEYS", "PINNED_KEYS", "RESOLVER", "SweepRecord", "config_hash", "identity_changes",
           "identity_config", "register_resolver"]

# Keys that do not define a run (dotted for a key inside a group; a group name drops the group).
EXCLUDED_KEYS = (
    # the run folder itself, and the resume policy
    "run_name", "run_dir", "resume",
    # budget: extending a run continues it
    "total_env_steps",
    # where and how often metrics, evaluations and checkpoints are written
    "logger", "log_every", "checkpoint_every", "eval_every", "eval_episodes", "eval_max_steps", "eval_sample",
    # where it executes (continuing a CPU run on a GPU is the same run), and in how many
    # collector processes
    "device", "threads", "agent.compile", "agent.compile_scope", "collector_workers",
    # not training keys: Hydra's own node, and the preset's name (its values are in the other keys)
    "hydra", "preset",
)
# Execution keys hashed at one fixed value (the value every run had when the key was hashed as a
# run-defining key): sync and async collection are the same run, in the same folder as before.
PINNED_KEYS = {"collector": "sync"}
HASH_LENGTH = 8
RESOLVER = "imwm.run_hash"


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(leaf, None)


def identity_config(plain: Mapping) -> dict:
    """The part of a plain config that defines the run: a deep copy without :data:`EXCLUDED_KEYS`,
    with :data:`PINNED_KEYS` (where present) at their fixed value.

    Example:
        >>> identity_config({"seed": 0, "device": "cuda", "collector": "async",
        ...                  "agent": {"horizon": 15, "compile": True}})
        {'seed': 0, 'collector': 'sync', 'agent': {'horizon': 15}}
    """
    out = copy.deepcopy(dict(plain))
    for key in EXCLUDED_KEYS:
        _drop(out, key)
    for key, value in PINNED_KEYS.items():
        if key in out:
            out[key] = value
    return out


def config_hash(plain: Mapping, length: int = HASH_LENGTH) -> str:
    """Short hex digest of :func:`identity_config` (sha256 of its canonical JSON).

    Example:
        >>> a = config_hash({"seed": 0, "agent": {"entropy_coef": 3e-4}, "total_env_steps": 100})
        >>> a == config_hash({"agent": {"entropy_coef": 0.0003}, "seed": 0, "total_env_steps": 900})
        True
        >>> a == config_hash({"seed": 1, "agent": {"entropy_coef": 3e-4}, "total_env_steps": 100})
        False
    """
    text = json.dumps(identity_config(plain), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def identity_changes(saved: Mapping, current: Mapping) -> list[str]:
    """``"<key>: <saved> -> <now>"`` for every run-defining key that differs between two plain configs.

    Example:
        >>> identity_changes({"seed": 0, "total_env_steps": 100, "agent": {"horizon": 15}},
        ...                  {"seed": 0, "total_env_steps": 900, "agent": {"horizon": 16}})
        ['agent.horizon: 15 -> 16']
    """
    from imwm.training.config import config_changes

    return config_changes(identity_config(saved), identity_config(current))


def _resolve_run_hash(*, _root_: Any) -> str:
    """``${imwm.run_hash:}``: the hash of the config being composed (resolved, run_name/run_dir left out,
    so the resolver never depends on its own result)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    plain: dict[str, Any] = {}
    for key in _root_:
        if key in EXCLUDED_KEYS:  # (dotted keys are dropped by config_hash)
            continue
        try:
            value = _root_[key]
        except MissingMandatoryValue:
            value = "???"
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True, throw_on_missing=False)
        plain[key] = value
    return config_hash(plain)


def register_resolver() -> None:
    """Registers ``${imwm.run_hash:}`` with OmegaConf (idempotent).

    Example:
        >>> from omegaconf import OmegaConf
        >>> register_resolver()  # done on import already; again is harmless
        >>> cfg = OmegaConf.create({"seed": 3, "run_name": "s${seed}-${imwm.run_hash:}"})
        >>> cfg.run_name == "s3-" + config_hash({"seed": 3})
        True
    """
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(RESOLVER, _resolve_run_hash, replace=True)


class SweepRecord(Callback):
    """Hydra callback (``hydra.callbacks.sweep_record`` in configs/config.yaml) for sweeps (``-m``).

    Each job appends ``<num>\t<status>\t<run folder>\t<overrides>`` to ``<hydra.sweep.dir>/jobs.tsv``
    (in the job's own process, so it works with every launcher); when the sweep ends, the launching
    process prints that table and removes empty folders a launcher left in the sweep folder
    (submitit's literal ``.submitit/%j``). Nothing happens in a single run.

    Example:
        >>> import tempfile
        >>> from types import SimpleNamespace
        >>> from hydra.types import RunMode
        >>> from omegaconf import OmegaConf
        >>> job = SimpleNamespace(status=SimpleNamespace(name="COMPLETED"), overrides=["seed=1"],
        ...                       _return_value={"run_dir": "runs/a"})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     cfg = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": tmp},
        ...                                       "job": {"num": 0}}})
        ...     SweepRecord().on_job_end(cfg, job)
        ...     SweepRecord().on_multirun_end(cfg)
        [imwm] sweep of 1 job, recorded in .../jobs.tsv:
        [imwm]   #0 completed: runs/a  (seed=1)
    """

    FILE = "jobs.tsv"

    @staticmethod
    def _sweep_dir(config: Any) -> Path | None:
        from hydra.types import RunMode
        from omegaconf import OmegaConf

        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
            return None
        cwd = OmegaConf.select(config, "hydra.runtime.cwd") or "."
        return Path(cwd) / str(OmegaConf.select(config, "hydra.sweep.dir"))

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        sweep_dir = self._sweep_dir(config)
        if sweep_dir is None:
            return
        value = getattr(job_return, "_return_value", None)
        if isinstance(value, Mapping) and "run_dir" in value:
            run_dir = value["run_dir"]
        else:
            try:
                run_dir = OmegaConf.select(config, "run_dir")
            except Exception:  # noqa: BLE001 - the job failed; its config may not resolve either
                run_dir = "?"
        status = getattr(getattr(job_return, "status", None), "name", "unknown").lower()
        overrides = " ".join(job_return.overrides or [])
        num = OmegaConf.select(config, "hydra.job.num")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(sweep_dir / self.FILE, "a") as f:  # one short append per job
            f.write(f"{num}\t{status}\t{run_dir}\t{overrides}\n")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = self._sweep_dir(config)
        if sweep_dir is None or not sweep_dir.is_dir():
            return
        for folder in sorted(sweep_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        path = sweep_dir / self.FILE
        if not path.exists():
            return
        rows = sorted((line.split("\t") for line in path.read_text().splitlines() if line),
                      key=lambda r: int(r[0]) if r[0].isdigit() else -1)
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        print(f"[imwm] sweep of {len(rows)} job{'s' * (len(rows) != 1)}, recorded in {shown}:")
        for row in rows:
            num, status, run_dir, overrides = (row + ["", "", "", ""])[:4]
            print(f"[imwm]   #{num} {status}: {run_dir}  ({overrides})")


register_resolver()
