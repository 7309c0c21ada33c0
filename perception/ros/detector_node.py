"""The detector node: a ROS driver of the pipeline's `DetectionStage`.

Camera callbacks only hand the newest message of their camera to the stage
(decoding is deferred: frames replaced before the engine is free are never
decoded). A worker thread steps the stage (one engine call over the newest
frame of every camera, 2D tracking) and publishes per camera:

- ``~/<camera>/detections``  vision_msgs/Detection2DArray (input stamp and
  frame_id, boxes in original pixels)
- ``~/<camera>/tracks``      the same with the track id in `Detection2D.id`
  (with `tracking: true`)
- ``~/<camera>/overlay``     sensor_msgs/Image, only while subscribed
- ``~/<camera>/latency``     std_msgs/Float64MultiArray, one per frame
  (`LATENCY_FIELDS`)
- ``~/label_info``           vision_msgs/LabelInfo (transient local)
- ``/diagnostics``           diagnostic_msgs/DiagnosticArray

`DetectorNode` is the plain node, `DetectorLifecycleNode` the managed one
(configure loads the engine and creates the lifecycle publishers, activate
subscribes, deactivate/cleanup release). Parameters: specs/detector.params.yaml
and the tracker section of specs/tracker.params.yaml.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension
from vision_msgs.msg import Detection2DArray, LabelInfo

from perception.config.generated import CameraParams, DetectorParams, TrackerParams
from perception.core.errors import PerceptionError
from perception.pipeline import (
    LATENCY_FIELDS,
    STAGES,
    CameraFrame,
    CameraResult,
    DetectionStage,
    ThrottledLog,
    build_detector,
)
from perception.pipeline.status import detection_statuses
from perception.ros.conversions import detections_to_msg, label_info_msg
from perception.ros.diagnostics import diagnostic_array
from perception.ros.images import bgr_to_image_msg, compressed_to_bgr, image_to_bgr
from perception.ros.params import ParameterError, declare_params, on_set_validator, specs_of
from perception.ros.runner import run_node

__all__ = ["LATENCY_FIELDS", "DetectorLifecycleNode", "DetectorNode", "main"]

TRACKER_PREFIX = "tracker."

_LATENCY_LAYOUT = Float64MultiArray().layout
_LATENCY_LAYOUT.dim = [
    MultiArrayDimension(label=",".join(LATENCY_FIELDS), size=len(LATENCY_FIELDS), stride=1)
]


@dataclass
class _CameraIO:
    """One camera's subscriptions and publishers."""

    name: str
    cfg: CameraParams
    sub: Any = None
    info_sub: Any = None
    info_received: bool = False
    pub_det: Any = None
    pub_tracks: Any = None
    pub_overlay: Any = None
    pub_latency: Any = None


