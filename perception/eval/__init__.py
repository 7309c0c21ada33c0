"""Evaluation helpers (pure numpy): detection metrics for held-out and demo
reports."""

from perception.eval.detection_metrics import (
    average_precision,
    average_precision_per_class,
    match_detections,
)

__all__ = ["average_precision", "average_precision_per_class", "match_detections"]
