"""The detector node: a ROS driver of the pipeline's `DetectionStage`.

Camera subscriptions are raw and pulled (perception.ros.pulled): no executor
runs them; the worker thread takes the newest serialized sample of each
camera when it is ready for a batch, and the middleware's keep-last queue
replaces the frames it has no time for (counted as skipped from the
publisher's sequence numbers), so an unwanted frame costs neither an
executor wake-up, a take, a deserialisation nor a decode. Of a taken sample
only the header is read (`perception.core.cdr`) until the engine uses it;
then its pixels are a zero-copy view of the bytes, within the camera's pixel
budget. Malformed bytes are counted against their camera (error.cdr,
error.stamp ...), never raised. The worker steps the stage (one engine call
over the newest frame of every camera, each camera once per batch, 2D
tracking) and publishes per camera ``~/<camera>/detections`` and
``~/<camera>/tracks`` (vision_msgs/Detection2DArray: input stamp and frame_id,
original pixels, track id in `id`, an oriented box's angle in
`bbox.center.theta`), for segmentation / pose models
``~/<camera>/{detections,tracks}/masks`` (mono16 instance-id image, value
i + 1 = row i of that array) / ``.../keypoints`` (PointCloud2, row i = row i;
see perception.ros.masks), ``~/<camera>/overlay`` (these only while
subscribed), ``~/<camera>/latency`` (`LATENCY_FIELDS`), plus ``~/label_info``
(latched) and /diagnostics. `DetectorLifecycleNode` is the managed variant.
Parameters: specs/detector.params.yaml and specs/tracker.params.yaml (tracker).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float64MultiArray, Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from perception.config.generated import CameraParams, DetectorParams, TrackerParams
from perception.config.names import check_camera_names
from perception.core import cdr
from perception.core.errors import InputImageError, PerceptionError
from perception.core.images import ImageDecodeError
from perception.pipeline import (
    LATENCY_FIELDS,
    CameraFrame,
    CameraResult,
    DetectionStage,
    ThrottledLog,
    build_detector,
    live_engine_threads,
)
from perception.pipeline.status import detection_statuses
from perception.ros.conversions import detections_to_msg, label_info_msg, latency_to_msg
from perception.ros.diagnostics import diagnostic_array
from perception.ros.images import bgr_to_image_msg, compressed_to_bgr, image_to_bgr
from perception.ros.lifecycle import DriverLifecycleNode, DriverNode
from perception.ros.malloc_tuning import keep_large_buffers_on_heap
from perception.ros.masks import keypoints_to_cloud, masks_to_image_msg
from perception.ros.params import LiveParams, ParameterError, declare_params
from perception.ros.pulled import PulledGroup, PulledSubscriptions, SequenceGaps
from perception.ros.qos import LATCHED, OUTPUTS, OVERLAY, sensor_qos
from perception.ros.runner import run_node

__all__ = ["LATENCY_FIELDS", "DetectorLifecycleNode", "DetectorNode", "main"]

MAX_FRAME_ID_BYTES = 1024
"""A longer header.frame_id is refused (error.cdr): it would be copied onto every output."""


def _age_ns(received_ns: Any) -> int:
    """How long ago the middleware received a sample (its reception stamp is
    on the system clock); 0 when unknown or implausible."""
    if not isinstance(received_ns, int) or received_ns <= 0:
        return 0
    age = time.time_ns() - received_ns
    return age if 0 <= age < 10_000_000_000 else 0


@dataclass
class _CameraIO:
    """One camera's parameters, subscriptions and publishers (by output name)."""

    name: str
    cfg: CameraParams
    subs: list[Any] = field(default_factory=list)
    pubs: dict[str, Any] = field(default_factory=dict)
    info_received: bool = False
    image_sub: Any = None
    gaps: SequenceGaps = field(default_factory=SequenceGaps)