class DetectorDriver:
    """What the plain and the lifecycle node share: parameters, I/O, the worker."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.log = ThrottledLog(node.get_logger())
        self.params = declare_params(node, DetectorParams)
        names = list(self.params.camera_names)
        if not names:
            raise ParameterError(
                "camera_names: expected at least one camera name (and cameras.<name>.topic)"
            )
        if len(set(names)) != len(names):
            raise ParameterError(f"camera_names: expected unique names, got {names}")
        self.cameras: dict[str, _CameraIO] = {}
        errors: list[str] = []
        full_specs = dict(specs_of(DetectorParams))
        for name in names:
            prefix = f"cameras.{name}."
            try:
                cfg = declare_params(node, CameraParams, prefix)
            except ParameterError as exc:
                errors.append(str(exc))
                continue
            if not cfg.topic:
                errors.append(f"{prefix}topic: expected an image topic, got ''")
            self.cameras[name] = _CameraIO(name, cfg)
            full_specs.update({prefix + k: v for k, v in specs_of(CameraParams).items()})
        if errors:
            raise ParameterError("; ".join(errors))
        self.tracker_params = declare_params(node, TrackerParams, TRACKER_PREFIX)
        full_specs.update({TRACKER_PREFIX + k: v for k, v in specs_of(TrackerParams).items()})
        node.add_on_set_parameters_callback(on_set_validator(full_specs))
        node.add_on_set_parameters_callback(self._check_tracker_params)
        node.add_post_set_parameters_callback(self._on_params_set)
        self.stage: DetectionStage | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self.pub_label: Any = None
        self.pub_diag: Any = None
        self.diag_timer: Any = None

    # ----------------------------------------------------------- parameters
    @staticmethod
    def _changes(params: list[Any], prefix: str = "") -> dict[str, Any]:
        return {p.name[len(prefix) :]: p.value for p in params if p.name.startswith(prefix)}

    def _check_tracker_params(self, params: list[Any]) -> SetParametersResult:
        """Refuse tracker.* values the tracker itself would refuse (cross-field rules)."""
        changes = self._changes(params, TRACKER_PREFIX)
        if changes:
            try:
                self.tracker_params.with_flat(changes, TRACKER_PREFIX).to_config()
            except ValueError as exc:
                reason = str(exc)
                if not reason.startswith(TRACKER_PREFIX):
                    reason = TRACKER_PREFIX + reason
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _on_params_set(self, params: list[Any]) -> None:
        own = {k: v for k, v in self._changes(params).items() if "." not in k}
        if own:
            self.params = self.params.with_flat(own)
        changes = self._changes(params, TRACKER_PREFIX)
        if changes:
            self.tracker_params = self.tracker_params.with_flat(changes, TRACKER_PREFIX)
            if self.stage is not None and self.stage.tracking:
                self.stage.set_tracker_config(self.tracker_params.to_config())
        if self.stage is not None:
            p = self.params
            self.stage.max_age_ms = p.max_age_ms
            self.stage.detector.set_thresholds(
                conf=p.score_threshold, iou=p.iou_threshold, max_det=p.max_detections
            )

    # ------------------------------------------------------------ lifecycle
    def load_engine(self) -> None:
        """Create the engine, detector and stage (may take long: a configure step)."""
        p = self.params
        detector = build_detector(
            p.model,
            score_threshold=p.score_threshold,
            iou_threshold=p.iou_threshold,
            max_detections=p.max_detections,
            on_progress=lambda s: self.node.get_logger().info(
                f"engine build: {s}", throttle_duration_sec=2.0
            ),
        )
        self.stage = DetectionStage(
            detector,
            self.cameras,
            tracker=self.tracker_params.to_config() if p.tracking else None,
            max_age_ms=p.max_age_ms,
            log=self.log,
        )
        facts = self.stage.describe()
        self.log.info(
            f"engine {facts['engine']} ({facts['runtime']} on {facts['device']}), family "
            f"{facts['family']}, {facts['classes']} classes, {len(self.cameras)} camera(s), "
            f"pixel input {facts['pixel_input']}"
        )

    def create_publishers(self) -> None:
        make = getattr(self.node, "create_lifecycle_publisher", self.node.create_publisher)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            history=HistoryPolicy.KEEP_LAST,
        )
        self.pub_label = make(LabelInfo, "~/label_info", latched)
        self.pub_diag = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        out_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        # Reliable overlay, depth 1: matches reliable and best-effort viewers, never queues.
        overlay_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        for cam in self.cameras.values():
            base = f"~/{cam.name}"
            cam.pub_det = make(Detection2DArray, f"{base}/detections", out_qos)
            cam.pub_overlay = make(Image, f"{base}/overlay", overlay_qos)
            cam.pub_latency = make(Float64MultiArray, f"{base}/latency", out_qos)
            if self.params.tracking:
                cam.pub_tracks = make(Detection2DArray, f"{base}/tracks", out_qos)

    def publish_label_info(self) -> None:
        if self.stage is not None and self.pub_label is not None:
            self.pub_label.publish(
                label_info_msg(
                    self.stage.detector.class_names,
                    threshold=self.params.score_threshold,
                    header=Header(stamp=self.node.get_clock().now().to_msg()),
                )
            )

    def start(self) -> None:
        """Subscribe to every camera and start the worker thread."""
        for cam in self.cameras.values():
            self._subscribe(cam)
        self._stop.clear()
        self._worker = threading.Thread(target=self._loop, name="detector", daemon=True)
        self._worker.start()
        self.diag_timer = self.node.create_timer(
            self.params.diagnostics_period_s, self.publish_diagnostics
        )

    def stop(self) -> None:
        """Unsubscribe and stop the worker (publishers stay)."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        for cam in self.cameras.values():
            for attr in ("sub", "info_sub"):
                if getattr(cam, attr) is not None:
                    self.node.destroy_subscription(getattr(cam, attr))
                    setattr(cam, attr, None)
        if self.diag_timer is not None:
            self.node.destroy_timer(self.diag_timer)
            self.diag_timer = None

    def release(self) -> None:
        """Destroy publishers and close the engine."""
        owners: list[tuple[Any, tuple[str, ...]]] = [
            (c, ("pub_det", "pub_overlay", "pub_latency", "pub_tracks"))
            for c in self.cameras.values()
        ]
        for owner, attrs in [*owners, (self, ("pub_label", "pub_diag"))]:
            for attr in attrs:
                if getattr(owner, attr) is not None:
                    self.node.destroy_publisher(getattr(owner, attr))
                    setattr(owner, attr, None)
        if self.stage is not None:
            self.stage.detector.engine.close()
        self.stage = None

    # ---------------------------------------------------------------- input
    def _subscribe(self, cam: _CameraIO) -> None:
        compressed = cam.cfg.transport == "compressed"
        topic = cam.cfg.topic.rstrip("/") + ("/compressed" if compressed else "")
        msg_type = CompressedImage if compressed else Image
        reliable = cam.cfg.qos.reliability == "reliable"
        qos = QoSProfile(
            depth=cam.cfg.qos.depth,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.VOLATILE,
        )
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info, c=cam, t=topic: self._on_incompatible_qos(c, t, info)
        )
        cam.sub = self.node.create_subscription(
            msg_type, topic, lambda msg, c=cam: self._on_image(c, msg), qos, event_callbacks=events
        )
        if cam.cfg.camera_info_topic:
            cam.info_sub = self.node.create_subscription(
                CameraInfo,
                cam.cfg.camera_info_topic,
                lambda _msg, c=cam: setattr(c, "info_received", True),
                qos_profile_sensor_data,
            )
        kind = f"{msg_type.__name__}, {cam.cfg.qos.reliability}"
        self.log.info(f"camera {cam.name}: {topic} ({kind})")

    def _on_incompatible_qos(self, cam: _CameraIO, topic: str, info: Any) -> None:
        other = "reliable" if cam.cfg.qos.reliability == "best_effort" else "best_effort"
        self.stage_or_raise().count_error(
            cam.name,
            "incompatible_qos",
            f"a publisher on {topic} offers QoS incompatible with this subscription (policy "
            f"id {getattr(info, 'last_policy_kind', '?')}, {getattr(info, 'total_count', '?')} "
            f"so far). Fix: set cameras.{cam.name}.qos.reliability to match the publisher "
            f"(e.g. {other}), or make the publisher reliable",
            reject=False,
        )

    def stage_or_raise(self) -> DetectionStage:
        if self.stage is None:
            raise PerceptionError("the detector is not configured")
        return self.stage

    def _on_image(self, cam: _CameraIO, msg: Image | CompressedImage) -> None:
        """Executor callback: hand the message to the stage, decoding deferred."""
        stage = self.stage_or_raise()
        decode = compressed_to_bgr if isinstance(msg, CompressedImage) else image_to_bgr
        stage.submit(
            CameraFrame(
                camera=cam.name,
                image=lambda m=msg: decode(m),
                stamp_ns=msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                frame_id=cam.cfg.frame_id or msg.header.frame_id,
                receive_ns=time.monotonic_ns(),
                receive_clock_ns=self.node.get_clock().now().nanoseconds,
            )
        )
        if cam.cfg.camera_info_topic and not cam.info_received:
            stage.count_error(
                cam.name,
                "camera_info_missing",
                f"no CameraInfo on {cam.cfg.camera_info_topic} yet; 2D detection continues, "
                "3D consumers will lack intrinsics",
                reject=False,
            )

    # --------------------------------------------------------------- worker
    def _loop(self) -> None:
        stage = self.stage_or_raise()
        while not self._stop.is_set():
            if stage.wait(0.1):
                self.publish(stage.step(time.monotonic_ns()))

    def publish(self, results: list[CameraResult]) -> None:
        """Convert the stage's results to messages and publish them."""
        stage = self.stage_or_raise()
        names, fmt = stage.detector.class_names, self.params.class_format
        for r in results:
            cam = self.cameras[r.camera]
            msg = detections_to_msg(r.detections, names, fmt)
            cam.pub_det.publish(msg)
            if r.tracks is not None and cam.pub_tracks is not None:
                cam.pub_tracks.publish(detections_to_msg(r.tracks, names, fmt, msg.header))
            row = dict(r.latency)
            row["publish_ms"] = max((time.monotonic_ns() - r.taken_ns) * 1e-6 - r.engine_ms, 0.0)
            now = self.node.get_clock().now().nanoseconds
            row["capture_to_publish_ms"] = (now - r.stamp_ns) * 1e-6
            stage.record_latency(r.camera, row)
            cam.pub_latency.publish(
                Float64MultiArray(
                    layout=_LATENCY_LAYOUT, data=[r.stamp_ns * 1e-9, *(row[k] for k in STAGES)]
                )
            )
            if self.params.overlay and cam.pub_overlay.get_subscription_count() > 0:
                from perception.core.drawing import draw_detections

                shown = r.tracks if r.tracks is not None else r.detections
                image = draw_detections(r.image, shown, names)
                cam.pub_overlay.publish(bgr_to_image_msg(image, msg.header))

    def publish_diagnostics(self) -> None:
        if self.pub_diag is None or self.stage is None:
            return
        statuses = detection_statuses(
            self.stage,
            self.node.get_fully_qualified_name(),
            {c.name: c.cfg.topic for c in self.cameras.values()},
        )
        self.pub_diag.publish(diagnostic_array(statuses, self.node.get_clock().now().to_msg()))


