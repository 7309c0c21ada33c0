"""The frame gate both trackers (2D and 3D) apply before any state changes.

A frame from another frame_id, a duplicate stamp, or a stamp slightly older
than the last one (within the reorder tolerance: a reordered message) is
rejected, counted and logged. A stamp further back is a clock reset (bag
loop, simulator restart): the caller drops its tracks and starts over.

Logging is throttled per tracker and kind (`WarningThrottle`): a stream of
bad frames writes its first warning at once and then at most one line per
period, saying how many were not written; the counters keep every one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["FrameCounters", "WarningThrottle", "check_frame", "count_reset"]

DEFAULT_PERIOD_S = 5.0

_NS = 1_000_000_000


class FrameCounters(Protocol):
    frames_rejected_duplicate: int
    frames_rejected_out_of_order: int
    frames_rejected_frame_id: int
    resets: int


class WarningThrottle:
    """Warnings of one tracker, at most one line per kind per `period_s`.

    The first occurrence of a kind is written at once; later ones within the
    period are only counted and the next line written says how many were
    left out. The clock (monotonic, logging only) never affects tracking.
    """

    def __init__(
        self,
        log: logging.Logger,
        period_s: float = DEFAULT_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.period_s = float(period_s)
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        """Log `msg % args` unless `kind` was logged less than `period_s` ago;
        returns whether a line was written."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.period_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            msg += " (and %d more since the last such line, not logged)"
            args = (*args, held)
        self.log.warning(msg, *args)
        return True


def check_frame(
    log: WarningThrottle,
    label: str,
    stats: FrameCounters,
    expected_frame_id: str | None,
    frame_id: str,
    stamp: int,
    last: int | None,
    reorder_tolerance_s: float,
) -> bool | None:
    """None: reject the frame (counted and logged). Otherwise whether the
    accepted frame starts after a clock reset (stamp went back beyond the
    reorder tolerance)."""
    if expected_frame_id is not None and frame_id != expected_frame_id:
        stats.frames_rejected_frame_id += 1
        log.warning(
            "frame_id",
            "%s: rejected frame: expected frame_id %r, got %r",
            label,
            expected_frame_id,
            frame_id,
        )
        return None
    if last is None or stamp > last:
        return False
    if stamp == last:
        stats.frames_rejected_duplicate += 1
        log.warning("duplicate", "%s[%s]: rejected frame: duplicate stamp %d ns", label, frame_id,
                    stamp)  # fmt: skip
        return None
    if last - stamp <= reorder_tolerance_s * _NS:
        stats.frames_rejected_out_of_order += 1
        log.warning(
            "out_of_order",
            "%s[%s]: rejected frame: stamp %d ns is %.3f s older than the last (%d ns); "
            "expected increasing stamps",
            label,
            frame_id,
            stamp,
            (last - stamp) / _NS,
            last,
        )
        return None
    return True


def count_reset(
    log: WarningThrottle,
    label: str,
    stats: FrameCounters,
    frame_id: str,
    stamp: int,
    last: int | None,
    n_tracks: int,
) -> None:
    """Log and count a clock reset (the caller then drops its tracks); `last`
    is the previous stamp, which a reset always has."""
    last = stamp if last is None else last
    log.warning(
        "reset",
        "%s[%s]: stamp went back %.3f s (%d -> %d ns): clock reset, dropping %d tracks",
        label,
        frame_id,
        (last - stamp) / _NS,
        last,
        stamp,
        n_tracks,
    )
    stats.resets += 1
