"""Match image, depth and cloud messages by stamp, within a tolerance.

One stream is the reference (the image: detections carry its stamp). A
reference message is matched with, in every other stream, the message closest
in stamp within `tolerance_s`; the decision for a stream is taken once that
stream has delivered a message at or after the reference stamp (so a closer
one cannot come later), which costs at most one period of the slowest stream
in latency. Messages that can no longer be matched are dropped and counted per
stream, never paired with a message outside the tolerance. Queues are bounded
(`queue_size` per stream); overflow is counted too.

Pure Python, no ROS: the node calls `push()` from each subscription callback
with the header stamp in nanoseconds and forwards what it returns. A consumer
that must still use what was dropped (the overlay publishes an image without
3D boxes when its objects cannot come) passes `on_drop`; one that cannot wait
for a match (an image published at once) takes a queued message of its stamp
with `take()`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from perception.core.fusion.errors import FusionInputError

__all__ = ["DropCallback", "StampSynchronizer", "StreamStats", "SyncedSet"]

_LOG = logging.getLogger(__name__)
_NS = 1_000_000_000

DropCallback = Callable[[str, int, Any, str], None]
"""on_drop(stream, stamp_ns, item, reason), reason one of "overflow",
"unmatched", "out_of_order", "reset"."""


@dataclass(frozen=True)
class SyncedSet:
    """One matched set: the reference stamp and, per stream, (stamp_ns, item)."""

    stamp_ns: int
    items: dict[str, Any]
    stamps: dict[str, int]

    def __getitem__(self, stream: str) -> Any:
        return self.items[stream]


@dataclass
class StreamStats:
    """Counters of one stream."""

    received: int = 0
    matched: int = 0
    unmatched: int = 0
    overflow: int = 0
    out_of_order: int = 0


@dataclass
class _Stream:
    queue: deque[tuple[int, Any]] = field(default_factory=deque)
    last_ns: int | None = None
    stats: StreamStats = field(default_factory=StreamStats)


class StampSynchronizer:
    """Approximate-time matching of N streams with a hard tolerance.

    Args:
        streams: stream names, e.g. ("image", "depth", "cloud").
        tolerance_s: largest |stamp difference| to the reference accepted.
        queue_size: messages kept per stream while waiting for a match.
        reference: stream whose stamps define the sets (default: the first).
        reset_after_s: a stamp older than the stream's last by more than this
            is a clock reset (simulator restart): every queue is cleared.
            Smaller backward steps and duplicates are dropped as out of order.
        on_drop: called with (stream, stamp_ns, item, reason) for every message
            dropped without a match, when it is dropped (from inside `push`,
            `reset` or `take`; it must not call back into this synchronizer).
    """

    def __init__(
        self,
        streams: Sequence[str],
        tolerance_s: float,
        queue_size: int = 10,
        reference: str | None = None,
        reset_after_s: float = 1.0,
        on_drop: DropCallback | None = None,
    ) -> None:
        names = [str(s) for s in streams]
        if len(names) < 2 or len(set(names)) != len(names):
            raise FusionInputError(
                f"streams: expected at least two distinct names, got {list(streams)!r}"
            )
        if not tolerance_s >= 0.0:
            raise FusionInputError(f"tolerance_s: expected >= 0, got {tolerance_s}")
        if queue_size < 1:
            raise FusionInputError(f"queue_size: expected >= 1, got {queue_size}")
        ref = names[0] if reference is None else reference
        if ref not in names:
            raise FusionInputError(f"reference: expected one of {names}, got {ref!r}")
        self._names = names
        self._ref = ref
        self._tol = round(tolerance_s * _NS)
        self._size = int(queue_size)
        self._reset_ns = int(reset_after_s * _NS)
        self._streams = {n: _Stream() for n in names}
        self._on_drop = on_drop
        self.resets = 0

    @property
    def streams(self) -> list[str]:
        return list(self._names)

    def stats(self) -> dict[str, StreamStats]:
        """Per-stream counters (live objects)."""
        return {n: s.stats for n, s in self._streams.items()}

    def pending(self) -> dict[str, int]:
        """Messages waiting per stream."""
        return {n: len(s.queue) for n, s in self._streams.items()}

    def reset(self) -> None:
        """Drop every queued message (counted as unmatched)."""
        for name, s in self._streams.items():
            s.stats.unmatched += len(s.queue)
            dropped = list(s.queue)
            s.queue.clear()
            s.last_ns = None
            for stamp_ns, item in dropped:
                self._dropped(name, stamp_ns, item, "reset")

    def take(self, stream: str, stamp_ns: int) -> tuple[int, Any] | None:
        """Remove and return the queued (stamp_ns, item) of `stream` closest to
        `stamp_ns` within the tolerance (counted as matched), or None.

        For a consumer that cannot wait for a set (an image published at once
        with whatever objects of its stamp are already here); the other queued
        messages stay where they are."""
        st = self._streams.get(stream)
        if st is None:
            raise FusionInputError(f"stream: expected one of {self._names}, got {stream!r}")
        best, best_d = -1, self._tol + 1
        for j, (ts, _) in enumerate(st.queue):
            d = abs(ts - stamp_ns)
            if d < best_d:
                best, best_d = j, d
        if best < 0:
            return None
        found: tuple[int, Any] = st.queue[best]
        del st.queue[best]
        st.stats.matched += 1
        return found

    def _dropped(self, stream: str, stamp_ns: int, item: Any, reason: str) -> None:
        if self._on_drop is not None:
            self._on_drop(stream, stamp_ns, item, reason)

    def push(self, stream: str, stamp_ns: int, item: Any) -> list[SyncedSet]:
        """Add one message; returns the sets this completed (usually 0 or 1)."""
        st = self._streams.get(stream)
        if st is None:
            raise FusionInputError(f"stream: expected one of {self._names}, got {stream!r}")
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, int):
            raise FusionInputError(f"stamp_ns: expected int, got {type(stamp_ns).__name__}")
        st.stats.received += 1
        if st.last_ns is not None and stamp_ns <= st.last_ns:
            if st.last_ns - stamp_ns > self._reset_ns:
                _LOG.warning(
                    "sync: stream %r went back %.3f s: clock reset, clearing all queues",
                    stream,
                    (st.last_ns - stamp_ns) / _NS,
                )
                self.resets += 1
                self.reset()
            else:
                st.stats.out_of_order += 1
                _LOG.debug("sync: stream %r: dropped out-of-order stamp %d", stream, stamp_ns)
                self._dropped(stream, stamp_ns, item, "out_of_order")
                return []
        st.last_ns = stamp_ns
        if len(st.queue) >= self._size:
            old_ns, old = st.queue.popleft()
            st.stats.overflow += 1
            self._dropped(stream, old_ns, old, "overflow")
        st.queue.append((stamp_ns, item))
        return self._drain()

    def _drain(self) -> list[SyncedSet]:
        out: list[SyncedSet] = []
        ref = self._streams[self._ref]
        tol = self._tol
        while ref.queue:
            t = ref.queue[0][0]
            chosen: dict[str, int] = {}
            waiting = False
            unmatchable = False
            for name in self._names:
                if name == self._ref:
                    continue
                s = self._streams[name]
                q = s.queue
                while q and q[0][0] < t - tol:  # too old for this and any later reference
                    old_ns, old = q.popleft()
                    s.stats.unmatched += 1
                    self._dropped(name, old_ns, old, "unmatched")
                if not q or q[-1][0] < t:
                    # a closer message may still come, unless one is exact
                    if q and q[-1][0] == t:
                        chosen[name] = len(q) - 1
                        continue
                    waiting = True
                    continue
                best, best_d = -1, tol + 1
                for j, (ts, _) in enumerate(q):
                    d = abs(ts - t)
                    if d < best_d:
                        best, best_d = j, d
                    if ts > t + tol:
                        break
                if best < 0:
                    unmatchable = True
                else:
                    chosen[name] = best
            if unmatchable:
                old_ns, old = ref.queue.popleft()
                ref.stats.unmatched += 1
                self._dropped(self._ref, old_ns, old, "unmatched")
                continue
            if waiting:
                break
            _, ref_item = ref.queue.popleft()
            ref.stats.matched += 1
            items = {self._ref: ref_item}
            stamps = {self._ref: t}
            for name, j in chosen.items():
                s = self._streams[name]
                for _ in range(j):
                    old_ns, old = s.queue.popleft()
                    s.stats.unmatched += 1
                    self._dropped(name, old_ns, old, "unmatched")
                ts, it = s.queue.popleft()
                s.stats.matched += 1
                items[name] = it
                stamps[name] = ts
            out.append(SyncedSet(t, items, stamps))
        return out
