"""Moved to :mod:`hrsa.metrics.weights` (text-level resampling weights are a building block
of the metrics' ``score_resampled``); this name stays for existing imports."""

from .metrics.weights import TextResampling

__all__ = ["TextResampling"]
