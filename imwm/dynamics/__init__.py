"""Latent dynamics: the :class:`Dynamics` protocol and DreamerV3's :class:`RSSMDynamics`."""

from imwm.dynamics.base import Dynamics, check_dynamics
from imwm.dynamics.modules import ImagineStepModule, ObserveModule, state_keys
from imwm.dynamics.rssm import RSSMDynamics

__all__ = ["Dynamics", "ImagineStepModule", "ObserveModule", "RSSMDynamics", "check_dynamics", "state_keys"]
