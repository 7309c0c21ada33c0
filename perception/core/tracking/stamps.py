"""The frame gate both trackers (2D and 3D) apply before any state changes.

A frame from another frame_id, a duplicate stamp, or a stamp slightly older
than the last one (within the reorder tolerance: a reordered message) is
rejected, counted and logged. A stamp further back is a clock reset (bag
loop, simulator restart): the caller drops its tracks and starts over.
"""

from __future__ import annotations

import logging
from typing import Protocol

__all__ = ["FrameCounters", "check_frame", "count_reset"]

_NS = 1_000_000_000


class FrameCounters(Protocol):
    frames_rejected_duplicate: int
    frames_rejected_out_of_order: int
    frames_rejected_frame_id: int
    resets: int


def check_frame(
    log: logging.Logger,
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
            "%s: rejected frame: expected frame_id %r, got %r", label, expected_frame_id, frame_id
        )
        return None
    if last is None or stamp > last:
        return False
    if stamp == last:
        stats.frames_rejected_duplicate += 1
        log.warning("%s[%s]: rejected frame: duplicate stamp %d ns", label, frame_id, stamp)
        return None
    if last - stamp <= reorder_tolerance_s * _NS:
        stats.frames_rejected_out_of_order += 1
        log.warning(
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
    log: logging.Logger,
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
        "%s[%s]: stamp went back %.3f s (%d -> %d ns): clock reset, dropping %d tracks",
        label,
        frame_id,
        (last - stamp) / _NS,
        last,
        stamp,
        n_tracks,
    )
    stats.resets += 1
