"""Freshness, not queues: the newest frame of each camera, nothing older.

Camera callbacks `put` frames; the inference loop `take_fresh` the newest
frame of every camera at once and runs them as one batch. A frame replaced
before it was used is counted as skipped, one older than `max_age` when the
loop gets to it is counted as stale: nothing disappears without a counter,
and no backlog can build up whatever the model's speed.

Fairness: each camera has exactly one slot, so a camera that floods only
replaces its own frame (its `skipped` counter grows) and can never take a
second place in a batch. `take_fresh` without a limit takes every waiting
camera, so under overload each camera is served once per batch and all
output rates are equal. With a `limit` (an engine whose batch is capped)
the cameras are served round robin: each call starts after the camera
served last, so every camera with a waiting frame is served within
ceil(cameras / limit) calls, whatever the others send.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["CameraCounters", "Frame", "LatestFrameSlots", "SlotItem"]


class SlotItem(Protocol):
    """What a slot holds: anything with a camera, a stamp and a receive time."""

    @property
    def camera(self) -> str: ...

    @property
    def stamp_ns(self) -> int: ...

    @property
    def receive_ns(self) -> int: ...


T = TypeVar("T", bound=SlotItem)


@dataclass(frozen=True)
class Frame:
    """One received image and its timing.

    `image` is whatever the caller decoded (usually an HxWxC uint8 array);
    `stamp_ns` is the capture stamp from the header, `receive_ns` the local
    clock (same clock as `now_ns` given to `take_fresh`) at arrival.
    """

    camera: str
    image: Any
    stamp_ns: int
    receive_ns: int
    frame_id: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class CameraCounters:
    """Per-camera frame accounting (all monotonic)."""

    received: int = 0
    processed: int = 0
    skipped: int = 0  # replaced by a newer frame before the loop took it
    stale: int = 0  # older than max_age when the loop took it
    rejected: int = 0  # bad input (encoding, size, corrupt data ...)
    stamp_resets: int = 0  # stamp went backwards (simulator reset, bag loop)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class LatestFrameSlots(Generic[T]):
    """Thread-safe single-slot buffer per camera (of `Frame`s or any `SlotItem`)."""

    def __init__(self, cameras: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._slots: dict[str, T | None] = {c: None for c in cameras}
        self._last_stamp: dict[str, int] = {}
        self._next = 0  # round-robin start of a limited take_fresh
        self.counters: dict[str, CameraCounters] = {c: CameraCounters() for c in self._slots}

    @property
    def cameras(self) -> list[str]:
        return list(self._slots)

    def put(self, frame: T) -> bool:
        """Store `frame` as its camera's newest; returns True if the stamp went
        backwards (the caller should reset per-camera state such as trackers)."""
        with self._lock:
            if frame.camera not in self._slots:
                raise KeyError(f"unknown camera {frame.camera!r}; known: {list(self._slots)}")
            c = self.counters[frame.camera]
            c.received += 1
            if self._slots[frame.camera] is not None:
                c.skipped += 1
            last = self._last_stamp.get(frame.camera)
            went_back = last is not None and frame.stamp_ns < last
            if went_back:
                c.stamp_resets += 1
            self._last_stamp[frame.camera] = frame.stamp_ns
            self._slots[frame.camera] = frame
            self._ready.notify_all()
            return went_back

    def count_skipped(self, camera: str, n: int) -> None:
        """Count `n` frames of `camera` replaced before they reached its slot
        (e.g. overwritten in the middleware's keep-last queue): received and
        skipped, as if they had been put and replaced."""
        if n <= 0:
            return
        with self._lock:
            c = self.counters[camera]
            c.received += n
            c.skipped += n

    def reject(self, camera: str) -> None:
        """Count a frame of `camera` that could not be decoded."""
        with self._lock:
            self.counters[camera].rejected += 1

    def wait(self, timeout_s: float) -> bool:
        """Block until some slot holds a frame or the timeout passes."""
        with self._lock:
            if any(f is not None for f in self._slots.values()):
                return True
            return self._ready.wait_for(
                lambda: any(f is not None for f in self._slots.values()), timeout=timeout_s
            )

    def take_fresh(self, now_ns: int, max_age_ns: int | None, limit: int | None = None) -> list[T]:
        """Empty the slots; return the frames not older than `max_age_ns`.

        Age is measured on the receive clock (`now_ns - receive_ns`), which is
        robust to camera clocks that disagree with ours; stamps are kept for
        output headers. Without `limit` every slot is emptied (one frame per
        camera); with it at most `limit` fresh frames are taken, cameras in
        round-robin order from the one after the camera served last, and the
        others keep their frames for the next call (stale ones met on the way
        are emptied and counted, not served).
        """
        if limit is not None and limit < 1:
            raise ValueError(f"limit: expected >= 1 or None, got {limit}")
        with self._lock:
            out: list[T] = []
            names = list(self._slots)
            n = len(names)
            first = self._next % n if limit is not None and n else 0
            for i in range(n):
                if limit is not None and len(out) >= limit:
                    break
                idx = (first + i) % n
                cam = names[idx]
                frame = self._slots[cam]
                if frame is None:
                    continue
                self._slots[cam] = None
                if max_age_ns is not None and now_ns - frame.receive_ns > max_age_ns:
                    self.counters[cam].stale += 1
                    continue
                self.counters[cam].processed += 1
                out.append(frame)
                self._next = idx + 1
            return out

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {c: v.as_dict() for c, v in self.counters.items()}
