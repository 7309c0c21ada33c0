"""fusion_node: a ROS driver of the pipeline's `FusionStage` for one camera.

Inputs: vision_msgs/Detection2DArray (best: the detector's ~/<camera>/tracks),
sensor_msgs/CameraInfo, and either a registered depth image (mode depth) or a
PointCloud2 (mode lidar), matched by stamp within `sync_tolerance_s` (no
guessing: unmatched inputs are counted). With `masks_topic` (segmentation
models), also the same-stamp instance-id image (perception.ros.masks): each
detection is then lifted from its mask's pixels, not its box. Outputs, in `target_frame` with the
detections' stamp: ``~/objects`` vision_msgs/Detection3DArray (pose with
covariance, size, class, score, track id in `id`), ``~/markers``
visualization_msgs/MarkerArray, ``~/objects_predicted`` (the tracks moved to
the publish time), optionally Autoware TrackedObjects, and /diagnostics.

Extrinsics come from parameters (4x4, row-major); tf2 lookups at the message
stamp are not wired yet. Every bad input (missing calibration or extrinsics,
NaN points, missing fields, wrong depth size, out-of-order stamps) is counted
by kind, logged throttled, and the node keeps running. Parameters:
specs/fusion.params.yaml and the tracker3d section of specs/tracker.params.yaml.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import MarkerArray

from perception.config.generated import FusionParams, Tracker3DParams
from perception.core.errors import PerceptionError
from perception.core.fusion.sync import StampSynchronizer
from perception.core.fusion.types import Objects3D
from perception.core.message_fields import MessageFieldError
from perception.core.types import Detections
from perception.pipeline import CloudInput, FusionOutput, FusionStage, ThrottledLog
from perception.pipeline.config import fusion_settings
from perception.pipeline.status import fusion_status
from perception.ros.conversions import msg_to_detections_rows, stamp_to_ns
from perception.ros.conversions3d import (
    camera_model_from_info,
    cloud_from_msg,
    objects_to_detection3d_array,
    objects_to_markers,
)
from perception.ros.diagnostics import diagnostic_array
from perception.ros.images import DEFAULT_MAX_PIXELS, ImageDecodeError, image_to_array
from perception.ros.masks import id_image_from_msg, masks_from_id_image
from perception.ros.params import declare_params
from perception.ros.runner import run_node

__all__ = ["FusionNode", "main"]

_DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
MAX_MASK_PIXELS = DEFAULT_MAX_PIXELS
"""A larger instance-id image is refused from its header (masks_too_large)."""


class FusionNode(Node):
    """Depth or LiDAR fusion for one camera (see the module docstring)."""

    def __init__(self, node_name: str = "fusion", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.p = p = declare_params(self, FusionParams)
        tracker3d = declare_params(self, Tracker3DParams, "tracker3d.")
        self.stage = FusionStage(fusion_settings(p, tracker3d), ThrottledLog(self.get_logger()))
        self.class_names = [n for n in p.class_names if n]
        self._info_key: tuple[Any, ...] = ()
        self._other = "depth" if p.mode == "depth" else "cloud"
        streams = ("det", self._other, *(("masks",) if p.masks_topic else ()))
        self.sync = StampSynchronizer(streams, p.sync_tolerance_s, p.queue_size)
        self.masks_fused = 0
        """Detections messages fused with their mask image."""
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        sensor = QoSProfile(
            depth=p.queue_size,
            reliability=ReliabilityPolicy.RELIABLE
            if p.qos_reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self.pub_objects = self.create_publisher(Detection3DArray, "~/objects", reliable)
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", reliable)
        self.pub_predicted = None
        if p.predicted_output and p.tracking:
            self.pub_predicted = self.create_publisher(
                Detection3DArray, "~/objects_predicted", reliable
            )
        self.pub_autoware = None
        if p.autoware_output:
            from perception.ros.autoware import require_autoware

            aw = require_autoware()  # AutowareUnavailableError: the node refuses to start
            self.pub_autoware = self.create_publisher(
                aw.TrackedObjects, "~/autoware/tracked_objects", reliable
            )
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        guard = self._guarded
        self.create_subscription(
            Detection2DArray, p.detections_topic, partial(guard, self._on_det), reliable
        )
        self.create_subscription(
            CameraInfo, p.camera_info_topic, partial(guard, self._on_info), sensor
        )
        if p.masks_topic:  # the detector publishes them like its detections: reliable
            self.create_subscription(Image, p.masks_topic, partial(guard, self._on_masks), reliable)
        if p.mode == "depth":
            self.create_subscription(Image, p.depth_topic, partial(guard, self._on_depth), sensor)
        else:
            self.create_subscription(
                PointCloud2, p.cloud_topic, partial(guard, self._on_cloud), sensor
            )
        self.create_timer(p.diagnostics_period_s, self.publish_diagnostics)

    @property
    def errors(self) -> dict[str, int]:
        return self.stage.errors

    @property
    def published(self) -> int:
        return self.stage.processed

    # ----------------------------------------------------------------- input
    def _guarded(self, callback: Callable[[Any], None], msg: Any) -> None:
        """Every callback: a bad field is counted by kind (bad_<kind>), anything
        unexpected as callback_error; no message ends the node."""
        try:
            callback(msg)
        except MessageFieldError as exc:
            self.stage.count(f"bad_{exc.kind}", f"{type(msg).__name__} dropped: {exc}")
        except Exception as exc:  # last resort
            self.stage.count("callback_error", f"{type(msg).__name__}: {type(exc).__name__}: {exc}")

    def _on_info(self, msg: CameraInfo) -> None:
        key = (msg.width, msg.height, msg.distortion_model, tuple(msg.k), tuple(msg.d),
               tuple(msg.r), tuple(msg.p), msg.header.frame_id)  # fmt: skip
        if self.stage.camera is not None and key == self._info_key:
            return  # unchanged calibration: keep the fusion objects (and their stats)
        try:
            cam = camera_model_from_info(msg)
        except (PerceptionError, ValueError) as exc:
            self.stage.count("calibration", str(exc))
            return
        self._info_key = key
        self.stage.set_camera(cam)

    def _on_det(self, msg: Detection2DArray) -> None:
        det, rows = msg_to_detections_rows(msg, self.class_names)
        self._push("det", det.stamp_ns, (det, rows))

    def _on_masks(self, msg: Image) -> None:
        """Queued as received; decoded only when matched with detections."""
        self._push("masks", stamp_to_ns(msg.header.stamp), msg)

    def _with_masks(self, det: Detections, rows: np.ndarray, msg: Image) -> Detections:
        """`det` with the masks of its rows (`rows`: their indices in the
        detections message) from the same-stamp instance-id image; a mask
        image that does not decode or does not fit the camera is counted and
        `det` fused with its boxes."""
        try:
            ids = id_image_from_msg(msg, MAX_MASK_PIXELS)
        except ImageDecodeError as exc:
            self.stage.count(f"masks_{exc.kind}", str(exc))
            return det
        cam = self.stage.camera
        if cam is not None and ids.shape != (cam.height, cam.width):
            self.stage.count(
                "masks_size",
                f"mask image {ids.shape[1]}x{ids.shape[0]}, camera {cam.width}x{cam.height}",
            )
            return det
        self.masks_fused += 1
        return replace(det, masks=masks_from_id_image(ids, rows))

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = image_to_array(msg)
        except ImageDecodeError as exc:
            self.stage.count(f"depth_{exc.kind}", str(exc))
            return
        if msg.encoding not in _DEPTH_ENCODINGS:
            self.stage.count("depth_encoding", f"expected 16UC1 or 32FC1, got {msg.encoding!r}")
            return
        self._push("depth", stamp_to_ns(msg.header.stamp), depth)

    def _on_cloud(self, msg: PointCloud2) -> None:
        try:
            cloud = cloud_from_msg(msg)
        except (PerceptionError, ValueError) as exc:
            self.stage.count("cloud_format", str(exc))
            return
        if cloud.n_nonfinite:
            self.stage.errors["cloud_nonfinite_points"] += cloud.n_nonfinite
        item = CloudInput(cloud.xyz, msg.header.frame_id)
        self._push("cloud", stamp_to_ns(msg.header.stamp), item)

    def _push(self, stream: str, stamp_ns: int, item: Any) -> None:
        for synced in self.sync.push(stream, stamp_ns, item):
            data = synced[self._other]
            det, rows = synced["det"]
            if "masks" in synced.items:
                det = self._with_masks(det, rows, synced["masks"])
            want_prediction = self.pub_predicted is not None or self.pub_autoware is not None
            out = self.stage.process(
                det,
                depth=data if self._other == "depth" else None,
                cloud=data if self._other == "cloud" else None,
                predict_to_ns=self.get_clock().now().nanoseconds if want_prediction else None,
            )
            if out is not None:
                self._publish(out)

    # ----------------------------------------------------------------- output
    def _publish(self, out: FusionOutput) -> None:
        fmt = self.p.class_format
        self.pub_objects.publish(objects_to_detection3d_array(out.objects, self.class_names, fmt))
        self.pub_markers.publish(objects_to_markers(out.objects, self.class_names))
        if out.predicted is None:
            return
        if self.pub_predicted is not None:
            msg = objects_to_detection3d_array(out.predicted, self.class_names, fmt)
            self.pub_predicted.publish(msg)
        if self.pub_autoware is not None and out.state_covariances is not None:
            self._publish_autoware(out.predicted, out.state_covariances)

    def _publish_autoware(self, predicted: Objects3D, covs: np.ndarray) -> None:
        from perception.ros.autoware import Tracks3D, build_tracked_objects_msg

        assert self.pub_autoware is not None
        names = [
            self.class_names[c] if 0 <= c < len(self.class_names) else "unknown"
            for c in predicted.class_ids.tolist()
        ]
        vel = np.nan_to_num(predicted.velocities.astype(np.float64))
        tracks = Tracks3D.from_arrays(
            positions=predicted.centers, sizes=predicted.sizes, yaws=predicted.yaws,
            class_names=names, track_ids=predicted.track_ids, velocities=vel,
            position_covs=predicted.covariances, velocity_covs=covs[:, 3:, 3:],
            scores=predicted.scores, frame_id=predicted.frame_id, stamp_ns=predicted.stamp_ns,
        )  # fmt: skip
        self.pub_autoware.publish(build_tracked_objects_msg(tracks))

    def publish_diagnostics(self) -> None:
        sync = {
            f"sync.{stream}.{k}": str(v)
            for stream, st in self.sync.stats().items()
            for k, v in vars(st).items()
        }
        if self.p.masks_topic:
            sync["masks_fused"] = str(self.masks_fused)
        status = fusion_status(
            self.stage, f"{self.get_fully_qualified_name()}: fusion", self.p.camera_info_topic, sync
        )
        self.pub_diag.publish(diagnostic_array([status], self.get_clock().now().to_msg()))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the fusion node."""
    return run_node(FusionNode, argv, name="fusion")


if __name__ == "__main__":
    sys.exit(main())
