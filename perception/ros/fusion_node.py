"""fusion_node: 2D detections + depth or LiDAR -> 3D objects and tracks.

Inputs: vision_msgs/Detection2DArray (best: the detector's ~/<camera>/tracks),
sensor_msgs/CameraInfo, and either a registered depth image (mode depth) or a
PointCloud2 (mode lidar), matched by stamp within `sync_tolerance_s` (no
guessing: unmatched inputs are counted). Outputs, in `target_frame` with the
detections' stamp: ``~/objects`` vision_msgs/Detection3DArray (pose with
covariance, size, class, score, track id in `id`), ``~/markers``
visualization_msgs/MarkerArray, and /diagnostics.

Extrinsics come from parameters (4x4, row-major); tf2 lookups at the message
stamp are not wired yet. Every bad input (missing calibration or extrinsics,
NaN points, missing fields, wrong depth size, out-of-order stamps) is counted
by kind, logged throttled, and the node keeps running.
"""

from __future__ import annotations

import sys
from collections import defaultdict, deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import MarkerArray

from perception.core.errors import PerceptionError
from perception.core.fusion.sync import StampSynchronizer
from perception.ros.conversions import msg_to_detections, stamp_to_ns
from perception.ros.conversions3d import (
    camera_model_from_info,
    cloud_from_msg,
    objects_to_detection3d_array,
    objects_to_markers,
)
from perception.ros.images import ImageDecodeError, image_to_array
from perception.ros.params import declare_from_spec, load_spec, transform_param
from perception.ros.runner import run_node

__all__ = ["FusionNode", "main"]

_THROTTLE_S = 5.0


