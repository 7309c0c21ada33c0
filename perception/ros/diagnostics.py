"""Pipeline statuses -> diagnostic_msgs/DiagnosticArray (one to one)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from perception.pipeline.status import Status

__all__ = ["diagnostic_array"]


def diagnostic_array(statuses: Iterable[Status], stamp: Any) -> DiagnosticArray:
    """A DiagnosticArray stamped `stamp` (builtin_interfaces/Time) with one
    DiagnosticStatus per `Status`."""
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = [
        DiagnosticStatus(
            level=bytes([s.level]),
            name=s.name,
            message=s.message,
            hardware_id=s.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in s.values.items()],
        )
        for s in statuses
    ]
    return msg
