"""Small shared blocks: symlog / two-hot regression, the LayerNorm+SiLU MLP, categorical helpers,
the channel LayerNorm, the LaProp optimiser (DreamerV3 2024)."""

from imwm.nn.distributions import (
    categorical_entropy,
    categorical_kl,
    straight_through_sample,
    uniform_log_probs,
    unimix_logits,
)
from imwm.nn.functional import (
    SymlogTwoHot,
    symexp,
    symlog,
    symlog_bins,
    symlog_two_hot_loss,
    symlog_two_hot_mean,
    two_hot_decode,
    two_hot_encode,
    uniform_two_hot,
)
from imwm.nn.mlp import MLP, init_linear_, trunc_normal_fan_in_
from imwm.nn.norm import ChannelLayerNorm
from imwm.nn.optim import LaProp

__all__ = [
    "ChannelLayerNorm",
    "LaProp",
    "MLP",
    "SymlogTwoHot",
    "categorical_entropy",
    "categorical_kl",
    "init_linear_",
    "straight_through_sample",
    "symexp",
    "symlog",
    "symlog_bins",
    "symlog_two_hot_loss",
    "symlog_two_hot_mean",
    "trunc_normal_fan_in_",
    "two_hot_decode",
    "two_hot_encode",
    "uniform_two_hot",
    "uniform_log_probs",
    "unimix_logits",
]
