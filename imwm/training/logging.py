"""Run logging: ``metrics.csv``, a TorchRL ``WandbLogger`` (offline by default), a tqdm progress bar.

``metrics.csv`` in the run folder is always written, whatever ``logger.backend`` is, so a run can be
plotted without wandb (``logger=csv`` writes nothing else; ``logger=none`` is the same). It is a
wide table with **one row per logged env step**: everything logged at one step (the training
means and an evaluation at the same step) lands in the same row. Its columns are ``env_step``
followed by the metric names in sorted order, so the header does not depend on the order in which
metrics first appeared; a metric missing from a row is an empty cell; a non-finite value is
written as ``nan``, ``inf`` or ``-inf``. Each row is written as soon as it is logged (a killed run
loses nothing it logged); the file is rewritten (``.tmp`` + rename) when a new column appears or a
second call adds to the row of the same step. On resume the rows up to the resumed step are kept.

With ``logger=wandb`` the run's resolved config is the wandb run's config, ``logger.project``,
``entity``, ``group``, ``tags``, ``notes`` and ``job_type`` go to ``wandb.init``, and videos are
logged as media (:meth:`RunLogger.log_video`, :func:`log_video_to_run`).

Example:
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> log = RunLogger(tmp.name, backend="none", project="imwm", mode="offline",
    ...                 run_name="demo", total_env_steps=100, progress=False)
    >>> log.log({"train/loss": 1.5}, 50)
    >>> log.log({"eval/return": 20.0}, 50)  # same step: same row
    >>> print(log.metrics_path.read_text().strip())
    env_step,eval/return,train/loss
    50,20.0,1.5
    >>> log.close(); tmp.cleanup()
"""
from __future__ import annotations

import csv
import math
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imwm.errors import ConfigError

__all__ = ["RunLogger", "make_torchrl_logger", "log_video_to_run", "WANDB_INIT_KEYS"]

#: ``logger.*`` keys passed on to ``wandb.init`` (null: wandb's default).
WANDB_INIT_KEYS = ("entity", "group", "tags", "notes", "job_type")
BACKENDS = ("wandb", "csv", "none")


def _check_wandb_keys(project: Any, init: Mapping[str, Any]) -> dict[str, Any]:
    """The non-null ``wandb.init`` keywords, type-checked; a single tag string becomes a list."""
    out: dict[str, Any] = {}
    for key, value in {"project": project, **init}.items():
        if value is None:
            continue
        if key == "tags":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, Sequence) or not all(isinstance(t, str) and t for t in value):
                raise ConfigError("logger.tags", "must be a list of non-empty strings", value)
            value = list(value)
        elif not isinstance(value, str):
            raise ConfigError(f"logger.{key}", "must be a string or null", value)
        out[key] = value
    return out


def make_torchrl_logger(*, backend: str, project: str | None, mode: str, run_name: str, run_dir: Path,
                        run_id: str | None = None, config: Mapping[str, Any] | None = None,
                        **wandb_init: Any):
    """TorchRL ``WandbLogger`` for ``logger.backend=wandb``, None for ``csv`` / ``none``.

    ``config`` becomes the wandb run's config; ``wandb_init`` holds the :data:`WANDB_INIT_KEYS`
    (``None`` values are left out). ``WANDB_MODE`` in the environment overrides ``mode``.

    Raises:
        ConfigError: an unknown backend, a ``wandb_init`` key that is not one of
            :data:`WANDB_INIT_KEYS`, or a value of the wrong type.
    """
    if backend not in BACKENDS:
        raise ConfigError("logger.backend", f"must be one of {list(BACKENDS)}", backend)
    unknown = sorted(set(wandb_init) - set(WANDB_INIT_KEYS))
    if unknown:
        raise ConfigError(", ".join(f"logger.{k}" for k in unknown), "unknown logger key(s); valid: "
                          f"{['backend', 'project', 'mode', *WANDB_INIT_KEYS]}")
    init = _check_wandb_keys(project, wandb_init)  # checked for every backend: a typo fails early
    if backend != "wandb":
        return None  # metrics.csv is the CSV record; TorchRL's CSVLogger would duplicate it
    from torchrl.record.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE", mode)
    # TorchRL's WandbLogger passes its extra keywords to wandb.init (config, entity, group, ...)
    return WandbLogger(
        exp_name=run_name, offline=mode in ("offline", "dryrun"), save_dir=str(run_dir),
        id=run_id, mode="offline" if mode == "dryrun" else mode, log_env_packages=False,
        config=dict(config) if config is not None else None, **init,
    )


