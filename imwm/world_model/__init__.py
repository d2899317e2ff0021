"""DreamerV3 world model: image/vector encoders and decoders, reward/continue heads, WorldModel."""

from imwm.world_model.heads import ContinueHead, RewardHead
from imwm.world_model.image import ChannelLayerNorm, ImageDecoder, ImageEncoder
from imwm.world_model.vector import VectorDecoder, VectorEncoder
from imwm.world_model.world_model import WorldModel

__all__ = [
    "ChannelLayerNorm",
    "ContinueHead",
    "ImageDecoder",
    "ImageEncoder",
    "RewardHead",
    "VectorDecoder",
    "VectorEncoder",
    "WorldModel",
]
