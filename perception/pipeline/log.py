"""Throttled logging for per-frame problems.

A camera sending garbage at 30 Hz must not flood the log: each kind of
message is written at most once per period (the counters keep the totals).
Works with a `logging.Logger` and with an rclpy logger alike (both have
`info`, `warning` and `error` taking one string).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

__all__ = ["LogSink", "ThrottledLog"]


class LogSink(Protocol):
    """The three methods the pipeline calls on a logger."""

    def info(self, msg: str) -> object: ...

    def warning(self, msg: str) -> object: ...

    def error(self, msg: str) -> object: ...


class ThrottledLog:
    """Writes each `key` at most once per `period_s` (wall clock: logging only)."""

    def __init__(self, sink: LogSink | None = None, period_s: float = 5.0) -> None:
        self.sink: LogSink = sink if sink is not None else logging.getLogger("perception.pipeline")
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def _due(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                return False
            self._last[key] = now
            return True

    def info(self, msg: str) -> None:
        self.sink.info(msg)

    def warning(self, key: str, msg: str) -> None:
        if self._due(key):
            self.sink.warning(msg)

    def error(self, key: str, msg: str) -> None:
        if self._due(key):
            self.sink.error(msg)