class DetectorDriver:
    """What the plain and the lifecycle node share: parameters, I/O, the worker."""

    RAW_SUBSCRIPTIONS = True
    """Cameras are subscribed raw (serialized bytes, parsed lazily; see the module doc)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.log = ThrottledLog(node.get_logger())
        self._params = LiveParams(node, DetectorParams, on_change=self._apply)
        names = list(self.params.camera_names)
        if not names:
            raise ParameterError(
                "camera_names: expected at least one camera name (and cameras.<name>.topic)"
            )
        if len(set(names)) != len(names):
            raise ParameterError(f"camera_names: expected unique names, got {names}")
        check_camera_names(names)  # they become topic tokens and parameter groups
        self.cameras: dict[str, _CameraIO] = {}
        errors: list[str] = []
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
        if errors:
            raise ParameterError("; ".join(errors))
        self._tracker = LiveParams(node, TrackerParams, "tracker.", self._apply_tracker)
        self.stage: DetectionStage | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self.pubs: dict[str, Any] = {}
        self.diag_timer: Any = None
        self._pulled_group = PulledGroup()
        self._pushed = False  # an executor ran an image callback (see _on_image)

    # ----------------------------------------------------------- parameters
    @property
    def params(self) -> DetectorParams:
        return self._params.value

    def _apply(self, p: DetectorParams) -> None:
        if self.stage is not None:
            self.stage.max_age_ms = p.max_age_ms
            self.stage.detector.set_thresholds(
                conf=p.score_threshold, iou=p.iou_threshold, max_det=p.max_detections
            )

    def _apply_tracker(self, p: TrackerParams) -> None:
        if self.stage is not None and self.stage.tracking:
            self.stage.set_tracker_config(p.to_config())

    # ------------------------------------------------------------ lifecycle
    def load_engine(self) -> None:
        """Create the engine, detector and stage (may take long: a configure step)."""
        p = self.params
        model = p.model if p.model.threads else replace(p.model, threads=live_engine_threads())
        detector = build_detector(
            model,
            score_threshold=p.score_threshold,
            iou_threshold=p.iou_threshold,
            max_detections=p.max_detections,
            nonfinite=p.nonfinite,
            on_progress=self._on_build_progress,
        )
        self.stage = DetectionStage(
            detector,
            self.cameras,
            tracker=self._tracker.value.to_config() if p.tracking else None,
            max_age_ms=p.max_age_ms,
            log=self.log,
        )
        facts = self.stage.describe()
        self.log.info(
            f"engine {facts['engine']} ({facts['runtime']} on {facts['device']}, "
            f"{model.threads} CPU thread(s)), family "
            f"{facts['family']}, {facts['classes']} classes, {len(self.cameras)} camera(s), "
            f"pixel input {facts['pixel_input']}"
        )

    def _on_build_progress(self, status: Any) -> None:
        self.node.get_logger().info(f"engine build: {status}", throttle_duration_sec=2.0)

    def create_publishers(self) -> None:
        make = getattr(self.node, "create_lifecycle_publisher", self.node.create_publisher)
        self.pubs["label"] = make(LabelInfo, "~/label_info", LATCHED)
        self.pubs["diag"] = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        outputs = {"detections": (Detection2DArray, OUTPUTS), "overlay": (Image, OVERLAY),
                   "latency": (Float64MultiArray, OUTPUTS)}  # fmt: skip
        if self.params.tracking:
            outputs["tracks"] = (Detection2DArray, OUTPUTS)
        # a segmentation / pose model's masks and keypoints, next to each array
        # they index (perception.ros.masks), published only while subscribed
        task = self.stage.detector.task if self.stage is not None else "detect"
        extra = {"segment": ("masks", Image), "pose": ("keypoints", PointCloud2)}.get(task)
        if extra is not None:
            for array in [k for k in ("detections", "tracks") if k in outputs]:
                outputs[f"{array}/{extra[0]}"] = (extra[1], OUTPUTS)
        for cam in self.cameras.values():
            for out, (msg_type, qos) in outputs.items():
                cam.pubs[out] = make(msg_type, f"~/{cam.name}/{out}", qos)

    def publish_label_info(self) -> None:
        if self.stage is not None and "label" in self.pubs:
            self.pubs["label"].publish(
                label_info_msg(
                    self.stage.detector.class_names,
                    threshold=self.params.score_threshold,
                    header=Header(stamp=self.node.get_clock().now().to_msg()),
                )
            )

    def start(self) -> None:
        """Subscribe to every camera and start the worker thread."""
        keep_large_buffers_on_heap()
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
            cam.image_sub = None
            while cam.subs:
                self.node.destroy_subscription(cam.subs.pop())
        if self.diag_timer is not None:
            self.node.destroy_timer(self.diag_timer)
            self.diag_timer = None

    def release(self) -> None:
        """Destroy publishers and close the engine."""
        for pubs in [self.pubs, *(c.pubs for c in self.cameras.values())]:
            for pub in pubs.values():
                self.node.destroy_publisher(pub)
            pubs.clear()
        if self.stage is not None:
            self.stage.detector.engine.close()
        self.stage = None

    # ---------------------------------------------------------------- input
    def _subscribe(self, cam: _CameraIO) -> None:
        compressed = cam.cfg.transport == "compressed"
        topic = cam.cfg.topic.rstrip("/") + ("/compressed" if compressed else "")
        msg_type = CompressedImage if compressed else Image
        qos = sensor_qos(cam.cfg.qos.reliability, cam.cfg.qos.depth)
        events = SubscriptionEventCallbacks(
            incompatible_qos=partial(self._on_incompatible_qos, cam, topic)
        )
        on_image = partial(self._on_image, cam)
        sub = self.node.create_subscription(
            msg_type,
            topic,
            on_image,
            qos,
            event_callbacks=events,
            raw=self.RAW_SUBSCRIPTIONS,
            callback_group=self._pulled_group,
        )
        cam.subs.append(sub)
        if self.RAW_SUBSCRIPTIONS and self._pulled_group.pull(sub):
            cam.image_sub = sub  # the worker takes its newest sample (_pull)
        if cam.cfg.camera_info_topic:
            on_info = partial(self._on_info, cam)
            cam.subs.append(
                self.node.create_subscription(
                    CameraInfo, cam.cfg.camera_info_topic, on_info, qos_profile_sensor_data
                )
            )
        kind = f"{msg_type.__name__}, {cam.cfg.qos.reliability}"
        self.log.info(f"camera {cam.name}: {topic} ({kind})")

    @staticmethod
    def _on_info(cam: _CameraIO, _msg: CameraInfo) -> None:
        cam.info_received = True

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

    def _on_image(self, cam: _CameraIO, data: bytes) -> None:
        """Executor callback, for executors that run pulled subscriptions
        anyway (see perception.ros.pulled): same as a pulled sample."""
        self._pushed = True
        self._accept(cam, data, time.monotonic_ns(), self.node.get_clock().now().nanoseconds)

    def _accept(self, cam: _CameraIO, data: bytes, receive_ns: int, receive_clock_ns: int) -> None:
        """Read the header, keep the bytes as the camera's newest frame (parsed
        and decoded only if the engine takes it). Bad bytes are counted against
        the camera; nothing is raised."""
        stage = self.stage_or_raise()
        try:
            header = cdr.read_header(data, max_frame_id=MAX_FRAME_ID_BYTES)
        except ImageDecodeError as exc:
            stage.count_error(cam.name, exc.kind, f"dropped message: {exc}")
            return
        except Exception as exc:  # last resort: a bad message must never raise
            stage.count_error(cam.name, "callback", f"dropped message: {type(exc).__name__}: {exc}")
            return
        stage.submit(
            CameraFrame(
                camera=cam.name,
                image=partial(self._decode_raw, cam, data),
                stamp_ns=header.stamp_ns,
                frame_id=cam.cfg.frame_id or header.frame_id,
                receive_ns=receive_ns,
                receive_clock_ns=receive_clock_ns,
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

    def _pull(self, stage: DetectionStage, taker: PulledSubscriptions) -> None:
        """Worker side: take every queued sample of every camera (the queue is
        the camera's qos.depth, 1 by default, so usually one) and submit it;
        the slot keeps the newest. Samples the middleware replaced before this
        take count as skipped, from the publisher's sequence numbers."""
        for cam in self.cameras.values():
            sub = cam.image_sub
            if sub is None:
                continue
            while True:
                try:
                    got = taker.take(sub)
                except Exception as exc:  # e.g. the context shutting down
                    self.log.warning(f"take.{cam.name}", f"camera {cam.name}: take failed: {exc}")
                    break
                if got is None:
                    break
                data, info = got
                stage.slots.count_skipped(cam.name, cam.gaps.missed(info))
                now_mono, now_clock = time.monotonic_ns(), self.node.get_clock().now().nanoseconds
                age = _age_ns(info.get("received_timestamp"))  # arrival, not this take
                self._accept(cam, data, now_mono - age, now_clock - age)

    @staticmethod
    def _decode_raw(cam: _CameraIO, data: bytes) -> Any:
        """Worker side: parse the kept bytes of a frame the engine takes and
        decode them within the camera's pixel budget (refused before any
        allocation). Raises `InputImageError` (with a `kind`) for anything
        wrong, so the stage counts it against this camera and the rest of the
        batch goes on."""
        budget = int(cam.cfg.max_pixels)
        try:
            if cam.cfg.transport == "compressed":
                msg: Any = cdr.parse_compressed_image(data, max_frame_id=MAX_FRAME_ID_BYTES)
                return compressed_to_bgr(msg, max_pixels=budget)
            msg = cdr.parse_image(data, max_frame_id=MAX_FRAME_ID_BYTES)
            return image_to_bgr(msg, max_pixels=budget)
        except InputImageError:
            raise
        except Exception as exc:  # e.g. a codec error: still this camera's bad frame
            raise ImageDecodeError("corrupt", f"{type(exc).__name__}: {exc}") from exc

    # --------------------------------------------------------------- worker
    def _loop(self) -> None:
        """Take the newest frame of every camera, run a batch, repeat; while
        nothing is waiting, block on the camera subscriptions (or, when an
        executor delivers them, on the stage)."""
        stage = self.stage_or_raise()
        pulled = [c.image_sub for c in self.cameras.values() if c.image_sub is not None]
        taker = PulledSubscriptions(
            pulled, self.node.context, on_error=partial(self.log.warning, "pulled")
        )
        while not self._stop.is_set():
            if taker.subs:
                self._pull(stage, taker)
            busy = stage.wait(0.0)
            if busy:
                self.publish(stage.step(time.monotonic_ns()))
            if not taker.subs or self._pushed:  # callbacks deliver: they wake the stage
                if not busy:
                    stage.wait(0.1)
                continue
            try:  # also runs the cameras' QoS event callbacks
                taker.wait(0.0 if busy else 0.1)
            except Exception as exc:  # e.g. the context shutting down
                self.log.warning("pulled", f"waiting on the cameras failed: {exc}")
                self._stop.wait(0.1)

    def publish(self, results: list[CameraResult]) -> None:
        """Convert the stage's results to messages and publish them."""
        stage = self.stage_or_raise()
        names, fmt = stage.detector.class_names, self.params.class_format
        for r in results:
            cam = self.cameras[r.camera]
            msg = detections_to_msg(r.detections, names, fmt)
            cam.pubs["detections"].publish(msg)
            self._publish_extras(cam, "detections", r.detections, msg.header)
            if r.tracks is not None and "tracks" in cam.pubs:
                cam.pubs["tracks"].publish(detections_to_msg(r.tracks, names, fmt, msg.header))
                self._publish_extras(cam, "tracks", r.tracks, msg.header)
            row = dict(r.latency)
            row["publish_ms"] = max((time.monotonic_ns() - r.taken_ns) * 1e-6 - r.engine_ms, 0.0)
            now = self.node.get_clock().now().nanoseconds
            row["capture_to_publish_ms"] = (now - r.stamp_ns) * 1e-6
            stage.record_latency(r.camera, row)
            cam.pubs["latency"].publish(latency_to_msg(r.stamp_ns, row))
            if self.params.overlay and cam.pubs["overlay"].get_subscription_count() > 0:
                from perception.core.drawing import draw_detections

                shown = r.tracks if r.tracks is not None else r.detections
                image = draw_detections(r.image, shown, names)
                cam.pubs["overlay"].publish(bgr_to_image_msg(image, msg.header))

    @staticmethod
    def _publish_extras(cam: _CameraIO, array: str, det: Any, header: Header) -> None:
        """The mask image / keypoints of `det`, indexed like its `array` message
        (same header), only while someone subscribes."""
        for kind, build in (("masks", masks_to_image_msg), ("keypoints", keypoints_to_cloud)):
            pub = cam.pubs.get(f"{array}/{kind}")
            if pub is not None and pub.get_subscription_count() > 0:
                out = build(det, header)
                if out is not None:
                    pub.publish(out)

    def publish_diagnostics(self) -> None:
        if "diag" not in self.pubs or self.stage is None:
            return
        statuses = detection_statuses(
            self.stage,
            self.node.get_fully_qualified_name(),
            {c.name: c.cfg.topic for c in self.cameras.values()},
        )
        self.pubs["diag"].publish(diagnostic_array(statuses, self.node.get_clock().now().to_msg()))


class DetectorNode(DriverNode):
    """Plain node: loads the engine and subscribes at construction."""

    DRIVER = DetectorDriver
    NAME = "detector"


class DetectorLifecycleNode(DriverLifecycleNode):
    """Managed node: configure loads the engine and creates lifecycle
    publishers, activate subscribes."""

    DRIVER = DetectorDriver
    NAME = "detector"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the plain detector node."""
    return run_node(DetectorNode, argv, name="detector")


def lifecycle_main(argv: list[str] | None = None) -> int:
    """Entry point of the lifecycle detector node."""
    return run_node(DetectorLifecycleNode, argv, name="detector")


if __name__ == "__main__":
    sys.exit(main())
