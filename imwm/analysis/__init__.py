"""Boundary analysis: where VTA's READ fires, against known truth and against events.

- ``boundary_truth``: precision / recall / F1 against known segment changes, with random and
  evenly spaced baselines of the same boundary count.
"""

from imwm.analysis.boundary_truth import (
    boundary_prf,
    evenly_spaced,
    periodic_baseline_prf,
    random_baseline_prf,
)

__all__ = [
    "boundary_prf",
    "evenly_spaced",
    "periodic_baseline_prf",
    "random_baseline_prf",
]
