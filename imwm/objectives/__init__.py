"""LossModules and return estimation for DreamerV3 world-model agents (see docs/architecture.md).

- :class:`ActorLoss`, :class:`CriticLoss` (DreamerV3 behaviour learning, on imagined trajectories)
- :class:`ReplayValueLoss` (DreamerV3 2024 ``repval``: the critic on replayed sequences)
- :func:`lambda_return`, :func:`replay_lambda_return`, :func:`imagined_weight`, :class:`ReturnNormalizer`
- :class:`WorldModelLoss` (from ``imwm.objectives.world_model``, when present)
"""

import importlib.util

from imwm.objectives.actor import ActorLoss
from imwm.objectives.critic import CriticLoss
from imwm.objectives.replay_value import ReplayValueLoss
from imwm.objectives.returns import ReturnNormalizer, imagined_weight, lambda_return, replay_lambda_return

__all__ = [
    "ActorLoss",
    "CriticLoss",
    "ReplayValueLoss",
    "ReturnNormalizer",
    "imagined_weight",
    "lambda_return",
    "replay_lambda_return",
]

if importlib.util.find_spec("imwm.objectives.world_model") is not None:
    # the world-model loss has its own module; a real import error inside it must not be hidden
    from imwm.objectives.world_model import WorldModelLoss  # noqa: F401

    __all__.append("WorldModelLoss")
