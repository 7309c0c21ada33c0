"""Topic names, frame ids and message-ready rows of a scenario frame, shared by
the live publisher (rclpy) and the bag writer (rosbags), so both emit the same
CARLA ROS bridge layout:

    /clock                                           rosgraph_msgs/Clock
    /carla/<role>/<camera>/image                     sensor_msgs/Image (bgra8)
    /carla/<role>/<camera>/camera_info               sensor_msgs/CameraInfo
    /carla/<role>/depth_<x>/image                    sensor_msgs/Image (32FC1), optional,
                                                     registered to camera rgb_<x>
    /carla/<role>/lidar                              sensor_msgs/PointCloud2
    /carla/<role>/ground_truth/objects               vision_msgs/Detection3DArray
    /carla/<role>/<camera>/ground_truth/detections   vision_msgs/Detection2DArray

Frame ids are `<role>/<camera>` (optical frame, as the bridge stamps its
cameras), `<role>/lidar`, and `base_frame` for the 3D ground truth. In the GT
messages `id` is the actor id (the true track id), `results[0].hypothesis`
carries the class name, and its `score` the visibility fraction (2D) or 1.0
(3D). No ROS imports here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perception.core.camera import CameraModel
from perception.sim.scenario import CLASS_NAMES, CameraFrame, Object3D

__all__ = ["Gt2DRow", "Gt3DRow", "SimLayout", "camera_info_fields", "gt2d_rows", "gt3d_rows"]


@dataclass(frozen=True)
class SimLayout:
    """Names of the topics and frames for one ego vehicle (CARLA role name)."""

    role: str = "ego_vehicle"
    base_frame: str = "base_link"
    clock_topic: str = "/clock"

    @property
    def prefix(self) -> str:
        return f"/carla/{self.role}"

    def image_topic(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/image"

    def camera_info_topic(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/camera_info"

    def camera_frame(self, camera: str) -> str:
        return f"{self.role}/{camera}"

    def depth_name(self, camera: str) -> str:
        """CARLA role of the depth camera registered to `camera` (rgb_front -> depth_front)."""
        return "depth_" + (camera[4:] if camera.startswith("rgb_") else camera)

    def depth_topic(self, camera: str) -> str:
        return f"{self.prefix}/{self.depth_name(camera)}/image"

    @property
    def lidar_topic(self) -> str:
        return f"{self.prefix}/lidar"

    @property
    def lidar_frame(self) -> str:
        return f"{self.role}/lidar"

    @property
    def objects_topic(self) -> str:
        return f"{self.prefix}/ground_truth/objects"

    def detections_topic(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/ground_truth/detections"


@dataclass(frozen=True)
class Gt2DRow:
    id: str
    class_name: str
    visibility: float
    cx: float
    cy: float
    w: float
    h: float


@dataclass(frozen=True)
class Gt3DRow:
    id: str
    class_name: str
    center: tuple[float, float, float]
    quaternion: tuple[float, float, float, float]  # x, y, z, w
    size: tuple[float, float, float]


def gt2d_rows(cam: CameraFrame, min_visible_pixels: int = 1) -> list[Gt2DRow]:
    """Visible actors of one camera (visible-pixel extent) as message rows."""
    rows = []
    vis = cam.visibility
    for i in range(len(cam.object_ids)):
        if cam.visible_pixels[i] < max(min_visible_pixels, 1):
            continue
        x1, y1, x2, y2 = (float(v) for v in cam.xyxy[i])
        rows.append(
            Gt2DRow(
                id=str(int(cam.object_ids[i])),
                class_name=CLASS_NAMES[int(cam.class_ids[i])],
                visibility=float(vis[i]),
                cx=0.5 * (x1 + x2),
                cy=0.5 * (y1 + y2),
                w=x2 - x1,
                h=y2 - y1,
            )
        )
    return rows


def gt3d_rows(objects: list[Object3D]) -> list[Gt3DRow]:
    """3D ground truth in the base frame as message rows."""
    out = []
    for o in objects:
        half = 0.5 * o.yaw_base
        out.append(
            Gt3DRow(
                id=str(o.id),
                class_name=o.class_name,
                center=o.center_base,
                quaternion=(0.0, 0.0, math.sin(half), math.cos(half)),
                size=o.size,
            )
        )
    return out


def camera_info_fields(model: CameraModel) -> dict[str, object]:
    """CameraInfo fields (k, d, r, p as flat float lists) of a model."""
    return {
        "width": model.width,
        "height": model.height,
        "distortion_model": model.distortion_model,
        "d": [float(v) for v in model.D],
        "k": [float(v) for v in np.asarray(model.K).ravel()],
        "r": [float(v) for v in np.asarray(model.R).ravel()],
        "p": [float(v) for v in np.asarray(model.P).ravel()],
    }
