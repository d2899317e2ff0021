"""LossModules and return estimation for DreamerV3 world-model agents (see docs/architecture.md)."""

from imwm.objectives.returns import ReturnNormalizer, imagined_weight, lambda_return

__all__ = ["ReturnNormalizer", "imagined_weight", "lambda_return"]
