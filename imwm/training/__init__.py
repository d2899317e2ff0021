"""Training: config validation, replay record layout, the loop, checkpoints, logging, evaluation.

Builders owned by other packages live beside these modules (``build_model``, ``build_replay``,
``build_intrinsic``, ``vta_*``) and are imported where used.
"""
from imwm.configs import compose_config  # the training config for given overrides
from imwm.training.checkpoint import load_checkpoint, save_checkpoint
from imwm.training.config import shape_mismatches, validate_config
from imwm.training.evaluate import evaluate
from imwm.training.layout import DreamerRecordLayout, finished_episodes
# registers the ${imwm.run_hash:} resolver that configs/config.yaml uses
from imwm.training import identity  # noqa: F401,E402

__all__ = [
    "DreamerRecordLayout",
    "compose_config",
    "evaluate",
    "finished_episodes",
    "load_checkpoint",
    "run",
    "save_checkpoint",
    "shape_mismatches",
    "validate_config",
]


def run(cfg):
    """``imwm.training.loop.run`` (imported lazily: it pulls in the agent and replay builders)."""
    from imwm.training.loop import run as _run

    return _run(cfg)
