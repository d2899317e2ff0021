"""Run a script of ``scripts/`` the way a user does, for the end-to-end smoke tests, or load it as a module."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(tmp_path: Path, script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python scripts/<script> *args`` in ``tmp_path``: one thread, no wandb, no progress bars."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "IMWM_PROGRESS": "0",
           }
    cmd = [sys.executable, str(ROOT / "scripts" / script), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def load_script(name: str):
    """``scripts/<name>.py`` as a module (not run as ``__main__``), to test its functions directly."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
