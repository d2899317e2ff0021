"""Boundary analysis: where VTA's READ fires, against known truth and against events.

- ``boundary_truth``: precision / recall / F1 against known segment changes, with random,
  evenly spaced and frame-difference baselines of the same boundary count.
- ``read_placement``: READs by offset from the nearest change, a trained model re-evaluated with
  other minimum segment lengths, and its all-COPY surprise by steps since a change.
- ``read_effect``: the exact change of VTA's cost from one READ at each step, the other
  boundaries held (does the objective reward a READ at the true changes?), and the cost of
  whole boundary sets forced (none, the truth, shifted, random, all).
- ``metrics``: ``boundary_event_metrics``: event rates at READ / COPY, lift,
  permutation p-value, periodic baseline, ROC AUC of the READ probability, Cohen's d.
- ``events``: per-step events: top-p% frame change, reward, score change, life loss, episode end.
- ``figures``: ``boundary_grid.png``, ``boundary_internal.png``, ``boundary_fired.png``
  (vector observations: ``boundary_timeline.png`` and ``boundary_internal.png``).
- ``restore``: rebuild a model from a run folder's saved config (+ checked overrides).
- ``rollout``: traces (per-step boundary, read_prob, seg_len, seg_num, KLs, env signals).
- ``report``: collect, evaluate and print what the two scripts show.
"""

from imwm.analysis.boundary_truth import (
    boundary_prf,
    compare_with_truth,
    evenly_spaced,
    frame_difference_baseline_prf,
    periodic_baseline_prf,
    random_baseline_prf,
    read_offsets,
    reads_at_events,
)
from imwm.analysis.read_placement import (
    copy_surprise_by_steps,
    mean_by_steps_since_change,
    min_seg_len_sweep,
    read_offset_counts,
    reads_by_steps_since_change,
    steps_since_change,
)
from imwm.analysis.events import (
    build_events,
    episode_end_events,
    frame_delta,
    life_loss_events,
    percentile_events,
    reward_events,
    score_change_events,
)
from imwm.analysis.figures import (
    plot_all,
    plot_boundary_fired,
    plot_boundary_grid,
    plot_boundary_internal,
    plot_boundary_timeline,
    select_window,
    skipped_figures,
)
from imwm.analysis.read_effect import held_boundary_costs, local_read_effect
from imwm.analysis.restore import RestoredRun, restore_run
from imwm.analysis.metrics import (
    METRIC_KEYS,
    aggregate_episodes,
    boundary_event_metrics,
    cohens_d,
    multi_event_metrics,
    roc_auc,
)

__all__ = [
    "RestoredRun",
    "restore_run",
    "plot_all",
    "plot_boundary_fired",
    "plot_boundary_grid",
    "plot_boundary_internal",
    "plot_boundary_timeline",
    "skipped_figures",
    "select_window",
    "build_events",
    "episode_end_events",
    "frame_delta",
    "life_loss_events",
    "percentile_events",
    "reward_events",
    "score_change_events",
    "METRIC_KEYS",
    "aggregate_episodes",
    "boundary_event_metrics",
    "cohens_d",
    "multi_event_metrics",
    "roc_auc",
    "boundary_prf",
    "evenly_spaced",
    "periodic_baseline_prf",
    "frame_difference_baseline_prf",
    "compare_with_truth",
    "local_read_effect",
    "held_boundary_costs",
    "random_baseline_prf",
    "read_offsets",
    "reads_at_events",
    "read_offset_counts",
    "steps_since_change",
    "reads_by_steps_since_change",
    "mean_by_steps_since_change",
    "min_seg_len_sweep",
    "copy_surprise_by_steps",
]
