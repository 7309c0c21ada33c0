"""The detector node: many cameras, one engine, the newest frames only.

Camera callbacks only store the newest message of their camera (no decoding,
no queue). A worker thread takes the newest frame of every camera at once,
decodes them, runs ONE engine call over the batch, splits the results back
and publishes per camera:

- ``~/<camera>/detections``  vision_msgs/Detection2DArray (input stamp and
  frame_id, boxes in original pixels)
- ``~/<camera>/overlay``     sensor_msgs/Image, only while subscribed
- ``~/<camera>/latency``     std_msgs/Float64MultiArray, one per frame:
  capture stamp -> receive -> preprocess -> inference -> postprocess -> publish
- ``~/label_info``           vision_msgs/LabelInfo (transient local)
- ``/diagnostics``           diagnostic_msgs/DiagnosticArray

A bad frame (encoding, size, truncated data, corrupt JPEG) is counted per
kind, logged throttled, and the other cameras keep being served.
`DetectorNode` is the plain node, `DetectorLifecycleNode` the managed one
(configure loads the engine, activate subscribes, deactivate/cleanup release).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
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

from perception.core.errors import PerceptionError
from perception.core.frames import Frame, LatestFrameSlots
from perception.core.stats import LatencyStats, RateMeter
from perception.core.types import Detections
from perception.ros.conversions import detections_to_msg, label_info_msg
from perception.ros.images import (
    ImageDecodeError,
    bgr_to_image_msg,
    compressed_to_bgr,
    image_to_bgr,
)
from perception.ros.params import ParameterError, declare_from_spec, load_spec, on_set_validator
from perception.ros.runner import run_node

__all__ = ["LATENCY_FIELDS", "DetectorLifecycleNode", "DetectorNode", "main"]

LATENCY_FIELDS = (
    "stamp_s",
    "capture_to_receive_ms",
    "queue_ms",
    "preprocess_ms",
    "inference_ms",
    "postprocess_ms",
    "publish_ms",
    "capture_to_publish_ms",
)
"""Element order of the ~/<camera>/latency Float64MultiArray (also in its layout labels)."""

_STAGES = LATENCY_FIELDS[1:]
TRACKER_PREFIX = "tracker."
_THROTTLE_S = 5.0


@dataclass
class _Camera:
    name: str
    cfg: dict[str, Any]
    pub_det: Any = None
    pub_overlay: Any = None
    pub_latency: Any = None
    pub_tracks: Any = None
    sub: Any = None
    info_sub: Any = None
    info_received: bool = False
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rate: RateMeter = field(default_factory=RateMeter)
    last_output_ns: int = 0


class DetectorPipeline:
    """What the plain and the lifecycle node share; owns no ROS node itself."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.log = node.get_logger()
        spec = load_spec("detector")
        self.node_specs = spec["node"]
        self.camera_specs = spec["camera"]
        self.params = declare_from_spec(node, self.node_specs)
        if not self.params["camera_names"]:
            raise ParameterError(
                "camera_names: expected at least one camera name (and cameras.<name>.topic)"
            )
        full_specs = dict(self.node_specs)
        self.cameras: dict[str, _Camera] = {}
        errors = []
        for name in self.params["camera_names"]:
            prefix = f"cameras.{name}."
            try:
                cfg = declare_from_spec(node, self.camera_specs, prefix)
            except ParameterError as exc:
                errors.append(str(exc))
                continue
            if not cfg["topic"]:
                errors.append(f"{prefix}topic: expected an image topic, got ''")
            self.cameras[name] = _Camera(name, cfg)
            full_specs.update({prefix + k: v for k, v in self.camera_specs.items()})
        if len(set(self.params["camera_names"])) != len(self.params["camera_names"]):
            errors.append(f"camera_names: expected unique names, got {self.params['camera_names']}")
        if errors:
            raise ParameterError("; ".join(errors))
        from perception.core.tracking import MultiCameraTracker, TrackerConfig
        from perception.ros.tracker_node import tracker_param_specs

        tracker_specs = tracker_param_specs()
        try:
            self.tracker_config = TrackerConfig(
                **declare_from_spec(node, tracker_specs, TRACKER_PREFIX)
            )
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
        full_specs.update({TRACKER_PREFIX + k: v for k, v in tracker_specs.items()})
        self.tracker = MultiCameraTracker(self.tracker_config) if self.params["tracking"] else None
        node.add_on_set_parameters_callback(on_set_validator(full_specs))
        node.add_on_set_parameters_callback(self._check_tracker_params)
        node.add_post_set_parameters_callback(self._on_params_set)

        self.detector: Any = None
        self.engine: Any = None
        self.slots = LatestFrameSlots(self.cameras)
        self.latency = {c: LatencyStats(_STAGES) for c in self.cameras}
        self.pipeline_errors = 0
        self.batches = 0
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self.pub_label: Any = None
        self.pub_diag: Any = None
        self.diag_timer: Any = None

    # ----------------------------------------------------------- parameters
    def _tracker_changes(self, params: list[Any]) -> dict[str, Any]:
        return {
            p.name[len(TRACKER_PREFIX) :]: p.value
            for p in params
            if p.name.startswith(TRACKER_PREFIX)
        }

    def _check_tracker_params(self, params: list[Any]) -> SetParametersResult:
        """Refuse tracker.* values the tracker itself would refuse (cross-field rules)."""
        changes = self._tracker_changes(params)
        if changes:
            try:
                self.tracker_config.replace(**changes)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=f"tracker.{exc}")
        return SetParametersResult(successful=True)

    def _on_params_set(self, params: list[Any]) -> None:
        for p in params:
            if p.name in self.params:
                self.params[p.name] = p.value
        changes = self._tracker_changes(params)
        if changes:
            self.tracker_config = self.tracker_config.replace(**changes)
            if self.tracker is not None:
                self.tracker.set_config(self.tracker_config)
        if self.detector is not None:
            self._apply_thresholds()

    def _apply_thresholds(self) -> None:
        self.detector.set_thresholds(
            conf=float(self.params["score_threshold"]),
            iou=float(self.params["iou_threshold"]),
            max_det=int(self.params["max_detections"]),
        )

    # ------------------------------------------------------------ lifecycle
    def load_engine(self) -> None:
        """Create the engine and the detector (may take long: a configure step)."""
        from perception.core.detector import Detector
        from perception.core.engines.config import EngineConfig
        from perception.core.engines.factory import create_engine

        p = self.params
        if not p["model.path"]:
            raise ParameterError("model.path: expected a model file, got ''")
        config = EngineConfig.from_mapping(
            {
                "model_path": p["model.path"],
                "runtime": p["model.runtime"],
                "device": p["model.device"],
                "precision": p["model.precision"],
                "cache_dir": p["model.cache_dir"],
                "fallback": p["model.fallback_runtime"],
                "fallback_model_path": p["model.fallback_model_path"],
                "build_input_shape": p["model.build_input_shape"],
                "threads": p["model.threads"],
                "graph_rewrites": p["model.graph_rewrites"],
            }
        )
        self.engine = create_engine(config, on_progress=self._on_build_progress)
        self.detector = Detector(
            self.engine,
            family=p["model.family"],
            conf=float(p["score_threshold"]),
            iou=float(p["iou_threshold"]),
            max_det=int(p["max_detections"]),
            labels_file=p["model.labels_file"] or None,
            pixel_input=p["model.pixel_input"],
        )
        self.log.info(
            f"engine {self.engine.info.name} ({self.engine.info.runtime} on "
            f"{self.engine.info.device}), family {self.detector.family}, "
            f"{len(self.detector.class_names)} classes, {len(self.cameras)} camera(s), "
            + (
                "pixel input (scale folded into the model)"
                if self.detector.preprocessor.pixels
                else f"float input ({self.detector.pixel_input_reason})"
            )
            + (
                f", {n} graph rewrite(s)"
                if (n := getattr(self.engine, "graph_rewrites", 0))
                else ""
            )
        )

    def _on_build_progress(self, status: Any) -> None:
        self.log.info(f"engine build: {status}", throttle_duration_sec=2.0)

    def create_publishers(self) -> None:
        node = self.node
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            history=HistoryPolicy.KEEP_LAST,
        )
        self.pub_label = node.create_publisher(LabelInfo, "~/label_info", latched)
        self.pub_diag = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        out_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        overlay_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        for cam in self.cameras.values():
            base = f"~/{cam.name}"
            cam.pub_det = node.create_publisher(Detection2DArray, f"{base}/detections", out_qos)
            # Reliable publisher: matches both reliable (RViz default) and
            # best-effort subscribers; depth 1 so a slow viewer never queues frames.
            cam.pub_overlay = node.create_publisher(Image, f"{base}/overlay", overlay_qos)
            cam.pub_latency = node.create_publisher(Float64MultiArray, f"{base}/latency", out_qos)
            if self.tracker is not None:
                cam.pub_tracks = node.create_publisher(Detection2DArray, f"{base}/tracks", out_qos)

    def publish_label_info(self) -> None:
        if self.detector is not None and self.pub_label is not None:
            self.pub_label.publish(
                label_info_msg(
                    self.detector.class_names,
                    threshold=float(self.params["score_threshold"]),
                    header=Header(stamp=self.node.get_clock().now().to_msg()),
                )
            )

    def start(self) -> None:
        """Subscribe to every camera and start the inference thread."""
        for cam in self.cameras.values():
            self._subscribe(cam)
        self._stop.clear()
        self._worker = threading.Thread(target=self._loop, name="detector", daemon=True)
        self._worker.start()
        self.diag_timer = self.node.create_timer(
            float(self.params["diagnostics_period_s"]), self.publish_diagnostics
        )

    def stop(self) -> None:
        """Unsubscribe and stop the inference thread (publishers stay)."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        for cam in self.cameras.values():
            for attr in ("sub", "info_sub"):
                sub = getattr(cam, attr)
                if sub is not None:
                    self.node.destroy_subscription(sub)
                    setattr(cam, attr, None)
        if self.diag_timer is not None:
            self.node.destroy_timer(self.diag_timer)
            self.diag_timer = None

    def release(self) -> None:
        """Destroy publishers and close the engine."""
        for cam in self.cameras.values():
            for attr in ("pub_det", "pub_overlay", "pub_latency", "pub_tracks"):
                pub = getattr(cam, attr)
                if pub is not None:
                    self.node.destroy_publisher(pub)
                    setattr(cam, attr, None)
        for attr in ("pub_label", "pub_diag"):
            pub = getattr(self, attr)
            if pub is not None:
                self.node.destroy_publisher(pub)
                setattr(self, attr, None)
        if self.engine is not None:
            self.engine.close()
        self.engine = None
        self.detector = None

    # ---------------------------------------------------------------- input
    def _qos(self, cam: _Camera) -> QoSProfile:
        reliable = cam.cfg["qos.reliability"] == "reliable"
        return QoSProfile(
            depth=int(cam.cfg["qos.depth"]),
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.VOLATILE,
        )

    def _subscribe(self, cam: _Camera) -> None:
        compressed = cam.cfg["transport"] == "compressed"
        topic = cam.cfg["topic"].rstrip("/") + ("/compressed" if compressed else "")
        msg_type = CompressedImage if compressed else Image
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info, cam=cam, topic=topic: self._on_incompatible_qos(
                cam, topic, info
            )
        )
        cam.sub = self.node.create_subscription(
            msg_type,
            topic,
            lambda msg, cam=cam: self._on_image(cam, msg),
            self._qos(cam),
            event_callbacks=events,
        )
        if cam.cfg["camera_info_topic"]:
            cam.info_sub = self.node.create_subscription(
                CameraInfo,
                cam.cfg["camera_info_topic"],
                lambda _msg, cam=cam: setattr(cam, "info_received", True),
                qos_profile_sensor_data,
            )
        self.log.info(
            f"camera {cam.name}: {topic} ({msg_type.__name__}, {cam.cfg['qos.reliability']})"
        )

    def _on_incompatible_qos(self, cam: _Camera, topic: str, info: Any) -> None:
        cam.errors["incompatible_qos"] += 1
        other = "reliable" if cam.cfg["qos.reliability"] == "best_effort" else "best_effort"
        self.log.error(
            f"camera {cam.name}: a publisher on {topic} offers QoS incompatible with this "
            f"subscription (policy id {getattr(info, 'last_policy_kind', '?')}, "
            f"{getattr(info, 'total_count', '?')} so far). Fix: set "
            f"cameras.{cam.name}.qos.reliability to match the publisher (e.g. {other}), "
            "or make the publisher reliable",
            throttle_duration_sec=_THROTTLE_S,
        )

    def _on_image(self, cam: _Camera, msg: Any) -> None:
        """Executor callback: store the message, nothing else (decoding happens
        in the worker and only for frames that will be used)."""
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        frame = Frame(
            camera=cam.name,
            image=msg,
            stamp_ns=stamp,
            receive_ns=time.monotonic_ns(),
            frame_id=cam.cfg["frame_id"] or msg.header.frame_id,
            meta={"receive_ros_ns": self.node.get_clock().now().nanoseconds},
        )
        if self.slots.put(frame):
            self.log.warning(
                f"camera {cam.name}: stamp went backwards (simulator reset or bag loop?); "
                "continuing with the new time line",
                throttle_duration_sec=_THROTTLE_S,
            )
        if cam.cfg["camera_info_topic"] and not cam.info_received:
            cam.errors["camera_info_missing"] += 1
            self.log.warning(
                f"camera {cam.name}: no CameraInfo on {cam.cfg['camera_info_topic']} yet; "
                "2D detection continues, 3D consumers will lack intrinsics",
                throttle_duration_sec=_THROTTLE_S,
            )

    # --------------------------------------------------------------- worker
    def _decode(self, frame: Frame) -> np.ndarray | None:
        cam = self.cameras[frame.camera]
        try:
            if isinstance(frame.image, CompressedImage):
                return compressed_to_bgr(frame.image)
            return image_to_bgr(frame.image)
        except ImageDecodeError as exc:
            cam.errors[exc.kind] += 1
            self.slots.reject(frame.camera)
            self.log.warning(
                f"camera {cam.name}: dropped frame ({exc.kind}): {exc}",
                throttle_duration_sec=_THROTTLE_S,
            )
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.slots.wait(0.1):
                continue
            max_age = float(self.params["max_age_ms"])
            frames = self.slots.take_fresh(
                time.monotonic_ns(), int(max_age * 1e6) if max_age > 0 else None
            )
            try:
                self.process(frames)
            except PerceptionError as exc:
                self.pipeline_errors += 1
                self.log.error(f"batch failed: {exc}", throttle_duration_sec=_THROTTLE_S)
            except Exception as exc:  # a bug must not kill the node's only worker
                self.pipeline_errors += 1
                self.log.error(
                    f"batch failed unexpectedly: {type(exc).__name__}: {exc}",
                    throttle_duration_sec=_THROTTLE_S,
                )

    def process(self, frames: list[Frame]) -> list[Detections]:
        """Decode, detect as one batch, publish per camera."""
        t_take = time.monotonic_ns()
        images, used = [], []
        for f in frames:
            img = self._decode(f)
            if img is not None:
                images.append(img)
                used.append(f)
        if not used:
            return []
        results = self.detector.detect(
            images, [f.stamp_ns for f in used], [f.frame_id for f in used]
        )
        self.batches += 1
        timing = self.detector.last_timings
        names = self.detector.class_names
        class_format = self.params["class_format"]
        for f, det in zip(used, results, strict=True):
            cam = self.cameras[f.camera]
            msg = detections_to_msg(det, names, class_format)
            cam.pub_det.publish(msg)
            if self.tracker is not None:
                det = self.tracker.update(det)  # rejects bad rows/stamps before any state change
                cam.pub_tracks.publish(detections_to_msg(det, names, class_format, msg.header))
            now_ros = self.node.get_clock().now().nanoseconds
            publish_ms = (time.monotonic_ns() - t_take) * 1e-6 - timing.total_ms
            cam.rate.tick(time.monotonic_ns())
            row = {
                "capture_to_receive_ms": (f.meta["receive_ros_ns"] - f.stamp_ns) * 1e-6,
                "queue_ms": (t_take - f.receive_ns) * 1e-6,
                "preprocess_ms": timing.preprocess_ms,
                "inference_ms": timing.inference_ms,
                "postprocess_ms": timing.postprocess_ms,
                "publish_ms": max(publish_ms, 0.0),
                "capture_to_publish_ms": (now_ros - f.stamp_ns) * 1e-6,
            }
            self.latency[cam.name].add_many(row)
            cam.pub_latency.publish(
                Float64MultiArray(
                    layout=_LATENCY_LAYOUT,
                    data=[f.stamp_ns * 1e-9, *(row[k] for k in _STAGES)],
                )
            )
            if self.params["overlay"] and cam.pub_overlay.get_subscription_count() > 0:
                from perception.core.drawing import draw_detections

                overlay = draw_detections(images[used.index(f)], det, names)
                cam.pub_overlay.publish(bgr_to_image_msg(overlay, msg.header))
        return results

    # ----------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        if self.pub_diag is None:
            return
        node_name = self.node.get_fully_qualified_name()
        counters = self.slots.snapshot()
        now = self.node.get_clock().now()
        statuses = []
        for cam in self.cameras.values():
            c = counters[cam.name]
            values = {
                "rate_hz": f"{cam.rate.rate_hz(time.monotonic_ns()):.2f}",
                **{k: str(v) for k, v in c.items()},
                **{f"error.{k}": str(v) for k, v in sorted(cam.errors.items())},
            }
            for stage, pct in self.latency[cam.name].percentiles((50, 95)).items():
                values[f"{stage}.p50"] = f"{pct['p50']:.2f}"
                values[f"{stage}.p95"] = f"{pct['p95']:.2f}"
            problems = c["rejected"] + cam.errors.get("incompatible_qos", 0)
            level = (
                DiagnosticStatus.WARN if problems or c["processed"] == 0 else DiagnosticStatus.OK
            )
            message = (
                "no frames yet"
                if c["received"] == 0
                else f"{c['processed']} processed, {c['skipped']} skipped, {c['stale']} stale, "
                f"{c['rejected']} rejected"
            )
            statuses.append(
                DiagnosticStatus(
                    level=level,
                    name=f"{node_name}: camera {cam.name}",
                    message=message,
                    hardware_id=cam.cfg["topic"],
                    values=[KeyValue(key=k, value=v) for k, v in values.items()],
                )
            )
        engine_values = {"batches": str(self.batches), "errors": str(self.pipeline_errors)}
        if self.engine is not None:
            info = self.engine.info
            engine_values.update(
                engine=info.name, runtime=info.runtime, device=info.device,
                precision=info.precision, family=str(self.detector.family),
                classes=str(len(self.detector.class_names)),
            )  # fmt: skip
            status = getattr(self.engine, "status", None)  # CachedEngine: background build
            if status is not None:
                engine_values.update({
                    "build.stage": status.stage, "build.fraction": f"{status.fraction:.2f}",
                    "build.serving": status.serving, "build.message": status.message,
                    "build.error": status.error or "",
                })  # fmt: skip
        statuses.append(
            DiagnosticStatus(
                level=DiagnosticStatus.WARN if self.pipeline_errors else DiagnosticStatus.OK,
                name=f"{node_name}: engine",
                message=engine_values.get("engine", "not loaded"),
                hardware_id=engine_values.get("device", ""),
                values=[KeyValue(key=k, value=v) for k, v in engine_values.items()],
            )
        )
        self.pub_diag.publish(DiagnosticArray(header=Header(stamp=now.to_msg()), status=statuses))


_LATENCY_LAYOUT = Float64MultiArray().layout
_LATENCY_LAYOUT.dim = [
    MultiArrayDimension(label=",".join(LATENCY_FIELDS), size=len(LATENCY_FIELDS), stride=1)
]


class DetectorNode(Node):
    """Plain node: loads the engine and subscribes at construction."""

    def __init__(self, node_name: str = "detector", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.pipeline = DetectorPipeline(self)
        self.pipeline.load_engine()
        self.pipeline.create_publishers()
        self.pipeline.publish_label_info()
        self.pipeline.start()

    def destroy_node(self) -> None:
        self.pipeline.stop()
        self.pipeline.release()
        super().destroy_node()


class DetectorLifecycleNode(LifecycleNode):
    """Managed node: configure loads the engine, activate subscribes."""

    def __init__(self, node_name: str = "detector", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.pipeline = DetectorPipeline(self)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.pipeline.load_engine()
        except (PerceptionError, ValueError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.pipeline.create_publishers()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
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
