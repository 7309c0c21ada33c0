"""CameraInfo / PointCloud2 in, Detection3DArray / MarkerArray out."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not importable; run ./dev test")
pytest.importorskip("visualization_msgs.msg")

from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from visualization_msgs.msg import Marker

from perception.core.fusion.errors import PointCloudFormatError
from perception.core.fusion.types import Objects3D
from perception.ros.conversions import stamp_to_ns
from perception.ros.conversions3d import (
    camera_model_from_info,
    cloud_from_msg,
    objects_to_detection3d_array,
    objects_to_markers,
)


def test_camera_info_to_model_projects_like_k():
    info = CameraInfo(width=1164, height=874, distortion_model="plumb_bob")
    info.header.frame_id = "cam_optical"
    info.k = [910.0, 0.0, 582.0, 0.0, 910.0, 437.0, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    model = camera_model_from_info(info)  # R and P all zero: identity and [K|0]
    uv = model.project(np.array([[1.0, -0.5, 10.0]]))
    np.testing.assert_allclose(uv, [[582 + 91.0, 437 - 45.5]], atol=1e-6)


def _cloud(points: np.ndarray, pad: int = 8) -> PointCloud2:
    """x, y, z float32 + intensity + padding: a non-trivial point_step."""
    n = len(points)
    step = 16 + pad
    buf = np.zeros((n, step), np.uint8)
    buf[:, :12] = points.astype(np.float32).view(np.uint8).reshape(n, 12)
    buf[:, 12:16] = np.full((n, 1), 0.5, np.float32).view(np.uint8)
    fields = [PointField(name=c, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, c in enumerate("xyz")]  # fmt: skip
    fields.append(PointField(name="intensity", offset=12, datatype=PointField.FLOAT32, count=1))
    return PointCloud2(height=1, width=n, fields=fields, is_bigendian=False, point_step=step,
                       row_step=step * n, data=buf.tobytes(), is_dense=False)  # fmt: skip


def test_pointcloud2_any_layout_drops_nonfinite_and_rejects_missing_fields():
    pts = np.array([[1, 2, 3], [np.nan, 0, 0], [4, 5, 6], [np.inf, 1, 1]], np.float32)
    cloud = cloud_from_msg(_cloud(pts))
    np.testing.assert_array_equal(cloud.xyz, pts[[0, 2]])
    assert (cloud.n_total, cloud.n_nonfinite) == (4, 2)
    msg = _cloud(pts)
    msg.fields = [f for f in msg.fields if f.name != "z"]
    with pytest.raises(PointCloudFormatError, match="z"):
        cloud_from_msg(msg)
    empty = cloud_from_msg(_cloud(np.zeros((0, 3), np.float32)))
    assert empty.xyz.shape == (0, 3)


def _objects() -> Objects3D:
    return Objects3D.from_arrays(
        centers=[[10.0, 2.0, 0.8], [5.0, -1.0, 0.9]],
        sizes=[[4.2, 1.8, 1.5], [0.6, 0.6, 1.7]],
        yaws=[math.pi / 2, 0.0],
        covariances=np.stack([np.diag([0.1, 0.2, 0.3])] * 2),
        velocities=[[1.0, 0.0, 0.0], [np.nan, np.nan, np.nan]],
        scores=[0.9, 0.7],
        class_ids=[2, 0],
        track_ids=[7, -1],
        stamp_ns=1_700_000_000_500_000_000,
        frame_id="base_link",
    )


def test_objects_to_detection3d_array():
    msg = objects_to_detection3d_array(_objects(), ["person", "bicycle", "car"])
    assert msg.header.frame_id == "base_link"
    assert stamp_to_ns(msg.header.stamp) == 1_700_000_000_500_000_000
    car, person = msg.detections
    assert (car.id, person.id) == ("7", "")
    assert car.results[0].hypothesis.class_id == "car"
    assert car.results[0].hypothesis.score == pytest.approx(0.9)
    assert (car.bbox.size.x, car.bbox.size.z) == pytest.approx((4.2, 1.5))
    q = car.bbox.center.orientation
    assert (q.z, q.w) == pytest.approx((math.sin(math.pi / 4), math.cos(math.pi / 4)))
    cov = np.array(car.results[0].pose.covariance).reshape(6, 6)
    np.testing.assert_allclose(np.diag(cov)[:3], [0.1, 0.2, 0.3], rtol=1e-6)
    assert car.results[0].pose.pose.position.x == pytest.approx(10.0)


def test_objects_to_markers():
    markers = objects_to_markers(_objects(), ["person", "bicycle", "car"]).markers
    assert markers[0].action == Marker.DELETEALL
    kinds = [m.type for m in markers[1:]]
    assert kinds.count(Marker.CUBE) == 2 and kinds.count(Marker.TEXT_VIEW_FACING) == 2
    assert kinds.count(Marker.ARROW) == 1  # unknown velocity: no arrow, never a zero arrow
    texts = [m.text for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert texts == ["car #7", "person"]
    assert all(m.header.frame_id == "base_link" for m in markers)