def _video_media(path: str | os.PathLike, caption: str | None = None):
    import wandb

    # from a file wandb only copies it: no moviepy / ffmpeg needed (GIF or MP4)
    return wandb.Video(str(path), caption=caption)


def log_video_to_run(run_dir: str | os.PathLike, config: Mapping[str, Any], video: str | os.PathLike | None, *,
                     step: int, run_id: str | None = None, name: str = "eval/video",
                     metrics: Mapping[str, float] | None = None,
                     images: Mapping[str, str | os.PathLike] | None = None) -> str | None:
    """Logs a video file (None: none), images (``{name: png}``) and scalars to the wandb run of a
    finished run folder.

    Uses the run's own ``logger.*`` keys and config, ``run_id`` to continue its wandb run, and
    wandb's mode from ``logger.mode`` / ``WANDB_MODE`` (offline by default), whatever backend the
    run trained with. Returns the wandb run id (None when wandb is disabled).

    Example:
        >>> import os, tempfile
        >>> from unittest import mock
        >>> with tempfile.TemporaryDirectory() as run, mock.patch.dict(os.environ, {"WANDB_MODE": "disabled"}):
        ...     # offline writes files; disabled only checks the call
        ...     log_video_to_run(run, {"run_name": "r", "logger": {}}, None, step=300,
        ...                      metrics={"eval/return": 12.0}) is None
        True
    """
    logger_cfg = dict(config.get("logger") or {})
    init = {k: logger_cfg.get(k) for k in WANDB_INIT_KEYS}
    logger = make_torchrl_logger(backend="wandb", project=logger_cfg.get("project", "imwm"),
                                 mode=logger_cfg.get("mode", "offline"),
                                 run_name=str(config.get("run_name", "run")), run_dir=Path(run_dir),
                                 run_id=run_id, config=config, **init)
    try:
        payload: dict[str, Any] = {k: float(v) for k, v in (metrics or {}).items() if math.isfinite(float(v))}
        if video is not None:
            payload[name] = _video_media(video)
        if images:
            import wandb

            payload.update({key: wandb.Image(str(path)) for key, path in images.items()})
        logger.log_metrics(payload, step=int(step))
        disabled = getattr(logger.experiment, "disabled", False) or getattr(
            getattr(logger.experiment, "settings", None), "mode", "") == "disabled"
        return None if disabled else getattr(logger.experiment, "id", None)
    finally:
        _finish(logger)


def _finish(logger) -> None:
    try:
        logger.experiment.finish()
    except Exception:  # noqa: BLE001 - wandb teardown must not hide the run's result
        pass


def _fmt(value: float | None) -> str:
    """A missing metric is an empty cell; NaN and infinities are written as ``nan`` / ``inf``."""
    return "" if value is None else repr(float(value))


def _column_order(columns) -> list[str]:
    return ["env_step", *sorted(c for c in columns if c != "env_step")]


