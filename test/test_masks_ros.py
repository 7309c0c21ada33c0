"""Masks, keypoints and oriented boxes in standard messages: the mono16
instance-id image, the organised keypoints PointCloud2, BoundingBox2D
center.theta, and back (what the fusion and overlay nodes read)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from perception.core.images import ImageDecodeError
from perception.core.types import Detections, InstanceMasks
from perception.ros.conversions import (
    detections_to_msg,
    msg_to_detections,
    msg_to_detections_rows,
    ns_to_stamp,
)
from perception.ros.masks import (
    cloud_to_keypoints,
    id_image_from_msg,
    keypoints_to_cloud,
    masks_from_id_image,
    masks_to_image_msg,
)

W, H = 64, 48


def seg_det(n: int = 3, seed: int = 0) -> Detections:
    rng = np.random.default_rng(seed)
    dense = np.zeros((n, H, W), bool)
    boxes = []
    for i in range(n):
        x0, y0 = rng.integers(0, W - 20), rng.integers(0, H - 20)
        dense[i, y0 : y0 + 15, x0 : x0 + 12] = rng.random((15, 12)) > 0.3
        boxes.append([x0, y0, x0 + 12, y0 + 15])
    return Detections.from_arrays(
        boxes, np.linspace(0.9, 0.5, n), np.arange(n), stamp_ns=1_500_000_123, frame_id="cam",
        image_size=(W, H), masks=InstanceMasks.from_dense(dense),
    )  # fmt: skip


def header() -> Header:
    return Header(stamp=ns_to_stamp(1_500_000_123), frame_id="cam")


def test_id_image_round_trip_for_non_overlapping_masks() -> None:
    dense = np.zeros((3, H, W), bool)
    dense[0, 2:10, 3:9] = True
    dense[1, 20:30, 40:50] = True
    dense[2, 35:40, 5:25] = True
    dense[2, 36, 6] = False
    masks = InstanceMasks.from_dense(dense)
    det = Detections.from_arrays(
        [[0, 0, 10, 10]] * 3, [0.9, 0.8, 0.7], [0, 1, 2], image_size=(W, H), masks=masks
    )
    msg = masks_to_image_msg(det, header())
    assert msg is not None
    assert (msg.encoding, msg.width, msg.height, msg.step) == ("mono16", W, H, 2 * W)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 500_000_123
    ids = id_image_from_msg(msg)
    assert ids.dtype == np.uint16 and ids.max() == 3
    back = masks_from_id_image(ids)
    assert back.equals(InstanceMasks.from_dense(dense))
    # a subset of rows (what a consumer kept), in its order; a row without pixels
    sub = masks_from_id_image(ids, np.array([2, 0, 7]))
    assert np.array_equal(sub.full(0), dense[2]) and np.array_equal(sub.full(1), dense[0])
    assert sub.areas[2] == 0


def test_overlaps_go_to_the_earlier_row() -> None:
    det = seg_det(5, seed=3)
    msg = masks_to_image_msg(det, header())
    assert msg is not None
    ids = id_image_from_msg(msg)
    assert det.masks is not None
    assert np.array_equal(ids, det.masks.to_id_image())
    back = masks_from_id_image(ids)
    assert np.array_equal(back.full(0), det.masks.full(0))  # the first row is complete


def test_box_only_detections_have_no_mask_or_keypoint_message() -> None:
    det = Detections.from_arrays([[1, 2, 3, 4]], [0.5], [0])
    assert masks_to_image_msg(det, header()) is None
    assert keypoints_to_cloud(det, header()) is None


def test_id_image_refuses_other_encodings() -> None:
    det = seg_det()
    msg = masks_to_image_msg(det, header())
    assert msg is not None
    msg.encoding = "bgr8"
    with pytest.raises(ImageDecodeError) as err:
        id_image_from_msg(msg)
    assert err.value.kind == "encoding"
    msg.encoding = "mono16"
    msg.data = bytes(msg.data)[:10]
    with pytest.raises(ImageDecodeError):
        id_image_from_msg(msg)


def test_keypoints_cloud_round_trip() -> None:
    rng = np.random.default_rng(1)
    kps = rng.uniform(0, 60, (4, 17, 3)).astype(np.float32)
    kps[..., 2] = rng.random((4, 17))
    kps[2, 5, :2] = np.nan
    det = Detections.from_arrays([[0, 0, 5, 5]] * 4, [0.5] * 4, [0] * 4, keypoints=kps)
    msg = keypoints_to_cloud(det, header())
    assert isinstance(msg, PointCloud2)
    assert (msg.height, msg.width, msg.point_step) == (4, 17, 12) and not msg.is_dense
    assert [f.name for f in msg.fields] == ["x", "y", "confidence"]
    np.testing.assert_array_equal(cloud_to_keypoints(msg), kps)
    empty = keypoints_to_cloud(det[np.zeros(4, bool)], header())
    assert empty is not None and cloud_to_keypoints(empty).shape == (0, 17, 3)
    # what a consumer with the standard helper reads (where sensor_msgs_py is installed)
    pc2 = pytest.importorskip("sensor_msgs_py.point_cloud2")
    pts = pc2.read_points_numpy(msg, field_names=("x", "y", "confidence"), skip_nans=False)
    np.testing.assert_array_equal(pts.reshape(4, 17, 3), kps)


def test_keypoints_cloud_refuses_bad_layouts() -> None:
    det = Detections.from_arrays([[0, 0, 5, 5]], [0.5], [0], keypoints=np.zeros((1, 5, 3)))
    msg = keypoints_to_cloud(det, header())
    assert msg is not None
    msg.data = bytes(msg.data)[:-4]
    with pytest.raises(ValueError, match="bytes"):
        cloud_to_keypoints(msg)
    msg = keypoints_to_cloud(det, header())
    assert msg is not None
    msg.fields = msg.fields[:2]
    with pytest.raises(ValueError, match="missing"):
        cloud_to_keypoints(msg)


def test_oriented_boxes_travel_in_bbox_theta() -> None:
    obb = np.array([[30.0, 20.0, 20.0, 6.0, 0.5], [10.0, 10.0, 4.0, 4.0, 0.0]], np.float32)
    hull = [[19.5, 12.0, 40.5, 28.0], [8.0, 8.0, 12.0, 12.0]]
    det = Detections.from_arrays(hull, [0.9, 0.8], [0, 1], [4, -1], stamp_ns=7, obb=obb)
    msg = detections_to_msg(det)
    b = msg.detections[0].bbox
    assert (b.center.position.x, b.center.position.y, b.size_x, b.size_y) == (30, 20, 20, 6)
    assert b.center.theta == pytest.approx(0.5)
    back = msg_to_detections(msg)
    assert back.obb is not None
    np.testing.assert_allclose(back.obb, obb, rtol=1e-6)
    # xyxy is the rotated box's axis-aligned hull
    c, s = math.cos(0.5), math.sin(0.5)
    half_w, half_h = 0.5 * (20 * c + 6 * s), 0.5 * (20 * s + 6 * c)
    np.testing.assert_allclose(back.xyxy[0], [30 - half_w, 20 - half_h, 30 + half_w, 20 + half_h],
                               rtol=1e-5)  # fmt: skip
    # a box-only array stays box-only
    assert msg_to_detections(detections_to_msg(det[np.array([1])])).obb is None


def test_rows_give_the_message_index_of_each_kept_row() -> None:
    det = Detections.from_arrays([[0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]], [0.9, 0.8, 0.7],
                                 [0, 1, 2], [1, 2, 3])  # fmt: skip
    msg = detections_to_msg(det)
    msg.detections[1].id = str(2**70)  # out of int64: this row is dropped
    rejected: dict[str, int] = {}
    back, rows = msg_to_detections_rows(msg, rejected=rejected)
    assert rows.tolist() == [0, 2] and back.track_ids.tolist() == [1, 3]
    assert rejected == {"id": 1}
