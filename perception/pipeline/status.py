"""Health of the pipeline as plain key/value statuses (no ROS).

Nodes turn these into diagnostic_msgs/DiagnosticStatus one to one
(`perception.ros.diagnostics`), replay writes them into its summary: the
keys are the same everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from perception.pipeline.detection import DetectionStage
from perception.pipeline.fusion import FusionStage

__all__ = ["ERROR", "OK", "WARN", "Status", "detection_statuses", "fusion_status"]

OK, WARN, ERROR = 0, 1, 2
"""Levels, as diagnostic_msgs/DiagnosticStatus numbers them."""


@dataclass(frozen=True)
class Status:
    """One component's health: level, one-line message, string values."""

    name: str
    level: int
    message: str
    hardware_id: str = ""
    values: dict[str, str] = field(default_factory=dict)


def detection_statuses(
    stage: DetectionStage,
    prefix: str,
    hardware_ids: Mapping[str, str],
    warn_errors: tuple[str, ...] = ("incompatible_qos",),
    now_ns: int | None = None,
) -> list[Status]:
    """A status per camera (rate, counters, errors by kind, latency p50/p95)
    and one for the engine (batches, failures, engine facts, build progress).

    A camera warns when it rejected frames, has one of `warn_errors`, or has
    processed nothing yet.
    """
    now = time.monotonic_ns() if now_ns is None else now_ns
    counters = stage.frame_counts()
    out = []
    for cam in stage.cameras:
        c = counters[cam]
        errors = stage.errors[cam]
        values = {
            "rate_hz": f"{stage.rates[cam].rate_hz(now):.2f}",
            **{k: str(v) for k, v in c.items()},
            **{f"error.{k}": str(v) for k, v in sorted(errors.items())},
        }
        for name, pct in stage.latency[cam].percentiles((50, 95)).items():
            values[f"{name}.p50"] = f"{pct['p50']:.2f}"
            values[f"{name}.p95"] = f"{pct['p95']:.2f}"
        problems = c["rejected"] + sum(errors.get(k, 0) for k in warn_errors)
        message = (
            "no frames yet"
            if c["received"] == 0
            else f"{c['processed']} processed, {c['skipped']} skipped, {c['stale']} stale, "
            f"{c['rejected']} rejected"
        )
        out.append(
            Status(
                name=f"{prefix}: camera {cam}",
                level=WARN if problems or c["processed"] == 0 else OK,
                message=message,
                hardware_id=hardware_ids.get(cam, ""),
                values=values,
            )
        )
    engine = {"batches": str(stage.batches), "errors": str(stage.batch_errors)}
    d = stage.detector
    engine.update(d.engine.describe())
    engine.update(family=str(d.family), classes=str(len(d.class_names)))
    out.append(
        Status(
            name=f"{prefix}: engine",
            level=WARN if stage.batch_errors else OK,
            message=engine.get("engine", "not loaded"),
            hardware_id=engine.get("device", ""),
            values=engine,
        )
    )
    return out


def fusion_status(
    stage: FusionStage, name: str, hardware_id: str, extra: Mapping[str, str]
) -> Status:
    """The fusion stage's counters, prediction horizons and refusals by kind."""
    values = {"published": str(stage.processed), "mode": stage.settings.mode, **extra}
    if stage.horizons_ms:
        h = np.asarray(stage.horizons_ms)
        values["prediction.horizon_ms.p50"] = f"{np.percentile(h, 50):.1f}"
        values["prediction.horizon_ms.max"] = f"{h.max():.1f}"
    values.update({f"error.{k}": str(v) for k, v in sorted(stage.errors.items())})
    values.update({f"fusion.{k}": str(v) for k, v in stage.stats().items()})
    return Status(
        name=name,
        level=WARN if stage.errors or stage.camera is None else OK,
        message="no CameraInfo yet" if stage.camera is None else f"{stage.processed} published",
        hardware_id=hardware_id,
        values=values,
    )
