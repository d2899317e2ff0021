"""Run logging: TorchRL loggers (wandb offline / CSV / none), ``metrics.csv``, a tqdm progress bar.

``metrics.csv`` in the run folder is always written, whatever ``logger.backend`` is, so a run can be
plotted without wandb. It is a wide table, one row per logged step, with ``env_step`` first; a
metric missing from a row is left empty. It is rewritten (``.tmp`` + rename) when a new column
appears and appended otherwise; on resume the existing rows are read back and kept.
"""
from __future__ import annotations

import csv
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["RunLogger", "make_torchrl_logger"]


def make_torchrl_logger(*, backend: str, project: str, mode: str, run_name: str, run_dir: Path,
                        run_id: str | None = None):
    """TorchRL logger for ``logger.backend``: ``WandbLogger`` (offline by default), ``CSVLogger``
    under ``run_dir/csv``, or None."""
    if backend == "none":
        return None
    if backend == "csv":
        from torchrl.record.loggers import CSVLogger

        return CSVLogger(exp_name="csv", log_dir=str(run_dir))
    if backend == "wandb":
        from torchrl.record.loggers import WandbLogger

        mode = os.environ.get("WANDB_MODE", mode)
        return WandbLogger(
            exp_name=run_name, offline=mode in ("offline", "dryrun"), save_dir=str(run_dir),
            project=project, id=run_id, mode="offline" if mode == "dryrun" else mode,
            log_env_packages=False,
        )
    raise ValueError(f"logger.backend must be one of ['wandb', 'csv', 'none'], got {backend!r}")


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value))


class RunLogger:
    """Writes metrics to ``metrics.csv`` and the TorchRL logger, and drives the progress bar.

    Args:
        run_dir: the run folder.
        backend, project, mode: ``logger.*`` config keys.
        run_name: experiment name (wandb run name).
        total_env_steps: length of the progress bar.
        start_step: env steps already done (resume).
        run_id: wandb run id to resume (stored in the checkpoint).
        progress: show a tqdm bar (off when not a terminal and ``IMWM_PROGRESS=0``).
    """

    def __init__(self, run_dir: str | os.PathLike, *, backend: str, project: str, mode: str,
                 run_name: str, total_env_steps: int, start_step: int = 0,
                 run_id: str | None = None, progress: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.csv"
        self.backend = backend
        self.logger = make_torchrl_logger(backend=backend, project=project, mode=mode,
                                          run_name=run_name, run_dir=self.run_dir, run_id=run_id)
        self.run_id = run_id
        if backend == "wandb" and self.logger is not None:
            self.run_id = getattr(self.logger.experiment, "id", run_id)
        self._columns: list[str] = ["env_step"]
        self._rows: list[dict[str, Any]] = []
        if self.metrics_path.exists():
            with open(self.metrics_path, newline="") as f:
                reader = csv.DictReader(f)
                self._columns = list(reader.fieldnames or ["env_step"])
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

    def log(self, metrics: dict[str, float], env_step: int) -> None:
        """Logs one row of scalars at ``env_step`` (values: floats or 0-d tensors)."""
        row = {"env_step": str(int(env_step))}
        for key, value in metrics.items():
            value = float(value)
            row[key] = _fmt(value)
            if self.logger is not None and math.isfinite(value):
                self.logger.log_scalar(key, value, step=int(env_step))
        new = [k for k in row if k not in self._columns]
        self._rows.append(row)
        if new:
            self._columns.extend(new)
            self._rewrite()
        else:
            with open(self.metrics_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerow(row)

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
        if self.logger is not None and self.backend == "wandb":
            try:
                self.logger.experiment.finish()
            except Exception:  # noqa: BLE001 - wandb teardown must not hide the run's result
                pass
