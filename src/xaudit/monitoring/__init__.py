"""Drift monitoring over captured predictions: baselines, windowed checks, reports."""
from .baseline import Baseline, build_baseline, fit_calibration, low_confidence_mask, save_baseline  # noqa: F401
from .monitor import MonitorConfig, MonitorResult, evaluate_window, run_monitor, summary_lines  # noqa: F401
