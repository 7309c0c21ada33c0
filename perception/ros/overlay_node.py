"""overlay_node: tracks drawn on camera images for AR displays and debugging.

Subscribes to a camera (`image_topic`, raw or compressed) and to tracks
(`tracks_topic`, vision_msgs/Detection2DArray stamped with their image's
stamp) and publishes the annotated image on `output_topic` with the IMAGE's
header (stamp and frame_id): boxes, class, score, track id and motion trails.
With `masks_topic` / `keypoints_topic` (segmentation and pose models: the
detector's ~/<camera>/tracks/masks and tracks/keypoints, perception.ros.masks)
the tracks carry their instance masks and keypoints, drawn as translucent
masks and skeletons; oriented boxes come in the tracks themselves
(BoundingBox2D center.theta) and are drawn rotated.
Optionally (`objects_topic` + `camera_info_topic`) the 3D objects of the
image's stamp (vision_msgs/Detection3DArray, e.g. the fusion node's
~/objects) are drawn as projected boxes through the CameraInfo's model, after
moving them into the optical frame with `T_camera_from_objects`.

What is drawn on which image (stamp matching with `StampSynchronizer` in
matched mode, constant-velocity prediction to the image's stamp in predicted
mode with `use_prediction: true`, trails, 3D objects) is decided by
`perception.core.overlay_pipeline.OverlayCompositor`, whose docstring
describes both modes; this node converts messages, calls it and publishes.

"Tracks at time t" over existing message types: a std_msgs/Header on
`tracks_at.request_topic` (stamp = t) is answered on `tracks_at.response_topic`
with the newest tracks predicted to t (see `prediction_to_msg` for where the
horizon and the position covariance go), or refused with the reason on
`<request_topic>/refused` (std_msgs/String) beyond the horizon cap.

Counters and the current queue sizes go to /diagnostics. Parameters come
from specs/overlay.params.yaml (`perception.config.OverlayParams`).

No message ends the node: every field is range-checked at conversion (rows
out of range are dropped and counted as `rejected.<source>.<kind>`, a stamp
out of range refuses the message), images are refused by their header
before decoding when over `MAX_PIXELS` or not JPEG/PNG, and each callback
has a last-resort guard that counts (`callback_errors`) and logs throttled.

    ros2 run perception overlay_node --ros-args -p image_topic:=/cam/image_raw \
        -p tracks_topic:=/detector/cam/tracks -p use_prediction:=true
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeAlias, TypeVar

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String
from vision_msgs.msg import Detection2DArray, Detection3DArray

from perception.config import OverlayParams
from perception.core.errors import PerceptionError
from perception.core.fusion.sync import StampSynchronizer, SyncedSet
from perception.core.overlay_pipeline import (
    COUNTERS,
    OverlayCompositor,
    OverlayFrame,
    OverlaySettings,
)
from perception.core.prediction import Prediction, PredictionError
from perception.core.types import Detections
from perception.ros.conversions import (
    MessageFieldError,
    detections_to_msg,
    msg_to_detections_rows,
    ns_to_stamp,
    stamp_to_ns,
)
from perception.ros.conversions3d import camera_model_from_info, detection3d_array_to_objects
from perception.ros.images import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    bgr_to_image_msg,
    compressed_to_bgr,
    image_to_bgr,
)
from perception.ros.masks import cloud_to_keypoints, id_image_from_msg, masks_from_id_image
from perception.ros.params import (
    declare_params,
    on_set_validator,
    param_changes,
    specs_of,
    transform_param,
)
from perception.ros.runner import run_node

__all__ = ["COUNTERS", "OverlayNode", "main", "overlay_settings", "prediction_to_msg"]

_THROTTLE_S = 5.0

MAX_PIXELS = DEFAULT_MAX_PIXELS
"""Pixel budget of one camera image (width x height): a larger one is refused
from its header before decoding (counted in decode_errors)."""

ImageMsg: TypeAlias = "Image | CompressedImage"
MsgT = TypeVar("MsgT")


def overlay_settings(p: OverlayParams, transform: np.ndarray | None = None) -> OverlaySettings:
    """The compositor's settings from the node's parameters (`transform`: the
    parsed `T_camera_from_objects`, parsed here when not given)."""
    if transform is None:
        transform = transform_param("T_camera_from_objects", list(p.T_camera_from_objects))
    return OverlaySettings(
        buffer_size=p.buffer_size,
        stamp_tolerance_s=p.stamp_tolerance_ms * 1e-3,
        use_prediction=p.use_prediction,
        max_horizon_s=p.prediction.max_horizon_s,
        past=p.prediction.past,
        show_source=p.prediction.show_source,
        trails=p.trails.enabled,
        trail_points=p.trails.max_points,
        trail_max_age_s=p.trails.max_age_s,
        max_tracks=p.max_tracks,
        max_boxes=p.max_boxes,
        boxes3d=bool(p.objects_topic),
        T_camera_from_objects=transform,
    )


class OverlayNode(Node):
    """Plain rclpy node around `OverlayCompositor`: messages in, annotated images out."""

    def __init__(self, node_name: str = "overlay", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        p = self.params = declare_params(self, OverlayParams)
        self._transform = transform_param("T_camera_from_objects", list(p.T_camera_from_objects))
        self.add_on_set_parameters_callback(on_set_validator(specs_of(OverlayParams)))
        self.add_post_set_parameters_callback(self._on_params_set)
        self._warned: dict[str, float] = {}
        self.core: OverlayCompositor[ImageMsg] = OverlayCompositor(
            overlay_settings(p, self._transform), p.class_names, warn=self._warn
        )
        self._info_key: tuple[Any, ...] = ()

        n = p.buffer_size
        reliability = (
            ReliabilityPolicy.RELIABLE
            if p.image_qos.reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        )
        image_qos = QoSProfile(depth=max(1, n), reliability=reliability)
        qos = QoSProfile(depth=max(10, n), reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.create_publisher(Image, p.output_topic, 2)
        if p.transport == "compressed":
            topic = p.image_topic.rstrip("/") + "/compressed"
            self.sub_image = self.create_subscription(
                CompressedImage, topic, self._guard("image", self._on_image), image_qos
            )
        else:
            self.sub_image = self.create_subscription(
                Image, p.image_topic, self._guard("image", self._on_image), image_qos
            )
        self.sub_tracks = self.create_subscription(
            Detection2DArray, p.tracks_topic, self._guard("tracks", self._on_tracks), qos
        )
        # masks / keypoints of the tracks (segmentation, pose models): each
        # tracks message waits for those of its stamp, then goes to the core
        topics = (("masks", p.masks_topic), ("keypoints", p.keypoints_topic))
        extras = [name for name, topic in topics if topic]
        self._extras: StampSynchronizer | None = None
        if extras:  # half the image buffer: tracks given up on still find their image
            self._extras = StampSynchronizer(
                ("tracks", *extras),
                p.stamp_tolerance_ms * 1e-3,
                max(1, n // 2),
                on_drop=self._on_extras_drop,
            )
        if p.masks_topic:
            self.create_subscription(
                Image, p.masks_topic, self._guard("masks", self._on_extra("masks")), qos
            )
        if p.keypoints_topic:
            self.create_subscription(
                PointCloud2,
                p.keypoints_topic,
                self._guard("keypoints", self._on_extra("keypoints")),
                qos,
            )
        self.sub_objects = self.sub_info = None
        if p.objects_topic:
            self.sub_objects = self.create_subscription(
                Detection3DArray, p.objects_topic, self._guard("objects", self._on_objects), qos
            )
        if p.camera_info_topic:
            self.sub_info = self.create_subscription(
                CameraInfo,
                p.camera_info_topic,
                self._guard("camera_info", self._on_camera_info),
                qos,
            )
        if self.sub_objects is not None and self.sub_info is None:
            self.get_logger().warning(
                "overlay: objects_topic is set but camera_info_topic is empty: 3D boxes "
                "cannot be projected (counted as camera_info_missing)"
            )
        self.pub_answer = self.pub_refused = self.sub_request = None
        if p.tracks_at.request_topic:
            request = p.tracks_at.request_topic
            self.pub_answer = self.create_publisher(
                Detection2DArray, p.tracks_at.response_topic, qos
            )
            self.pub_refused = self.create_publisher(String, request.rstrip("/") + "/refused", qos)
            self.sub_request = self.create_subscription(
                Header, request, self._guard("request", self._on_request), qos
            )
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.diag_timer = self.create_timer(p.diagnostics_period_s, self.publish_diagnostics)
        self.get_logger().info(
            f"overlay: {p.image_topic} ({p.transport}) + {p.tracks_topic} -> "
            f"{self.pub.topic_name}, buffer {n}, prediction {p.use_prediction}"
        )

    @property
    def counters(self) -> dict[str, int]:
        """The compositor's counters (names in COUNTERS)."""
        return self.core.counters

    # ------------------------------------------------------------ parameters
    def _on_params_set(self, params: list[Parameter[Any]]) -> None:
        changes = param_changes(params)
        if changes:
            self.params = self.params.with_flat(changes)
            self.core.update(overlay_settings(self.params, self._transform))

    def _warn(self, kind: str, message: str) -> None:
        """Log a compositor warning, at most once per `_THROTTLE_S` per kind."""
        now = time.monotonic()
        if now - self._warned.get(kind, -math.inf) >= _THROTTLE_S:
            self._warned[kind] = now
            self.get_logger().warning(message)

    def _guard(self, name: str, callback: Callable[[MsgT], None]) -> Callable[[MsgT], None]:
        """`callback` with a last resort: anything it raises is counted
        (callback_errors) and logged throttled instead of ending the node."""

        def guarded(msg: MsgT) -> None:
            try:
                callback(msg)
            except Exception as exc:  # one message must never end the node
                reason = f"{name}: {type(exc).__name__}: {exc}"
                self.core.note_bad_input("callback", reason, name)

        return guarded

    # ------------------------------------------------------------- data path
    def _on_image(self, msg: ImageMsg) -> None:
        try:
            stamp_ns = stamp_to_ns(msg.header.stamp)
        except MessageFieldError as exc:
            self.core.note_bad_input("image", f"({exc.kind}) {exc}", exc.kind)
            return
        self._publish(self.core.add_image(stamp_ns, msg))

    def _on_tracks(self, msg: Detection2DArray) -> None:
        self.core.learn_class_names(
            r.hypothesis.class_id for d in msg.detections for r in d.results
        )
        rejected: dict[str, int] = {}
        try:
            tracks, rows = msg_to_detections_rows(msg, self.core.class_names, rejected=rejected)
        except MessageFieldError as exc:
            self.core.note_bad_input("tracks", f"({exc.kind}) {exc}", exc.kind)
            return
        self.core.note_rejected_rows("tracks", rejected)
        if self._extras is None:
            self._publish(self.core.add_tracks(tracks))
            return
        for synced in self._extras.push("tracks", tracks.stamp_ns, (tracks, rows)):
            self._publish(self.core.add_tracks(self._with_extras(synced)))

    def _on_extra(self, stream: str) -> Callable[[Any], None]:
        """Callback of the masks or keypoints topic: queued by stamp (decoded
        only when matched with its tracks)."""

        def on_msg(msg: Any) -> None:
            try:
                stamp_ns = stamp_to_ns(msg.header.stamp)
            except MessageFieldError as exc:
                self.core.note_bad_input("extras", f"{stream}: ({exc.kind}) {exc}", exc.kind)
                return
            assert self._extras is not None
            for synced in self._extras.push(stream, stamp_ns, msg):
                self._publish(self.core.add_tracks(self._with_extras(synced)))

        return on_msg

    def _with_extras(self, synced: SyncedSet) -> Detections:
        """The tracks with the masks / keypoints of their rows (rows: their
        indices in the tracks message); one that does not decode is counted
        and left out."""
        tracks, rows = synced["tracks"]
        if "masks" in synced.items:
            try:
                ids = id_image_from_msg(synced["masks"], MAX_PIXELS)
                tracks = replace(tracks, masks=masks_from_id_image(ids, rows))
            except (ImageDecodeError, ValueError) as exc:
                self.core.note_bad_input("extras", f"masks: {exc}", "masks")
        if "keypoints" in synced.items:
            try:
                kps = cloud_to_keypoints(synced["keypoints"])
                if rows.size and int(rows.max()) >= kps.shape[0]:
                    raise ValueError(
                        f"{kps.shape[0]} rows of keypoints for {rows.max() + 1} tracks"
                    )
                tracks = replace(tracks, keypoints=kps[rows])
            except ValueError as exc:
                self.core.note_bad_input("extras", f"keypoints: {exc}", "keypoints")
        result: Detections = tracks
        return result

    def _on_extras_drop(self, stream: str, stamp_ns: int, item: Any, reason: str) -> None:
        """Tracks whose masks / keypoints cannot come any more are drawn
        without them (counted); unmatched masks / keypoints are just dropped."""
        if stream == "tracks":
            self.core.note_extras_missing(stamp_ns)
            self._publish(self.core.add_tracks(item[0]))

    def _on_objects(self, msg: Detection3DArray) -> None:
        rejected: dict[str, int] = {}
        try:
            objects = detection3d_array_to_objects(msg, self.core.class_names, rejected)
        except (PerceptionError, ValueError) as exc:
            self.core.note_bad_input("objects", str(exc), getattr(exc, "kind", None))
            return
        self.core.note_rejected_rows("objects", rejected)
        self._publish(self.core.add_objects(objects))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        key = (msg.width, msg.height, msg.distortion_model, tuple(msg.d), tuple(msg.k),
               tuple(msg.r), tuple(msg.p), msg.header.frame_id)  # fmt: skip
        if key == self._info_key:
            return
        try:
            self.core.set_camera(camera_model_from_info(msg))
        except (PerceptionError, ValueError) as exc:
            self.core.note_bad_input("camera_info", str(exc))
            return
        self._info_key = key

    def _on_request(self, msg: Header) -> None:
        """Answer "tracks at time t" with the newest tracks predicted to t."""
        if self.pub_answer is None or self.pub_refused is None:
            return
        try:
            target = stamp_to_ns(msg.stamp)
        except MessageFieldError as exc:
            self.core.note_bad_input("request", str(exc), exc.kind)
            self.pub_refused.publish(String(data=f"tracks at a time refused: {exc}"))
            return
        try:
            pred = self.core.tracks_at(target)
        except PredictionError as exc:
            self.pub_refused.publish(String(data=f"tracks at {target} ns refused: {exc}"))
            return
        self.pub_answer.publish(prediction_to_msg(pred, self.core.class_names))

    def _publish(self, frames: list[OverlayFrame[ImageMsg]]) -> None:
        """Decode, draw and publish each frame with its image's header."""
        for frame in frames:
            msg = frame.image
            try:
                bgr = (
                    compressed_to_bgr(msg, MAX_PIXELS)
                    if isinstance(msg, CompressedImage)
                    else image_to_bgr(msg, MAX_PIXELS)
                )
            except ImageDecodeError as exc:
                self.core.note_bad_input("image", f"({exc.kind}) {exc}", exc.kind)
                continue
            out = self.core.render(frame, bgr)
            if out is not None:
                self.pub.publish(bgr_to_image_msg(out, msg.header))

    # ----------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        st = self.core.status()
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if st.ok else DiagnosticStatus.WARN,
            name=f"{self.get_name()}: overlay",
            message=st.message,
            hardware_id=self.params.image_topic,
            values=[KeyValue(key=k, value=v) for k, v in st.values.items()],
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
