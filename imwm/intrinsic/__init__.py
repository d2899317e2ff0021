"""Intrinsic rewards as TorchRL transforms (added to the extrinsic reward in imagination).

All are :class:`torchrl.envs.transforms.Transform` s that work on an imagined trajectory
``TensorDict[N, H+1]`` (``transform(td)``), on any standalone TensorDict with the keys they read,
and appended to a TorchRL model-based env. They write ``intrinsic_reward`` and ``total_reward``.

- :class:`AdaptiveIntrinsicReward` -- uncertainty bonus, explore/exploit switched by the reward's acceleration.
- :class:`LexaStyleIntrinsicReward` -- decoder std (visual curiosity) weighted by a reward-trend detector.
- :class:`DisagreementIntrinsicReward` -- Plan2Explore ensemble disagreement (trained via ``world_model_update``).
"""

from imwm.intrinsic.adaptive import AdaptiveIntrinsicReward
from imwm.intrinsic.base import IntrinsicRewardTransform
from imwm.intrinsic.disagreement import DisagreementIntrinsicReward
from imwm.intrinsic.ensemble import EnsembleMLP
from imwm.intrinsic.lexa_style import LexaStyleIntrinsicReward

__all__ = [
    "AdaptiveIntrinsicReward",
    "DisagreementIntrinsicReward",
    "EnsembleMLP",
    "IntrinsicRewardTransform",
    "LexaStyleIntrinsicReward",
]
