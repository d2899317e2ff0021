"""Network-health diagnostics: dormant-neuron ratios (Sokar et al., ICML 2023) and ReDo recycling."""

from imwm.diagnostics.dormant import DormantMonitor, dormant_ratio, neuron_scores
from imwm.diagnostics.redo import ReDo

__all__ = ["DormantMonitor", "ReDo", "dormant_ratio", "neuron_scores"]
