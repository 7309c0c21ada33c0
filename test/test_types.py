"""Core Detections type: validation, indexing, concatenation (no ROS)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from perception.core.types import UNTRACKED, Detections, InstanceMasks


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


# ------------------------------------------------------------ optional fields
def _with_optional(n: int = 4, size: tuple[int, int] = (64, 48)) -> Detections:
    rng = np.random.default_rng(7)
    dense = np.zeros((n, size[1], size[0]), bool)
    for i in range(n):
        dense[i, 2 * i : 2 * i + 10, 3 * i : 3 * i + 12] = rng.random((10, 12)) > 0.3
    masks = InstanceMasks.from_dense(dense)
    xyxy = masks.boxes.astype(np.float32)
    return Detections.from_arrays(
        xyxy,
        np.linspace(0.9, 0.5, n),
        np.arange(n),
        image_size=size,
        masks=masks,
        keypoints=rng.uniform(0, 40, (n, 5, 3)),
        obb=np.c_[(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2], np.full(n, 0.3)],
    )


def test_optional_fields_default_none_and_rows_stay_aligned():
    plain = make(3)
    assert plain.masks is None and plain.keypoints is None and plain.obb is None
    d = _with_optional(4)
    assert d.keypoints is not None and d.keypoints.dtype == np.float32
    assert d.obb is not None and d.obb.dtype == np.float32
    assert "masks" in repr(d) and "keypoints=5" in repr(d)
    for index in ([3, 1], np.array([True, False, True, False]), slice(1, 3), -1):
        sub = d[index]
        rows = np.arange(4)[index if not isinstance(index, int) else slice(index, None)]
        assert sub.masks is not None and sub.keypoints is not None and sub.obb is not None
        assert len(sub.masks) == len(sub) == len(rows)
        np.testing.assert_array_equal(sub.keypoints, d.keypoints[rows])
        np.testing.assert_array_equal(sub.obb, d.obb[rows])
        for j, r in enumerate(rows):
            np.testing.assert_array_equal(sub.masks.full(j), d.masks.full(int(r)))
    tracked = d.with_track_ids([5, 6, 7, 8])
    assert tracked.masks is d.masks and tracked.keypoints is d.keypoints
    again = Detections.concatenate([d[:1], Detections.empty(image_size=d.image_size), d[1:]])
    assert again.equals(d)
    assert not again.equals(replace(d, obb=None))


def test_concatenate_refuses_parts_with_and_without_a_field():
    d = _with_optional(3)
    with pytest.raises(ValueError, match="every part to have masks or none"):
        Detections.concatenate([d, replace(d, masks=None)])
    with pytest.raises(ValueError, match="same keypoint count"):
        Detections.concatenate([d, replace(d, keypoints=d.keypoints[:, :2])])


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"keypoints": np.zeros((2, 5, 3), np.float64)}, TypeError, "keypoints: expected dtype"),
        ({"keypoints": np.zeros((2, 5, 2), np.float32)}, ValueError, "keypoints: expected shape"),
        ({"keypoints": np.zeros((3, 5, 3), np.float32)}, ValueError, "expected 2 rows"),
        ({"keypoints": np.zeros((2, 0, 3), np.float32)}, ValueError, "keypoints: expected shape"),
        ({"obb": np.zeros((2, 4), np.float32)}, ValueError, "obb: expected shape ('N', 5)"),
        ({"masks": np.zeros((2, 4, 4), bool)}, TypeError, "expected InstanceMasks or None"),
        ({"masks": InstanceMasks.empty((8, 8))}, ValueError, "expected 2 masks"),
    ],
)
def test_optional_fields_validated(kwargs, exc, message):
    fields = {
        "xyxy": np.zeros((2, 4), np.float32),
        "scores": np.zeros(2, np.float32),
        "class_ids": np.zeros(2, np.int32),
        "track_ids": np.full(2, -1, np.int64),
        "image_size": (8, 8),
    }
    fields.update(kwargs)
    with pytest.raises(exc) as info:
        Detections(**fields)
    assert message in str(info.value)


def test_masks_image_size_must_match():
    masks = InstanceMasks.from_dense(np.ones((1, 4, 4), bool))
    with pytest.raises(ValueError, match="expected image_size \\(8, 8\\)"):
        Detections.from_arrays([[0, 0, 4, 4]], [1], [0], image_size=(8, 8), masks=masks)
    unknown = Detections.from_arrays([[0, 0, 4, 4]], [1], [0], masks=masks)
    assert unknown.masks is masks


def test_instance_masks_validation():
    ok_box = np.array([[1, 2, 4, 6]], np.int32)
    InstanceMasks(ok_box, (np.zeros((4, 3), bool),), (10, 10))
    with pytest.raises(ValueError, match="expected shape \\(4, 3\\) \\(its box\\)"):
        InstanceMasks(ok_box, (np.zeros((3, 4), bool),), (10, 10))
    with pytest.raises(TypeError, match="crops\\[0\\]: expected a bool array, got uint8"):
        InstanceMasks(ok_box, (np.zeros((4, 3), np.uint8),), (10, 10))
    with pytest.raises(ValueError, match="boxes\\[0\\]: expected 0 <= x0 <= x1 <= 3"):
        InstanceMasks(ok_box, (np.zeros((4, 3), bool),), (3, 10))
    with pytest.raises(TypeError, match="boxes: expected dtype int32"):
        InstanceMasks(ok_box.astype(np.int64), (np.zeros((4, 3), bool),), (10, 10))
    with pytest.raises(ValueError, match="expected 1 crops"):
        InstanceMasks(ok_box, (), (10, 10))


def test_instance_masks_dense_round_trip_coords_and_areas():
    rng = np.random.default_rng(1)
    dense = rng.random((3, 20, 30)) > 0.8
    dense[2] = False  # empty mask: 0x0 box
    m = InstanceMasks.from_dense(dense)
    assert m.image_size == (30, 20)
    np.testing.assert_array_equal(m.to_dense(), dense)
    assert m.areas.tolist() == dense.sum(axis=(1, 2)).tolist()
    xs, ys = m.pixel_coords(0)
    assert dense[0, ys, xs].all() and xs.size == dense[0].sum()
    assert m.boxes[2].tolist() == [0, 0, 0, 0]
    boxed = InstanceMasks.from_dense(dense, boxes=[[0, 0, 30, 20]] * 3)
    assert boxed.equals(InstanceMasks(boxed.boxes, boxed.crops, (30, 20)))
    np.testing.assert_array_equal(boxed.to_dense(), dense)


def test_id_image_earlier_rows_win_and_ids_checked():
    dense = np.zeros((2, 6, 8), bool)
    dense[0, 1:4, 1:5] = True
    dense[1, 2:6, 3:8] = True  # overlaps instance 0
    m = InstanceMasks.from_dense(dense)
    img = m.to_id_image()
    assert img.dtype == np.uint16 and img.shape == (6, 8)
    assert img[2, 3] == 1 and img[5, 7] == 2 and img[0, 0] == 0
    tracked = m.to_id_image(np.array([700, 65535]))
    assert tracked[2, 3] == 700 and tracked[5, 7] == 65535
    with pytest.raises(ValueError, match=r"ids in 1\.\.65535"):
        m.to_id_image([0, 1])
    with pytest.raises(ValueError, match=r"ids in 1\.\.65535"):
        m.to_id_image([1, 70000])
    with pytest.raises(ValueError, match="expected 2 ids"):
        m.to_id_image([1])
    assert InstanceMasks.empty((8, 6)).to_id_image().shape == (6, 8)
