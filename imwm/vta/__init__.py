"""Variational Temporal Abstraction (Kim, Ahn & Bengio, NeurIPS 2019) in two variants.

- boundary encodings: :data:`READ_INDEX` / :data:`COPY_INDEX` (class indices of the boundary
  logits ``[..., 2]``) and :data:`BOUNDARY_READ` / :data:`BOUNDARY_COPY` (values of a state's
  ``boundary`` flag ``[..., 1]``); see :mod:`imwm.vta.boundary`;
- boundary maths: :func:`gumbel_sampling`, :func:`boundary_sample`, :func:`straight_through`,
  :func:`log_density_concrete`, :func:`regularize_boundary`, :func:`force_scale_at`,
  :func:`temperature_at`;
- layers (``flavour="original"`` or ``"dreamer"``): :class:`LatentDistribution`,
  :class:`PriorBoundaryDetector`, :class:`PostBoundaryDetector`;
- :class:`SurpriseSkip`: READ log-odds read from the running segment's surprise (a few learned weights);
- :class:`VTADynamics`: the DreamerV3-integrated dynamics (Dynamics protocol);
- :class:`VTAOriginal`: the original model with its CNN encoder/decoder and bidirectional posterior;
- :func:`local_boundary_loss`: a boundary gradient from real READ/COPY cost differences.
"""

from imwm.vta.boundary import (
    BOUNDARY_COPY,
    BOUNDARY_READ,
    COPY_INDEX,
    READ_INDEX,
    boundary_sample,
    force_scale_at,
    gumbel_sampling,
    log_density_concrete,
    regularize_boundary,
    straight_through,
    temperature_at,
)
from imwm.vta.dynamics import VTA_STATE_KEYS, VTADynamics
from imwm.vta.layers import LatentDistribution, PostBoundaryDetector, PriorBoundaryDetector
from imwm.vta.local_gradient import local_boundary_loss, sequence_cost
from imwm.vta.options import BOUNDARY_OPTION_DEFAULTS
from imwm.vta.original import VTAOriginal
from imwm.vta.sequence_model import VTASequenceModel
from imwm.vta.surprise_skip import SurpriseSkip

__all__ = [
    "READ_INDEX",
    "COPY_INDEX",
    "BOUNDARY_READ",
    "BOUNDARY_COPY",
    "gumbel_sampling",
    "boundary_sample",
    "straight_through",
    "log_density_concrete",
    "regularize_boundary",
    "force_scale_at",
    "temperature_at",
    "LatentDistribution",
    "local_boundary_loss",
    "sequence_cost",
    "PriorBoundaryDetector",
    "PostBoundaryDetector",
    "SurpriseSkip",
    "VTADynamics",
    "VTA_STATE_KEYS",
    "VTAOriginal",
    "VTASequenceModel",
    "BOUNDARY_OPTION_DEFAULTS",
]
