"""The Hydra configs of imwm, shipped inside the package (package data: ``imwm/configs/**/*.yaml``).

``config.yaml`` is the training config (``imwm-train`` / ``scripts/train.py``), ``train_vta.yaml``
the Moving Shapes VTA config (``imwm-train-vta`` / ``scripts/train_vta.py``); the groups
(``env/``, ``model/``, ``preset/``, ...) sit in the folders beside them. The repository keeps a
``configs -> imwm/configs`` symlink at its root, so paths like ``configs/preset/laptop.yaml`` still
lead here.

Hydra finds them as ``pkg://imwm.configs`` (the entry points in :mod:`imwm.cli` use that), which
works from any working directory and for a normal (non-editable) install. To compose a config in
Python (tests, notebooks, the bench scripts)::

    from imwm.configs import compose_config
    cfg = compose_config(["preset=debug", "logger=csv"])          # config.yaml
    vta = compose_config(["train.updates=2"], config_name="train_vta")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["CONFIG_DIR", "CONFIG_MODULE", "CONFIG_PATH", "compose_config"]

#: The folder holding ``config.yaml`` (for ``OmegaConf.load`` of one group file, or
#: ``hydra.initialize_config_dir``).
CONFIG_DIR = Path(__file__).resolve().parent
#: The importable module Hydra reads the configs from (``hydra.initialize_config_module``).
CONFIG_MODULE = "imwm.configs"
#: ``config_path`` for ``@hydra.main``.
CONFIG_PATH = "pkg://" + CONFIG_MODULE


def compose_config(overrides: Sequence[str] = (), config_name: str = "config", *,
                   return_hydra_config: bool = False):
    """The config Hydra would give ``imwm-train`` (or ``imwm-train-vta`` with
    ``config_name="train_vta"``) for these command-line ``overrides``, as a ``DictConfig``.

    Interpolations stay unresolved (as in the entry points); the ``${imwm.run_hash:}`` resolver that
    ``run_name`` uses is registered here, so ``cfg.run_dir`` resolves. Hydra is initialised for the
    compose and put back as it was afterwards; call it outside a running Hydra app (tests,
    notebooks, scripts), as ``hydra.initialize_config_module`` requires.

    Example:
        >>> cfg = compose_config(["seed=3", "env=cartpole"])
        >>> cfg.seed, cfg.env.name, cfg.run_name.startswith("cartpole-CartPole-v1-rssm-s3-")
        (3, 'cartpole', True)
    """
    from hydra import compose, initialize_config_module

    import imwm.training.identity  # noqa: F401  (registers ${imwm.run_hash:})

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
