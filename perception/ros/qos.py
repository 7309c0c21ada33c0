"""QoS profiles of the package's topics, in one place."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["LATCHED", "OUTPUTS", "OVERLAY", "sensor_qos"]

LATCHED = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)
"""Slow-changing facts (label info): late subscribers get the last message."""

OUTPUTS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
"""Per-frame results (detections, tracks, latency rows)."""

OVERLAY = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
"""Annotated images: reliable matches reliable and best-effort viewers (RViz),
depth 1 so a slow viewer never queues frames."""


def sensor_qos(reliability: str, depth: int) -> QoSProfile:
    """A camera or sensor subscription: 'reliable' or 'best_effort' (matches
    every publisher), keep-last `depth`, volatile."""
    return QoSProfile(
        depth=depth,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE
        if reliability == "reliable"
        else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )
