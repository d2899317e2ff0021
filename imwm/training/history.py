"""The run folder's config history: ``config.yaml`` is written once and never overwritten.

A later start of the same run folder with other values (a resume with a longer
``total_env_steps``, say) writes ``config.changes-<k>.yaml`` beside it: the env step it started
at, one line per changed key, and the full config it ran with. A hand-edited or corrupt
``config.yaml`` is therefore kept as the user left it.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from imwm.training.config import config_changes

__all__ = ["record_config"]


def _save_yaml(path: Path, data: dict) -> None:
    from omegaconf import OmegaConf

    tmp = path.with_name(path.name + ".tmp")
    OmegaConf.save(OmegaConf.create(data), tmp)
    os.replace(tmp, path)


def _read_yaml(path: Path) -> dict | None:
    from omegaconf import OmegaConf

    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - any unreadable file is treated the same way
        return None
    return loaded if isinstance(loaded, dict) else None


def record_config(run_dir: str | os.PathLike, plain: dict, saved: dict | None, *,
                  env_step: int = 0) -> Path:
    """Writes ``run_dir/config.yaml`` on the first start; records changes on later ones.

    Args:
        run_dir: the run folder.
        plain: the config this start runs with.
        saved: the config stored in the checkpoint being resumed (None for a fresh start); the
            reference for "changed". Without it, the existing ``config.yaml`` is.
        env_step: the env step this start begins at.

    Returns:
        ``config.yaml``'s path.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> folder = Path(tmp.name)
        >>> _ = record_config(folder, {"seed": 0}, None)
        >>> _ = record_config(folder, {"seed": 1}, {"seed": 0}, env_step=100)
        >>> sorted(p.name for p in folder.iterdir())
        ['config.changes-1.yaml', 'config.yaml']
        >>> tmp.cleanup()
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    if not path.exists():
        _save_yaml(path, plain)
        return path
    reference = saved if saved is not None else _read_yaml(path)
    if reference is None:
        warnings.warn(f"{path} is unreadable; kept as it is, this start's config is written "
                      "beside it", stacklevel=2)
        changes = ["config.yaml unreadable"]
    else:
        changes = config_changes(reference, plain)
    if changes:
        k = 1 + sum(1 for _ in run_dir.glob("config.changes-*.yaml"))
        _save_yaml(run_dir / f"config.changes-{k}.yaml",
                   {"env_step": int(env_step), "changes": changes, "config": plain})
    return path
