"""Core types from and to the fields of ROS messages, without ROS.

The functions take any object with the message's fields: rclpy messages in
the nodes (`perception.ros.conversions*` re-export them) and rosbags
messages in replay, which reads and writes bags without ROS. So both build
the same values from the same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from perception.core.camera import CameraModel
from perception.core.fusion.pointcloud import CloudXYZ, cloud_xyz
from perception.core.types import Detections

__all__ = ["camera_model_from_info", "centre_size", "class_strings", "cloud_from_msg"]


def class_strings(
    class_ids: np.ndarray, class_names: Sequence[str] | None, class_format: str
) -> list[str]:
    """Class ids as ObjectHypothesis.class_id strings: the name ("name") or the
    number ("id"); an id outside `class_names` falls back to its number."""
    if class_format == "id" or not class_names:
        return [str(int(c)) for c in class_ids]
    if class_format != "name":
        raise ValueError(f"class_format: expected 'name' or 'id', got {class_format!r}")
    n = len(class_names)
    return [class_names[c] if 0 <= c < n else str(int(c)) for c in class_ids.tolist()]


def centre_size(det: Detections) -> tuple[list[float], list[float], list[float], list[float]]:
    """BoundingBox2D centre x, y and size x, y of every box (float64: exact for
    float32 corners, so the round trip is lossless)."""
    xyxy = det.xyxy.astype(np.float64)
    cx: list[float] = ((xyxy[:, 0] + xyxy[:, 2]) * 0.5).tolist()
    cy: list[float] = ((xyxy[:, 1] + xyxy[:, 3]) * 0.5).tolist()
    w: list[float] = (xyxy[:, 2] - xyxy[:, 0]).tolist()
    h: list[float] = (xyxy[:, 3] - xyxy[:, 1]).tolist()
    return cx, cy, w, h


def camera_model_from_info(msg: Any) -> CameraModel:
    """sensor_msgs/CameraInfo -> CameraModel (raises CalibrationError with a reason)."""
    return CameraModel.from_camera_info_fields(
        width=int(msg.width),
        height=int(msg.height),
        distortion_model=msg.distortion_model,
        d=np.asarray(msg.d, np.float64),
        k=np.asarray(msg.k, np.float64),
        r=np.asarray(msg.r, np.float64),
        p=np.asarray(msg.p, np.float64),
        frame_id=msg.header.frame_id,
    )


def cloud_from_msg(msg: Any) -> CloudXYZ:
    """sensor_msgs/PointCloud2 (any field layout) -> finite xyz points, zero-copy
    where the layout allows; raises PointCloudFormatError with a reason."""
    fields = [(f.name, int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields]
    return cloud_xyz(
        msg.data,
        fields,
        int(msg.point_step),
        int(msg.row_step),
        int(msg.height),
        int(msg.width),
        bool(msg.is_bigendian),
    )