class RunLogger:
    """Writes metrics to ``metrics.csv`` and wandb, logs videos, and drives the progress bar.

    Args:
        run_dir: the run folder.
        backend, project, mode: ``logger.*`` config keys.
        run_name: experiment name (wandb run name).
        total_env_steps: length of the progress bar.
        start_step: env steps already done (resume): rows logged after it are dropped.
        run_id: wandb run id to resume (stored in the checkpoint).
        progress: show a tqdm bar (also off with ``IMWM_PROGRESS=0``).
        config: the resolved run config, the wandb run's config.
        entity, group, tags, notes, job_type: ``logger.*`` keys for ``wandb.init`` (None: unset).

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> log = RunLogger(tmp.name, backend="none", project="imwm", mode="offline",
        ...                 run_name="r", total_env_steps=100, progress=False)
        >>> log.log({"train/loss": 1.5, "eval/return": float("nan")}, 20)
        >>> log.metrics_path.read_text().splitlines()
        ['env_step,eval/return,train/loss', '20,nan,1.5']
        >>> log.close(); tmp.cleanup()
    """

    def __init__(self, run_dir: str | os.PathLike, *, backend: str, project: str | None, mode: str,
                 run_name: str, total_env_steps: int, start_step: int = 0,
                 run_id: str | None = None, progress: bool = True,
                 config: Mapping[str, Any] | None = None, entity: str | None = None,
                 group: str | None = None, tags: Sequence[str] | None = None,
                 notes: str | None = None, job_type: str | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.csv"
        self.backend = backend
        self.logger = make_torchrl_logger(
            backend=backend, project=project, mode=mode, run_name=run_name, run_dir=self.run_dir,
            run_id=run_id, config=config, entity=entity, group=group, tags=tags, notes=notes,
            job_type=job_type,
        )
        self.run_id = run_id
        if self.logger is not None:
            self.run_id = getattr(self.logger.experiment, "id", run_id)
        self._columns: list[str] = ["env_step"]
        self._rows: list[dict[str, str]] = []
        if self.metrics_path.exists():
            with open(self.metrics_path, newline="") as f:
                reader = csv.DictReader(f)
                self._columns = _column_order(reader.fieldnames or ["env_step"])
                # Rows past the resumed step were logged after the checkpoint: drop them.
                self._rows = [r for r in reader if float(r["env_step"] or 0) <= start_step]
            self._rewrite()
        self.recent_returns: deque[float] = deque(maxlen=20)
        self._bar = None
        if progress and os.environ.get("IMWM_PROGRESS", "1") != "0":
            from tqdm import tqdm

            self._bar = tqdm(total=total_env_steps, initial=start_step, unit="step",
                             dynamic_ncols=True, mininterval=1.0)
        self._last_time = time.perf_counter()
        self._last_updates = 0

    def _rewrite(self) -> None:
        tmp = self.metrics_path.with_name(self.metrics_path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(self._rows)
        os.replace(tmp, self.metrics_path)

    def log(self, metrics: Mapping[str, float], env_step: int) -> None:
        """Logs scalars (floats or 0-d tensors) at ``env_step``, into that step's row."""
        step = str(int(env_step))
        values = {key: float(value) for key, value in metrics.items()}
        if self.logger is not None:
            finite = {k: v for k, v in values.items() if math.isfinite(v)}
            if finite:  # one wandb history row per call, not one per metric
                self.logger.log_metrics(finite, step=int(env_step))
        cells = {key: _fmt(value) for key, value in values.items()}
        new = [k for k in cells if k not in self._columns]
        if new:
            self._columns = _column_order([*self._columns, *new])
        if self._rows and self._rows[-1]["env_step"] == step:
            self._rows[-1].update(cells)  # e.g. the final evaluation after the last training row
            self._rewrite()
            return
        row = {"env_step": step, **cells}
        self._rows.append(row)
        if new:
            self._rewrite()
        else:
            with open(self.metrics_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerow(row)

    def log_video(self, name: str, video: str | os.PathLike, env_step: int, caption: str | None = None) -> bool:
        """Logs a GIF / MP4 file as wandb media at ``env_step``; False when there is no wandb run."""
        if self.logger is None:
            return False
        self.logger.log_metrics({name: _video_media(video, caption)}, step=int(env_step))
        return True

    def episode_returns(self, returns) -> None:
        self.recent_returns.extend(float(r) for r in returns)

    def progress(self, env_step: int, updates: int) -> None:
        """Advances the bar to ``env_step`` and shows updates/s and the recent mean return."""
        if self._bar is None:
            return
        now = time.perf_counter()
        dt = now - self._last_time
        postfix = {}
        if dt > 0:
            postfix["upd/s"] = f"{(updates - self._last_updates) / dt:.2f}"
        if self.recent_returns:
            postfix["return"] = f"{sum(self.recent_returns) / len(self.recent_returns):.1f}"
        self._last_time, self._last_updates = now, updates
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(max(0, env_step - self._bar.n))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.logger is not None:
            _finish(self.logger)
