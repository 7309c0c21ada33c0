"""StampSynchronizer additions for consumers that must use what is dropped
(`on_drop`) or cannot wait for a set (`take`); the matching itself is
covered by test_fusion_sync.py."""

from __future__ import annotations

from typing import Any

from perception.core.fusion.sync import StampSynchronizer

MS = 1_000_000


def _sync(drops: list[tuple[str, int, Any, str]], **kw: Any) -> StampSynchronizer:
    return StampSynchronizer(
        ("image", "tracks"), tolerance_s=0.0, queue_size=3,
        on_drop=lambda *a: drops.append(a), **kw,
    )  # fmt: skip


def test_on_drop_sees_every_message_dropped_without_a_match_with_its_reason() -> None:
    drops: list[tuple[str, int, Any, str]] = []
    sync = _sync(drops)
    for k in range(5):  # images nobody answers: the queue keeps 3
        assert sync.push("image", 1000 * MS + k * MS, f"i{k}") == []
    assert drops == [("image", 1000 * MS, "i0", "overflow"), ("image", 1001 * MS, "i1", "overflow")]
    drops.clear()
    # tracks of the newest image: the two older ones can no longer match
    (s,) = sync.push("tracks", 1004 * MS, "t4")
    assert s["image"] == "i4" and s["tracks"] == "t4"
    assert [(d[2], d[3]) for d in drops] == [("i2", "unmatched"), ("i3", "unmatched")]
    drops.clear()
    assert sync.push("tracks", 1004 * MS, "dup") == []  # a duplicate stamp
    assert drops == [("tracks", 1004 * MS, "dup", "out_of_order")]
    drops.clear()
    sync.push("image", 1010 * MS, "i10")
    sync.reset()
    assert drops == [("image", 1010 * MS, "i10", "reset")]
    st = sync.stats()
    assert st["image"].overflow == 2 and st["image"].unmatched == 3
    assert st["tracks"].out_of_order == 1


def test_without_on_drop_nothing_changes() -> None:
    sync = StampSynchronizer(("image", "tracks"), tolerance_s=0.0, queue_size=2)
    for k in range(4):
        sync.push("image", k * MS + MS, k)
    assert sync.stats()["image"].overflow == 2 and sync.pending() == {"image": 2, "tracks": 0}


def test_take_removes_the_closest_message_within_the_tolerance() -> None:
    drops: list[tuple[str, int, Any, str]] = []
    sync = StampSynchronizer(
        ("frame", "objects"), tolerance_s=0.005, queue_size=5, on_drop=lambda *a: drops.append(a)
    )
    for t in (100, 110, 120):
        sync.push("objects", t * MS, f"o{t}")
    assert sync.take("objects", 50 * MS) is None
    assert sync.take("objects", 112 * MS) == (110 * MS, "o110")
    assert sync.take("objects", 112 * MS) is None, "taken once; 100 and 120 are too far"
    assert sync.pending()["objects"] == 2 and sync.stats()["objects"].matched == 1
    assert drops == []