class DetectorNode(Node):
    """Plain node: loads the engine and subscribes at construction."""

    def __init__(self, node_name: str = "detector", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.pipeline = DetectorDriver(self)
        self.pipeline.load_engine()
        self.pipeline.create_publishers()
        self.pipeline.publish_label_info()
        self.pipeline.start()

    def destroy_node(self) -> None:
        self.pipeline.stop()
        self.pipeline.release()
        super().destroy_node()


class DetectorLifecycleNode(LifecycleNode):
    """Managed node: configure loads the engine and creates lifecycle
    publishers, activate subscribes."""

    def __init__(self, node_name: str = "detector", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.pipeline = DetectorDriver(self)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.pipeline.load_engine()
        except (PerceptionError, ValueError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.pipeline.create_publishers()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # activates the lifecycle publishers
        self.pipeline.publish_label_info()
        self.pipeline.start()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.stop()
        self.pipeline.release()
        return TransitionCallbackReturn.SUCCESS


def main(argv: list[str] | None = None) -> int:
    """Entry point of the plain detector node."""
    return run_node(DetectorNode, argv, name="detector")


def lifecycle_main(argv: list[str] | None = None) -> int:
    """Entry point of the lifecycle detector node."""
    return run_node(DetectorLifecycleNode, argv, name="detector")


if __name__ == "__main__":
    sys.exit(main())
