"""imwm: TorchRL components for world-model reinforcement-learning research.

Subpackages: ``nn`` (shared blocks), ``dynamics`` (RSSM and the Dynamics protocol), ``vta``
(Variational Temporal Abstraction), ``world_model``, ``agent`` (actor, critic, imagination,
acting policy), ``objectives`` (LossModules), ``intrinsic`` (intrinsic-reward transforms),
``replay`` (samplers), ``diagnostics`` (dormant neurons), ``analysis`` (boundary evaluation),
``envs``, ``training`` (config -> components, the loop, checkpoints).
"""

__version__ = "0.1.0"
