"""Core Detections type: validation, indexing, concatenation (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from perception.core.types import UNTRACKED, Detections


def make(n: int = 3, **meta) -> Detections:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 500, (n, 2))
    wh = rng.uniform(1, 100, (n, 2))
    return Detections.from_arrays(
        np.hstack([xy, xy + wh]),
        rng.uniform(0, 1, n),
        rng.integers(0, 80, n),
        np.arange(n) if meta.pop("tracked", False) else None,
        stamp_ns=meta.pop("stamp_ns", 1_700_000_000_123_456_789),
        frame_id=meta.pop("frame_id", "cam_front_optical"),
        image_size=meta.pop("image_size", (1920, 1080)),
    )


def test_from_arrays_canonical_dtypes_and_untracked_default():
    d = make(4)
    assert d.xyxy.dtype == np.float32 and d.xyxy.shape == (4, 4)
    assert d.scores.dtype == np.float32
    assert d.class_ids.dtype == np.int32
    assert d.track_ids.dtype == np.int64
    assert (d.track_ids == UNTRACKED).all() and not d.is_tracked.any()
    assert len(d) == 4


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"xyxy": np.zeros((2, 4), np.float64)}, TypeError, "expected dtype float32, got float64"),
        ({"xyxy": np.zeros((2, 5), np.float32)}, ValueError, "expected shape ('N', 4), got (2, 5)"),
        ({"xyxy": [[0, 0, 1, 1], [0, 0, 1, 1]]}, TypeError, "expected numpy.ndarray, got list"),
        (
            {"scores": np.zeros(3, np.float32)},
            ValueError,
            "scores: expected 2 rows (as xyxy), got 3",
        ),
        ({"class_ids": np.zeros(2, np.int64)}, TypeError, "expected dtype int32, got int64"),
        (
            {"track_ids": np.zeros((2, 1), np.int64)},
            ValueError,
            "expected shape ('N',), got (2, 1)",
        ),
        ({"stamp_ns": 1.5}, TypeError, "stamp_ns: expected int, got float"),
        ({"frame_id": None}, TypeError, "frame_id: expected str, got NoneType"),
        ({"image_size": (640,)}, ValueError, "expected (width, height)"),
        ({"image_size": (-1, 480)}, ValueError, "non-negative"),
    ],
)
def test_validation_names_expected_and_actual(kwargs, exc, message):
    fields = {
        "xyxy": np.zeros((2, 4), np.float32),
        "scores": np.zeros(2, np.float32),
        "class_ids": np.zeros(2, np.int32),
        "track_ids": np.full(2, -1, np.int64),
    }
    fields.update(kwargs)
    with pytest.raises(exc) as info:
        Detections(**fields)
    assert message in str(info.value)


def test_empty_keeps_metadata():
    e = Detections.empty(stamp_ns=5, frame_id="cam", image_size=(640, 480))
    assert len(e) == 0 and e.xyxy.shape == (0, 4)
    assert (e.stamp_ns, e.frame_id, e.image_size) == (5, "cam", (640, 480))
    assert Detections.from_arrays([], [], []).xyxy.shape == (0, 4)


def test_boolean_mask_index_array_slice_and_int():
    d = make(5, tracked=True)
    keep = d.scores > np.median(d.scores)
    sub = d[keep]
    assert len(sub) == int(keep.sum())
    np.testing.assert_array_equal(sub.track_ids, d.track_ids[keep])
    assert (sub.stamp_ns, sub.frame_id, sub.image_size) == (d.stamp_ns, d.frame_id, d.image_size)
    np.testing.assert_array_equal(d[[4, 0]].xyxy, d.xyxy[[4, 0]])
    assert len(d[1:3]) == 2
    assert len(d[-1]) == 1 and d[-1].track_ids[0] == 4
    with pytest.raises(IndexError, match="expected shape \\(5,\\), got \\(4,\\)"):
        d[np.ones(4, bool)]
    with pytest.raises(IndexError):
        d[5]


def test_concatenate_same_image_and_rejects_mixed_images():
    d = make(3)
    both = Detections.concatenate([d[:1], d[1:]])
    assert both.equals(d)
    other = make(2, frame_id="cam_left")
    with pytest.raises(ValueError, match="different images"):
        Detections.concatenate([d, other])
    with pytest.raises(ValueError, match="at least one"):
        Detections.concatenate([])


def test_frozen_and_derived_views():
    d = make(2, tracked=True)
    with pytest.raises(AttributeError):
        d.frame_id = "x"  # type: ignore[misc]
    xywh = d.xywh
    np.testing.assert_allclose(xywh[:, 2:], d.xyxy[:, 2:] - d.xyxy[:, :2])
    np.testing.assert_allclose(d.centers, (d.xyxy[:, :2] + d.xyxy[:, 2:]) / 2)
    assert (d.areas > 0).all()
    retracked = d.with_track_ids([7, 9])
    assert retracked.track_ids.tolist() == [7, 9] and d.track_ids.tolist() == [0, 1]


def test_finite_mask_flags_nan_and_inf():
    d = Detections.from_arrays(
        [[0, 0, 1, 1], [np.nan, 0, 1, 1], [0, 0, np.inf, 1]], [0.5, 0.5, 0.5], [0, 0, 0]
    )
    assert d.finite_mask().tolist() == [True, False, False]
