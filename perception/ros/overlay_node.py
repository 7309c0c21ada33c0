"""overlay_node: tracks drawn on camera images for AR displays and debugging.

Subscribes to a camera (`image_topic`, raw or compressed) and to tracks
(`tracks_topic`, vision_msgs/Detection2DArray stamped with their image's
stamp) and publishes the annotated image on `output_topic` with the IMAGE's
header (stamp and frame_id): boxes, class, score, track id and motion trails.

Two modes:

- matched (`use_prediction: false`): each image waits in a small buffer for
  the tracks of its stamp (tracks that arrive first wait in one too); both
  buffers hold at most `buffer_size` messages, the oldest is dropped and
  counted (`unmatched_images`, `unmatched_tracks`). The output lags the camera
  by the pipeline delay but shows exactly what was detected on that image.
- predicted (`use_prediction: true`): every image is published at once with
  the newest tracks moved to the image's stamp (the display time) by a
  constant-velocity filter per track id, fed with the tracks as they arrive
  (`perception.core.prediction.TrackMotionEstimator`), so boxes stay on the
  objects despite the pipeline delay. Horizons beyond
  `prediction.max_horizon_s` are refused: the image goes out without boxes
  and `prediction_refused` counts it.

Projected 3D boxes (optional): with `objects_topic` (vision_msgs/
Detection3DArray, e.g. the fusion node's ~/objects) and `camera_info_topic`
set, the 3D objects of the image's stamp (same `stamp_tolerance_ms`) are drawn
as the projected 12 edges of each box, through the CameraInfo's model
(distortion included), after moving the box corners into the optical frame
with `T_camera_from_objects`. Objects wait in a buffer of `buffer_size`; in
matched mode an image whose tracks arrived but whose objects have not waits
too (the fusion output usually comes after the tracks), at most
`buffer_size` images, the oldest then going out without 3D boxes
(`objects_missing`). In predicted mode objects are drawn only when their
stamp matches the image (they are not predicted). Without a CameraInfo the
3D boxes are skipped and `camera_info_missing` counts it.

"Tracks at time t" over existing message types: a std_msgs/Header on
`tracks_at.request_topic` (stamp = t) is answered on `tracks_at.response_topic`
with the newest tracks predicted to t (see `prediction_to_msg` for where the
horizon and the position covariance go), or refused with the reason on
`<request_topic>/refused` (std_msgs/String) beyond the horizon cap.

Counters and the current buffer sizes go to /diagnostics. Parameters come
from specs/overlay.params.yaml.

    ros2 run perception overlay_node --ros-args -p image_topic:=/cam/image_raw \
        -p tracks_topic:=/detector/cam/tracks -p use_prediction:=true
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from vision_msgs.msg import Detection2DArray, Detection3DArray

from perception.core.camera import CameraModel
from perception.core.errors import PerceptionError
from perception.core.fusion.types import Objects3D
from perception.core.overlay import TrailHistory, draw_boxes3d, draw_overlay
from perception.core.prediction import Prediction, PredictionError, TrackMotionEstimator
from perception.core.types import Detections
from perception.ros.conversions import (
    detections_to_msg,
    msg_to_detections,
    ns_to_stamp,
    stamp_to_ns,
)
from perception.ros.conversions3d import camera_model_from_info, detection3d_array_to_objects
from perception.ros.images import (
    ImageDecodeError,
    bgr_to_image_msg,
    compressed_to_bgr,
    image_to_bgr,
)
from perception.ros.params import (
    declare_from_spec,
    load_spec,
    on_set_validator,
    transform_param,
)
from perception.ros.runner import run_node

__all__ = ["COUNTERS", "OverlayNode", "main", "prediction_to_msg"]

COUNTERS = (
    "images_received",
    "tracks_received",
    "published",
    "unmatched_images",
    "unmatched_tracks",
    "prediction_refused",
    "requests",
    "requests_refused",
    "decode_errors",
    "draw_errors",
    "objects_received",
    "unmatched_objects",
    "objects_missing",
    "objects_errors",
    "camera_info_missing",
    "camera_info_errors",
)
"""Counters reported in /diagnostics (and kept in `OverlayNode.counters`)."""

_THROTTLE_S = 5.0
_MAX_CLASS_NAMES = 4096


class OverlayNode(Node):
    """Plain rclpy node; all drawing and prediction is in perception.core."""

    def __init__(self, node_name: str = "overlay", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._specs = load_spec("overlay")["node"]
        p = declare_from_spec(self, self._specs)
        self.params = p
        self.add_on_set_parameters_callback(on_set_validator(self._specs))
        self.add_post_set_parameters_callback(self._on_params_set)
        self.class_names: list[str] = [n for n in p["class_names"] if n]
        self._class_lookup = {n: i for i, n in enumerate(self.class_names)}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        n = int(p["buffer_size"])
        # (stamp_ns, message); bounded: a full deque drops (and we count) the oldest
        self.image_buffer: deque[tuple[int, Any]] = deque(maxlen=n)
        self.track_buffer: deque[Detections] = deque(maxlen=n)
        self.trails = TrailHistory(
            max_points=int(p["trails.max_points"]),
            max_tracks=int(p["max_tracks"]),
            max_age_s=float(p["trails.max_age_s"]),
        )
        self.motion = TrackMotionEstimator(
            max_age_s=float(p["trails.max_age_s"]), max_tracks=int(p["max_tracks"])
        )
        self.latest_tracks: Detections | None = None
        self.last_horizon_s: float | None = None
        self._tolerance_ns = round(float(p["stamp_tolerance_ms"]) * 1e6)
        # 3D boxes: objects waiting for their image, and images (with their
        # matched tracks) waiting for their objects; both bounded
        self.T_cam_from_objects = transform_param(
            "T_camera_from_objects", p["T_camera_from_objects"]
        )
        self.objects_buffer: deque[Objects3D] = deque(maxlen=n)
        self.pending_3d: deque[tuple[int, Any, Detections]] = deque(maxlen=n)
        self.camera: CameraModel | None = None
        self._info_key: tuple = ()

        reliability = (
            ReliabilityPolicy.RELIABLE
            if p["image_qos.reliability"] == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        )
        image_qos = QoSProfile(depth=max(1, n), reliability=reliability)
        tracks_qos = QoSProfile(depth=max(10, n), reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.create_publisher(Image, p["output_topic"], 2)
        if p["transport"] == "compressed":
            topic = p["image_topic"].rstrip("/") + "/compressed"
            self.sub_image = self.create_subscription(
                CompressedImage, topic, self._on_image, image_qos
            )
        else:
            self.sub_image = self.create_subscription(
                Image, p["image_topic"], self._on_image, image_qos
            )
        self.sub_tracks = self.create_subscription(
            Detection2DArray, p["tracks_topic"], self._on_tracks, tracks_qos
        )
        self.sub_objects = self.sub_info = None
        if p["objects_topic"]:
            self.sub_objects = self.create_subscription(
                Detection3DArray, p["objects_topic"], self._on_objects, tracks_qos
            )
        if p["camera_info_topic"]:
            self.sub_info = self.create_subscription(
                CameraInfo, p["camera_info_topic"], self._on_camera_info, tracks_qos
            )
        if self.sub_objects is not None and self.sub_info is None:
            self.get_logger().warning(
                "overlay: objects_topic is set but camera_info_topic is empty: 3D boxes "
                "cannot be projected (counted as camera_info_missing)"
            )
        self.pub_answer = self.pub_refused = self.sub_request = None
        if p["tracks_at.request_topic"]:
            self.pub_answer = self.create_publisher(
                Detection2DArray, p["tracks_at.response_topic"], tracks_qos
            )
            request = p["tracks_at.request_topic"]
            self.pub_refused = self.create_publisher(
                String, request.rstrip("/") + "/refused", tracks_qos
            )
            self.sub_request = self.create_subscription(
                Header, request, self._on_request, tracks_qos
            )
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.diag_timer = self.create_timer(
            float(p["diagnostics_period_s"]), self.publish_diagnostics
        )
        self.get_logger().info(
            f"overlay: {p['image_topic']} ({p['transport']}) + {p['tracks_topic']} -> "
            f"{self.pub.topic_name}, buffer {n}, prediction {p['use_prediction']}"
        )

    # ------------------------------------------------------------ parameters
    def _on_params_set(self, params: list[Any]) -> None:
        for q in params:
            if q.name in self.params:
                self.params[q.name] = q.value
                if q.name == "use_prediction":
                    self.image_buffer.clear()  # no image is matched any more in predicted mode
                    self.track_buffer.clear()
                    self.pending_3d.clear()

    # ------------------------------------------------------------- data path
    def _on_tracks(self, msg: Detection2DArray) -> None:
        self.counters["tracks_received"] += 1
        self._learn_class_names(msg)
        det = msg_to_detections(msg, self.class_names)
        self.trails.update(det)
        self.motion.update(det)
        if self.latest_tracks is None or det.stamp_ns >= self.latest_tracks.stamp_ns:
            self.latest_tracks = det
        if self.params["use_prediction"]:
            return
        for i, (stamp, image_msg) in enumerate(self.image_buffer):
            if abs(stamp - det.stamp_ns) <= self._tolerance_ns:
                del self.image_buffer[i]
                self._publish_matched(image_msg, stamp, det)
                return
        if len(self.track_buffer) == self.track_buffer.maxlen:
            self.counters["unmatched_tracks"] += 1
        self.track_buffer.append(det)

    def _learn_class_names(self, msg: Detection2DArray) -> None:
        """Give every class string not in `class_names` (and not a number) an
        id of its own, so labels show the name the tracks carry (bounded)."""
        known = self._class_lookup
        for d in msg.detections:
            for r in d.results:
                name = r.hypothesis.class_id
                if name in known or len(known) >= _MAX_CLASS_NAMES:
                    continue
                try:
                    int(name)
                except ValueError:
                    known[name] = len(self.class_names)
                    self.class_names.append(name)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self.counters["images_received"] += 1
        stamp = stamp_to_ns(msg.header.stamp)
        if self.params["use_prediction"]:
            self._publish_predicted(msg, stamp)
            return
        for i, det in enumerate(self.track_buffer):
            if abs(det.stamp_ns - stamp) <= self._tolerance_ns:
                del self.track_buffer[i]
                self._publish_matched(msg, stamp, det)
                return
        if len(self.image_buffer) == self.image_buffer.maxlen:
            self.counters["unmatched_images"] += 1
        self.image_buffer.append((stamp, msg))

    # ------------------------------------------------------------- 3D boxes
    def _on_camera_info(self, msg: CameraInfo) -> None:
        key = (msg.width, msg.height, msg.distortion_model, tuple(msg.d), tuple(msg.k),
               tuple(msg.r), tuple(msg.p), msg.header.frame_id)  # fmt: skip
        if key == self._info_key:
            return
        try:
            self.camera = camera_model_from_info(msg)
        except PerceptionError as exc:
            self.counters["camera_info_errors"] += 1
            self.get_logger().warning(
                f"overlay: bad CameraInfo: {exc}", throttle_duration_sec=_THROTTLE_S
            )
            return
        self._info_key = key

    def _on_objects(self, msg: Detection3DArray) -> None:
        self.counters["objects_received"] += 1
        try:
            obj = detection3d_array_to_objects(msg, self.class_names)
        except (PerceptionError, ValueError) as exc:
            self.counters["objects_errors"] += 1
            self.get_logger().warning(
                f"overlay: bad 3D objects: {exc}", throttle_duration_sec=_THROTTLE_S
            )
            return
        for i, (stamp, image_msg, det) in enumerate(self.pending_3d):
            if abs(stamp - obj.stamp_ns) <= self._tolerance_ns:
                del self.pending_3d[i]
                self._publish(image_msg, det, objects=obj)
                return
        if len(self.objects_buffer) == self.objects_buffer.maxlen:
            self.counters["unmatched_objects"] += 1
        self.objects_buffer.append(obj)

    def _take_objects(self, stamp: int) -> Objects3D | None:
        """The buffered objects of this image stamp (removed), or None."""
        for i, obj in enumerate(self.objects_buffer):
            if abs(obj.stamp_ns - stamp) <= self._tolerance_ns:
                del self.objects_buffer[i]
                return obj
        return None

    def _publish_matched(self, msg: Image | CompressedImage, stamp: int, det: Detections) -> None:
        """Image and its tracks matched: publish now, or (3D boxes on) wait
        for the image's objects; a full wait buffer sends its oldest image
        out without 3D boxes."""
        if self.sub_objects is None:
            self._publish(msg, det)
            return
        obj = self._take_objects(stamp)
        if obj is not None:
            self._publish(msg, det, objects=obj)
            return
        if len(self.pending_3d) == self.pending_3d.maxlen:
            _, old_msg, old_det = self.pending_3d.popleft()
            self.counters["objects_missing"] += 1
            self._publish(old_msg, old_det)
        self.pending_3d.append((stamp, msg, det))

    def _on_request(self, msg: Header) -> None:
        """Answer "tracks at time t" with the newest tracks predicted to t."""
        self.counters["requests"] += 1
        target = stamp_to_ns(msg.stamp)
        tracks = self.latest_tracks
        try:
            if tracks is None:
                raise PredictionError("no tracks received yet")
            pred = self.motion.predict(
                tracks,
                target,
                max_horizon_s=float(self.params["prediction.max_horizon_s"]),
                past=self.params["prediction.past"],
            )
        except PredictionError as exc:
            self.counters["requests_refused"] += 1
            self.pub_refused.publish(String(data=f"tracks at {target} ns refused: {exc}"))
            return
        self.pub_answer.publish(prediction_to_msg(pred, self.class_names))

    def _publish_predicted(self, msg: Image | CompressedImage, stamp: int) -> None:
        tracks = self.latest_tracks
        if tracks is None:
            self._publish(msg, None, objects=self._objects_for(stamp))
            return
        try:
            pred = self.motion.predict(
                tracks,
                stamp,
                max_horizon_s=float(self.params["prediction.max_horizon_s"]),
                past=self.params["prediction.past"],
            )
        except PredictionError as exc:
            self.counters["prediction_refused"] += 1
            self.get_logger().warning(
                f"overlay: no boxes on image {stamp}: {exc}", throttle_duration_sec=_THROTTLE_S
            )
            self._publish(msg, None)
            return
        self.last_horizon_s = pred.horizon_s
        source = tracks if self.params["prediction.show_source"] else None
        self._publish(msg, pred.detections, dashed=source, objects=self._objects_for(stamp))

    def _objects_for(self, stamp: int) -> Objects3D | None:
        """Predicted mode: the objects of exactly this stamp, if already here."""
        if self.sub_objects is None:
            return None
        obj = self._take_objects(stamp)
        if obj is None:
            self.counters["objects_missing"] += 1
        return obj

    def _publish(
        self,
        msg: Image | CompressedImage,
        det: Detections | None,
        dashed: Detections | None = None,
        objects: Objects3D | None = None,
    ) -> None:
        """Decode, draw and publish with the image's header."""
        try:
            image = (
                compressed_to_bgr(msg) if isinstance(msg, CompressedImage) else image_to_bgr(msg)
            )
        except ImageDecodeError as exc:
            self.counters["decode_errors"] += 1
            self.get_logger().warning(
                f"overlay: bad image ({exc.kind}): {exc}", throttle_duration_sec=_THROTTLE_S
            )
            return
        try:
            if det is None:
                out = image.copy()
            else:
                trails = self.trails if self.params["trails.enabled"] else None
                out = draw_overlay(
                    image,
                    det,
                    self.class_names,
                    trails=trails,
                    dashed=dashed,
                    until_ns=stamp_to_ns(msg.header.stamp),
                )
        except PerceptionError as exc:
            self.counters["draw_errors"] += 1
            self.get_logger().warning(
                f"overlay: cannot draw: {exc}", throttle_duration_sec=_THROTTLE_S
            )
            return
        if objects is not None and len(objects):
            self._draw_3d(out, objects)
        self.pub.publish(bgr_to_image_msg(out, msg.header))
        self.counters["published"] += 1

    def _draw_3d(self, out: np.ndarray, objects: Objects3D) -> None:
        """Projected 3D boxes onto `out` in place; a missing or mismatching
        CameraInfo is counted and the image still goes out with its 2D overlay."""
        if self.camera is None:
            self.counters["camera_info_missing"] += 1
            self.get_logger().warning(
                "overlay: no CameraInfo yet, 3D boxes skipped", throttle_duration_sec=_THROTTLE_S
            )
            return
        try:
            draw_boxes3d(
                out,
                self.camera,
                objects,
                self.class_names,
                transform=self.T_cam_from_objects,
                copy=False,
            )
        except PerceptionError as exc:
            self.counters["draw_errors"] += 1
            self.get_logger().warning(
                f"overlay: cannot draw 3D boxes: {exc}", throttle_duration_sec=_THROTTLE_S
            )

    # ----------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        c = self.counters
        values = {k: str(v) for k, v in c.items()}
        values["image_buffer"] = str(len(self.image_buffer))
        values["track_buffer"] = str(len(self.track_buffer))
        values["objects_buffer"] = str(len(self.objects_buffer))
        values["pending_3d"] = str(len(self.pending_3d))
        values["camera_info"] = str(self.camera is not None)
        values["buffer_size"] = str(self.image_buffer.maxlen)
        values["trail_tracks"] = str(len(self.trails))
        values["use_prediction"] = str(bool(self.params["use_prediction"]))
        if self.last_horizon_s is not None:
            values["last_horizon_ms"] = f"{self.last_horizon_s * 1e3:.1f}"
        bad = c["decode_errors"] + c["draw_errors"] + c["prediction_refused"]
        bad += c["objects_errors"] + c["camera_info_errors"] + c["camera_info_missing"]
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if bad else DiagnosticStatus.OK,
            name=f"{self.get_name()}: overlay",
            message=f"{c['published']} published, {c['unmatched_images']} images and "
            f"{c['unmatched_tracks']} tracks unmatched",
            hardware_id=self.params["image_topic"],
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)


def prediction_to_msg(pred: Prediction, class_names: list[str] | None = None) -> Detection2DArray:
    """A `Prediction` as Detection2DArray without new message types: the array
    header has the target time, each Detection2D header the source stamp (so
    horizon = array stamp - detection stamp), and results[0].pose carries the
    predicted centre (px) with its x/y variance (px^2) in covariance[0], [7]."""
    out = detections_to_msg(pred.detections, class_names)
    source = ns_to_stamp(pred.source_stamp_ns)
    var = pred.position_std.astype(float) ** 2
    centres = pred.detections.centers.astype(float)
    for i, d in enumerate(out.detections):
        d.header = Header(stamp=source, frame_id=out.header.frame_id)
        pose = d.results[0].pose
        pose.pose.position.x, pose.pose.position.y = centres[i]
        cov = [0.0] * 36
        if np.isfinite(var[i]).all():
            cov[0], cov[7] = float(var[i, 0]), float(var[i, 1])
        pose.covariance = cov
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the overlay node."""
    return run_node(OverlayNode, argv, name="overlay")


if __name__ == "__main__":
    sys.exit(main())
