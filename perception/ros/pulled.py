"""Subscriptions the worker thread reads itself, newest sample only.

Why: with rclpy's executor every received camera message costs a wake-up, a
wait-set rebuild, a take and a Python callback, about 1 ms of CPU per 640x360
message measured here (bench/bench_callback.py --executor-load), also for
the frames the engine will never use. Left in the middleware, a message
costs about 0.17 ms: the DDS reader's keep-last queue (the camera's
`qos.depth`, 1 by default) replaces it when a newer one arrives. So camera
subscriptions join a `PulledGroup`, which no executor runs, and the worker
takes from them (`PulledSubscriptions.take`) when it is ready for a batch:
only frames that will be processed are ever taken.

The subscriptions' QoS event handlers (incompatible QoS ...) are pulled too
and dispatched by `PulledSubscriptions.wait`: rmw_fastrtps reports a
reader's events ready whenever it holds unread data, so left to the
executor they would make it spin at full speed while a frame waits in the
queue (measured: a whole core).

Messages replaced in the middleware's queue are not lost silently: the gap
in the publisher's sequence numbers (`SequenceGaps`, where rmw reports them,
as rmw_fastrtps does) says how many were skipped.

Where an executor ignores callback groups and runs the callbacks anyway, the
takes here simply find nothing, and the callbacks deliver the frames.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from rclpy.callback_groups import CallbackGroup

__all__ = ["PulledGroup", "PulledSubscriptions", "SequenceGaps"]

POLL_S = 0.002
"""Sleep between polls where rclpy's wait set cannot be used."""


class PulledGroup(CallbackGroup):
    """A callback group whose `pull`ed entities no executor runs (see module
    doc); the others run reentrant, as in rclpy's ReentrantCallbackGroup."""

    def __init__(self) -> None:
        super().__init__()
        self._pulled: weakref.WeakSet[Any] = weakref.WeakSet()

    def pull(self, subscription: Any) -> bool:
        """From now on `subscription` and its QoS event handlers are read by
        their owner (`PulledSubscriptions`), never by an executor. False (and
        nothing pulled) where this rclpy does not expose what that needs."""
        handlers = list(getattr(subscription, "event_handlers", None) or [])
        needed = ("is_ready", "take_data", "add_to_wait_set", "callback", "__enter__")
        if not all(hasattr(h, a) for h in handlers for a in needed):
            return False
        for entity in (subscription, *handlers):
            self._pulled.add(entity)
        return True

    def can_execute(self, entity: Any) -> bool:
        return entity not in self._pulled

    def beginning_execution(self, entity: Any) -> bool:
        return entity not in self._pulled

    def ending_execution(self, entity: Any) -> None:
        pass


class PulledSubscriptions:
    """Takes from and waits on pulled subscriptions (worker thread only)."""

    def __init__(
        self,
        subscriptions: Sequence[Any],
        context: Any,
        on_error: Callable[[str], object] | None = None,
    ) -> None:
        self.subs = list(subscriptions)
        self.handlers = [h for s in self.subs for h in getattr(s, "event_handlers", None) or []]
        self._on_error = on_error
        self._wait_set: Any = None
        try:  # the wait set rclpy.wait_for_message uses (Humble .. Kilted)
            from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

            self._wait_set = _rclpy.WaitSet(
                len(self.subs), 0, 0, 0, 0, len(self.handlers), context.handle
            )
        except Exception as exc:  # another rclpy: poll instead (events are not seen)
            self._report(f"no rclpy wait set ({type(exc).__name__}: {exc}); polling")

    def _report(self, message: str) -> None:
        if self._on_error is not None:
            self._on_error(message)

    @staticmethod
    def take(sub: Any) -> tuple[Any, dict[str, Any]] | None:
        """The oldest sample in `sub`'s queue and its message info, or None."""
        with sub.handle:
            got = sub.handle.take_message(sub.msg_type, sub.raw)
        if got is None:
            return None
        return got[0], got[1] if isinstance(got[1], dict) else {}

    def wait(self, timeout_s: float) -> None:
        """Block until a subscription has data or an event is ready, or
        `timeout_s` passes (0: just look), GIL released; then run the event
        callbacks that have an event (on this thread)."""
        if self._wait_set is None or not self.subs:
            time.sleep(min(POLL_S, timeout_s))
            return
        ws = self._wait_set
        with ExitStack() as held:  # nothing is destroyed while waited on
            ws.clear_entities()
            for sub in self.subs:
                held.enter_context(sub.handle)
                ws.add_subscription(sub.handle)
            for h in self.handlers:
                held.enter_context(h)
                h.add_to_wait_set(ws)
            ws.wait(int(max(timeout_s, 0.0) * 1e9))
            ready = [h for h in self.handlers if h.is_ready(ws)]
        for h in ready:
            try:
                data = h.take_data()
                if data:
                    h.callback(data)
            except Exception as exc:  # a QoS event must not stop the worker
                self._report(f"QoS event callback failed: {type(exc).__name__}: {exc}")


class SequenceGaps:
    """Messages a reader never saw, from gaps in each publisher's sequence numbers.

    rmw fills `publication_sequence_number` and `publisher_gid` in the
    message info (rmw_fastrtps does; where either is missing nothing is
    counted). At most `max_publishers` publishers are tracked per reader."""

    def __init__(self, max_publishers: int = 16) -> None:
        self.max_publishers = max_publishers
        self._last: OrderedDict[bytes, int] = OrderedDict()

    def missed(self, info: dict[str, Any]) -> int:
        """How many of this sample's publisher's messages came between it and
        the last one taken (0 for the first, a restart, or unknown)."""
        seq = info.get("publication_sequence_number")
        gid = info.get("publisher_gid")
        key = gid.get("data") if isinstance(gid, dict) else None
        if not isinstance(seq, int) or not isinstance(key, bytes | bytearray):
            return 0
        key = bytes(key)
        last = self._last.pop(key, None)
        self._last[key] = seq
        while len(self._last) > self.max_publishers:
            self._last.popitem(last=False)
        if last is None or seq <= last:
            return 0
        return min(seq - last - 1, 1_000_000)
