"""Latest-frame slots (freshness accounting) and rolling latency statistics."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from perception.core.frames import Frame, LatestFrameSlots
from perception.core.stats import LatencyStats, RateMeter

MS = 1_000_000


def frame(cam: str, stamp_ms: int, recv_ms: int) -> Frame:
    return Frame(cam, image=None, stamp_ns=stamp_ms * MS, receive_ns=recv_ms * MS, frame_id=cam)


def test_only_newest_frame_per_camera_and_counters():
    slots = LatestFrameSlots(["front", "left"])
    for i in range(5):
        slots.put(frame("front", i, i))
    slots.put(frame("left", 3, 3))
    got = slots.take_fresh(now_ns=10 * MS, max_age_ns=100 * MS)
    assert sorted((f.camera, f.stamp_ns // MS) for f in got) == [("front", 4), ("left", 3)]
    c = slots.snapshot()
    assert c["front"] == {
        "received": 5,
        "processed": 1,
        "skipped": 4,
        "stale": 0,
        "rejected": 0,
        "stamp_resets": 0,
    }
    assert slots.take_fresh(now_ns=10 * MS, max_age_ns=None) == []


def test_stale_frames_are_dropped_and_counted():
    slots = LatestFrameSlots(["front", "left"])
    slots.put(frame("front", 0, 0))
    slots.put(frame("left", 95, 95))
    got = slots.take_fresh(now_ns=150 * MS, max_age_ns=100 * MS)
    assert [f.camera for f in got] == ["left"]
    assert slots.snapshot()["front"]["stale"] == 1


def test_stamp_going_backwards_is_reported():
    slots = LatestFrameSlots(["front"])
    assert slots.put(frame("front", 100, 1)) is False
    assert slots.put(frame("front", 50, 2)) is True
    assert slots.snapshot()["front"]["stamp_resets"] == 1
    with pytest.raises(KeyError, match="unknown camera 'rear'"):
        slots.put(frame("rear", 1, 1))
    slots.reject("front")
    assert slots.snapshot()["front"]["rejected"] == 1


def test_wait_wakes_on_put_from_another_thread():
    slots = LatestFrameSlots(["front"])
    assert slots.wait(0.0) is False
    t = threading.Thread(target=slots.put, args=(frame("front", 1, 1),))
    t.start()
    assert slots.wait(10.0) is True
    t.join()


def test_latency_percentiles_bounded_window():
    stats = LatencyStats(["inference"], window=100)
    for v in range(1000):
        stats.add("inference", float(v))
    p = stats.percentiles((50, 95))["inference"]
    assert p["p50"] == pytest.approx(np.percentile(np.arange(900, 1000), 50))
    assert p["max"] == 999 and p["n"] == 1000
    stats.add("publish", 1.0)
    assert "publish" in stats.percentiles()
    with pytest.raises(ValueError, match="window"):
        LatencyStats([], window=0)


def test_rate_meter():
    r = RateMeter(window=10)
    assert r.rate_hz() == 0.0
    for i in range(30):
        r.tick(i * 100 * MS)  # 10 Hz
    assert r.rate_hz() == pytest.approx(10.0)