class FusionNode(Node):
    """Depth or LiDAR fusion for one camera (see the module docstring)."""

    def __init__(self, node_name: str = "fusion", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_from_spec(self, load_spec("fusion")["node"])
        self.T_target_from_cam = transform_param(
            "T_target_from_camera", self.p["T_target_from_camera"]
        )
        cloud_t = self.p["T_camera_from_cloud"]
        self.T_cam_from_cloud = transform_param("T_camera_from_cloud", cloud_t) if cloud_t else None
        self.mode = self.p["mode"]
        self.class_names = [n for n in self.p["class_names"] if n]
        self.errors: dict[str, int] = defaultdict(int)
        self.published = 0
        self.camera = None
        self._info_key: tuple = ()
        self.lifter: Any = None
        self.fusion: Any = None
        self.tracker: Any = None
        if self.p["tracking"]:
            from perception.core.tracking.tracker3d import Tracker3D

            self.tracker = Tracker3D(frame_id=self.p["target_frame"])
        other = "depth" if self.mode == "depth" else "cloud"
        self.sync = StampSynchronizer(
            ("det", other), float(self.p["sync_tolerance_s"]), int(self.p["queue_size"])
        )
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        sensor = QoSProfile(
            depth=int(self.p["queue_size"]),
            reliability=ReliabilityPolicy.RELIABLE
            if self.p["qos_reliability"] == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self.pub_objects = self.create_publisher(Detection3DArray, "~/objects", reliable)
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", reliable)
        self.pub_predicted = None
        if self.p["predicted_output"] and self.tracker is not None:
            self.pub_predicted = self.create_publisher(
                Detection3DArray, "~/objects_predicted", reliable
            )
        self.pub_autoware = None
        if self.p["autoware_output"]:
            from perception.ros.autoware import require_autoware

            aw = require_autoware()  # AutowareUnavailableError: the node refuses to start
            self.pub_autoware = self.create_publisher(
                aw.TrackedObjects, "~/autoware/tracked_objects", reliable
            )
        self.horizons_ms: deque[float] = deque(maxlen=256)  # recent, for diagnostics
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(
            Detection2DArray, self.p["detections_topic"], self._on_detections, reliable
        )
        self.create_subscription(CameraInfo, self.p["camera_info_topic"], self._on_info, sensor)
        if self.mode == "depth":
            self.create_subscription(Image, self.p["depth_topic"], self._on_depth, sensor)
        else:
            self.create_subscription(PointCloud2, self.p["cloud_topic"], self._on_cloud, sensor)
        self.create_timer(float(self.p["diagnostics_period_s"]), self.publish_diagnostics)

    # ----------------------------------------------------------------- input
    def _count(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.get_logger().warning(f"{kind}: {message}", throttle_duration_sec=_THROTTLE_S)

    def _on_info(self, msg: CameraInfo) -> None:
        key = (msg.width, msg.height, msg.distortion_model, tuple(msg.k), tuple(msg.d),
               tuple(msg.r), tuple(msg.p), msg.header.frame_id)  # fmt: skip
        if self.camera is not None and key == self._info_key:
            return  # unchanged calibration: keep the fusion objects (and their stats)
        try:
            cam = camera_model_from_info(msg)
        except (PerceptionError, ValueError) as exc:
            self._count("calibration", str(exc))
            return
        self._info_key = key
        from perception.core.fusion.depth import DepthLifter
        from perception.core.fusion.lidar import LidarFusion

        self.camera = cam
        if self.mode == "depth":
            self.lifter = DepthLifter(cam)
        else:
            self.fusion = LidarFusion(cam, T_cam_from_cloud=self.T_cam_from_cloud)

    def _on_detections(self, msg: Detection2DArray) -> None:
        det = msg_to_detections(msg, self.class_names)
        self._push("det", det.stamp_ns, det)

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = image_to_array(msg)
        except ImageDecodeError as exc:
            self._count(f"depth_{exc.kind}", str(exc))
            return
        if msg.encoding not in ("16UC1", "mono16", "32FC1"):
            self._count("depth_encoding", f"expected 16UC1 or 32FC1, got {msg.encoding!r}")
            return
        self._push("depth", stamp_to_ns(msg.header.stamp), depth)

    def _on_cloud(self, msg: PointCloud2) -> None:
        try:
            cloud = cloud_from_msg(msg)
        except (PerceptionError, ValueError) as exc:
            self._count("cloud_format", str(exc))
            return
        if cloud.n_nonfinite:
            self.errors["cloud_nonfinite_points"] += cloud.n_nonfinite
        self._push("cloud", stamp_to_ns(msg.header.stamp), (cloud.xyz, msg.header.frame_id))

    def _push(self, stream: str, stamp_ns: int, item: Any) -> None:
        for synced in self.sync.push(stream, stamp_ns, item):
            try:
                self._process(synced["det"], synced[self._other])
            except (PerceptionError, ValueError) as exc:
                self._count(type(exc).__name__, str(exc))
            except Exception as exc:  # a bug on one frame must not take the node down
                self._count("internal_error", f"{type(exc).__name__}: {exc}")

    @property
    def _other(self) -> str:
        return "depth" if self.mode == "depth" else "cloud"

    # ----------------------------------------------------------- processing
    def _process(self, det: Any, data: Any) -> None:
        if self.camera is None:
            self._count("camera_info_missing", "no CameraInfo received yet: 3D needs intrinsics")
            return
        if self.mode == "depth":
            res = self.lifter.lift(det, data, float(self.p["depth_scale"]) or None)
            objects = res.objects.transformed(self.T_target_from_cam, self.p["target_frame"])
        else:
            xyz, cloud_frame = data
            if self.fusion is None or self.T_cam_from_cloud is None:
                self._count("extrinsics_missing", "T_camera_from_cloud is not set")
                return
            res = self.fusion.fuse(det, xyz, cloud_frame_id=cloud_frame)
            objects = res.objects.transformed(
                self.T_target_from_cam @ self.T_cam_from_cloud, self.p["target_frame"]
            )
        if self.tracker is not None:
            objects = self.tracker.update(objects)
        fmt = self.p["class_format"]
        self.pub_objects.publish(objects_to_detection3d_array(objects, self.class_names, fmt))
        self.pub_markers.publish(objects_to_markers(objects, self.class_names))
        self.published += 1
        if self.pub_predicted is not None or self.pub_autoware is not None:
            self._publish_predicted(objects)

    def _state_covariances(self, objects: Any) -> np.ndarray:
        by_id = {t.track_id: t.covariance for t in self.tracker.tracks()}
        default = np.zeros((6, 6))
        default[:3, :3] = np.eye(3)
        return np.stack(
            [by_id.get(int(i), default) for i in objects.track_ids]
        ) if len(objects.track_ids) else np.zeros((0, 6, 6))  # fmt: skip

    def _publish_predicted(self, objects: Any) -> None:
        """Tracks moved to the publish time (planning and AR consumers act now,
        not at capture time); refused beyond the horizon cap, counted."""
        from perception.core.prediction import PredictionError, predict_objects3d

        covs = self._state_covariances(objects)
        now_ns = self.get_clock().now().nanoseconds
        try:
            predicted, horizon = predict_objects3d(
                objects, now_ns, float(self.p["prediction_max_horizon_s"]), covs, past="hold"
            )
        except PredictionError as exc:
            self._count("prediction_refused", str(exc))
            return
        self.horizons_ms.append(horizon * 1e3)
        fmt = self.p["class_format"]
        if self.pub_predicted is not None:
            msg = objects_to_detection3d_array(predicted, self.class_names, fmt)
            self.pub_predicted.publish(msg)
        if self.pub_autoware is not None:
            from perception.ros.autoware import Tracks3D, build_tracked_objects_msg

            names = [
                self.class_names[c] if 0 <= c < len(self.class_names) else "unknown"
                for c in predicted.class_ids.tolist()
            ]
            vel = np.nan_to_num(predicted.velocities.astype(np.float64))
            tracks = Tracks3D.from_arrays(
                positions=predicted.centers, sizes=predicted.sizes, yaws=predicted.yaws,
                class_names=names, track_ids=predicted.track_ids, velocities=vel,
                position_covs=predicted.covariances, velocity_covs=covs[:, 3:, 3:],
                scores=predicted.scores, frame_id=predicted.frame_id,
                stamp_ns=predicted.stamp_ns,
            )  # fmt: skip
            self.pub_autoware.publish(build_tracked_objects_msg(tracks))

    def publish_diagnostics(self) -> None:
        values = {"published": str(self.published), "mode": self.mode}
        if self.horizons_ms:
            h = np.asarray(self.horizons_ms)
            values["prediction.horizon_ms.p50"] = f"{np.percentile(h, 50):.1f}"
            values["prediction.horizon_ms.max"] = f"{h.max():.1f}"
        for stream, st in self.sync.stats().items():
            for k, v in vars(st).items():
                values[f"sync.{stream}.{k}"] = str(v)
        values.update({f"error.{k}": str(v) for k, v in sorted(self.errors.items())})
        stats = getattr(self.lifter or self.fusion, "stats", None)
        if stats is not None:
            values.update({f"fusion.{k}": str(v) for k, v in stats.as_dict().items()})
        level = DiagnosticStatus.WARN if self.errors or self.camera is None else DiagnosticStatus.OK
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: fusion",
            message="no CameraInfo yet" if self.camera is None else f"{self.published} published",
            hardware_id=self.p["camera_info_topic"],
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self.pub_diag.publish(DiagnosticArray(header=header, status=[status]))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the fusion node."""
    return run_node(FusionNode, argv, name="fusion")


if __name__ == "__main__":
    sys.exit(main())
