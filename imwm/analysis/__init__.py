"""Boundary analysis: where VTA's READ fires, against known truth and against events.

- ``boundary_truth``: precision / recall / F1 against known segment changes, with random and
  evenly spaced baselines of the same boundary count.
- ``metrics``: ``boundary_event_metrics`` (SPEC.md section 3): event rates at READ / COPY, lift,
  permutation p-value, periodic baseline, ROC AUC of the READ probability, Cohen's d.
"""

from imwm.analysis.boundary_truth import (
    boundary_prf,
    evenly_spaced,
    periodic_baseline_prf,
    random_baseline_prf,
)
from imwm.analysis.metrics import (
    METRIC_KEYS,
    aggregate_episodes,
    boundary_event_metrics,
    cohens_d,
    multi_event_metrics,
    roc_auc,
)

__all__ = [
    "METRIC_KEYS",
    "aggregate_episodes",
    "boundary_event_metrics",
    "cohens_d",
    "multi_event_metrics",
    "roc_auc",
    "boundary_prf",
    "evenly_spaced",
    "periodic_baseline_prf",
    "random_baseline_prf",
]
