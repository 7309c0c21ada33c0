"""Stamp matching of image / depth / cloud streams: matched, unmatched, bounded."""

from __future__ import annotations

import logging

import pytest

from perception.core.fusion.errors import FusionInputError
from perception.core.fusion.sync import StampSynchronizer

MS = 1_000_000


def _sync(**kw) -> StampSynchronizer:
    return StampSynchronizer(("image", "depth", "cloud"), tolerance_s=0.02, **kw)


def test_matches_within_tolerance_with_jitter_and_different_rates() -> None:
    sync = _sync()
    out = []
    # camera 30 Hz, depth 30 Hz with 5 ms offset, LiDAR 10 Hz with 3 ms offset
    events = []
    for k in range(30):
        t = 1_000 * MS + k * 33 * MS
        events.append((t, "image", t))
        events.append((t + 5 * MS, "depth", t + 5 * MS))
    for k in range(10):
        t = 1_000 * MS + k * 99 * MS + 3 * MS
        events.append((t, "cloud", t))
    for _, name, stamp in sorted(events):
        out.extend(sync.push(name, stamp, f"{name}@{stamp}"))
    # every image with a cloud within 20 ms is matched; the rest are not
    assert len(out) == 10
    for s in out:
        assert abs(s.stamps["depth"] - s.stamp_ns) <= 20 * MS
        assert abs(s.stamps["cloud"] - s.stamp_ns) <= 20 * MS
        assert s["image"] == f"image@{s.stamp_ns}"
    st = sync.stats()
    assert st["image"].matched == 10 and st["cloud"].matched == 10
    assert st["image"].unmatched >= 18  # images between clouds: counted, not guessed
    assert st["depth"].unmatched >= 18


def test_unsynchronised_stream_is_never_paired() -> None:
    sync = _sync()
    out = []
    for k in range(20):
        t = k * 100 * MS
        out += sync.push("image", t, k)
        out += sync.push("depth", t + 2 * MS, k)
        out += sync.push("cloud", t + 50 * MS, k)  # 50 ms off: beyond the 20 ms tolerance
    assert out == []
    st = sync.stats()
    assert st["image"].unmatched >= 19 and st["cloud"].unmatched >= 19
    assert st["image"].matched == 0


def test_closest_candidate_is_chosen() -> None:
    sync = _sync()
    sync.push("image", 100 * MS, "img")
    sync.push("depth", 85 * MS, "far")
    sync.push("depth", 98 * MS, "near")
    sync.push("cloud", 101 * MS, "cloud")
    out = sync.push("depth", 130 * MS, "later")  # depth has now passed the image stamp
    assert len(out) == 1 and out[0]["depth"] == "near" and out[0]["cloud"] == "cloud"
    assert sync.stats()["depth"].unmatched == 1  # "far" was dropped and counted


def test_bounded_queues_when_a_stream_stops() -> None:
    sync = _sync(queue_size=5)
    for k in range(50):
        sync.push("image", k * 33 * MS, k)
        sync.push("depth", k * 33 * MS, k)
    assert max(sync.pending().values()) <= 5
    assert sync.stats()["image"].overflow >= 45


def test_out_of_order_and_clock_reset(caplog) -> None:
    sync = _sync(reset_after_s=1.0)
    sync.push("image", 5_000 * MS, 0)
    assert sync.push("image", 4_990 * MS, 1) == []
    assert sync.push("image", 5_000 * MS, 2) == []  # duplicate
    assert sync.stats()["image"].out_of_order == 2
    with caplog.at_level(logging.WARNING):
        sync.push("image", 10 * MS, 3)  # simulator restart
    assert sync.resets == 1 and "clock reset" in caplog.text
    assert sync.pending()["image"] == 1
    sync.push("depth", 10 * MS, 3)
    out = sync.push("cloud", 12 * MS, 3)
    assert len(out) == 1 and out[0].stamp_ns == 10 * MS


def test_bad_arguments() -> None:
    with pytest.raises(FusionInputError, match="two distinct"):
        StampSynchronizer(("image",), 0.01)
    with pytest.raises(FusionInputError, match="tolerance_s"):
        StampSynchronizer(("a", "b"), -1.0)
    with pytest.raises(FusionInputError, match="reference"):
        StampSynchronizer(("a", "b"), 0.01, reference="c")
    sync = StampSynchronizer(("a", "b"), 0.01)
    with pytest.raises(FusionInputError, match="stream"):
        sync.push("c", 0, None)
    with pytest.raises(FusionInputError, match="stamp_ns"):
        sync.push("a", 1.5, None)
