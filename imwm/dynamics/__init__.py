"""Latent dynamics: the :class:`Dynamics` protocol and DreamerV3's :class:`RSSMDynamics`."""

from imwm.dynamics.base import Dynamics, check_dynamics
from imwm.dynamics.rssm import RSSMDynamics

__all__ = ["Dynamics", "RSSMDynamics", "check_dynamics"]
