"""The demo's recorder: an rclpy node in the demo process that stores what
the pipeline publishes (and the scenario's ground truth), keyed by camera and
stamp, and writes the overlay video as its images arrive."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perception.demo import metrics
from perception.demo.topology import ROLE, Topology

__all__ = ["Recorder", "Recording"]


def _boxes(msg: Any, mapped: bool, ident_from_id: bool = True) -> list[metrics.Box2D]:
    """Detection2DArray -> Box2D list (class names mapped to the scenario's)."""
    out = []
    for d in msg.detections:
        cx, cy = d.bbox.center.position.x, d.bbox.center.position.y
        w, h = d.bbox.size_x, d.bbox.size_y
        name, score = ("", 0.0)
        if d.results:
            name, score = d.results[0].hypothesis.class_id, d.results[0].hypothesis.score
        cls = metrics.map_class(name) if mapped else name
        if cls is None:
            continue
        out.append(
            metrics.Box2D(
                (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
                cls,
                float(score),
                d.id if ident_from_id else "",
            )
        )
    return out


def _centres(msg: Any) -> np.ndarray:
    """Detection3DArray -> (N, 6) rows of box centre and size (metrics use both)."""
    rows = [
        (
            d.bbox.center.position.x,
            d.bbox.center.position.y,
            d.bbox.center.position.z,
            d.bbox.size.x,
            d.bbox.size.y,
            d.bbox.size.z,
        )
        for d in msg.detections
    ]
    return np.asarray(rows, np.float64).reshape(-1, 6)


@dataclass
class Recording:
    """Everything the recorder received, keyed by camera and stamp (ns)."""

    gt2d: dict[str, dict[int, list]] = field(default_factory=lambda: defaultdict(dict))
    gt3d: dict[int, np.ndarray] = field(default_factory=dict)
    dets: dict[str, dict[int, list]] = field(default_factory=lambda: defaultdict(dict))
    tracks: dict[str, dict[int, list]] = field(default_factory=lambda: defaultdict(dict))
    objects: dict[str, dict[int, np.ndarray]] = field(default_factory=lambda: defaultdict(dict))
    latency: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    latency_fields: tuple[str, ...] = ()
    """Column names of the latency rows (the label the detector puts on its
    Float64MultiArray layout: stamp, then one column per stage)."""
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)
    overlay_frames: int = 0
    overlay_frames_at: dict[int, float] = field(default_factory=dict)
    last_message: float = field(default_factory=time.monotonic)
    arrival: dict[int, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    """id(table) -> stamp -> monotonic arrival time in the recorder (wall latency)."""

    def latency_rows(self, cameras: list[str] | tuple[str, ...]) -> list[list[float]]:
        """The complete latency rows of `cameras` (one column per latency field)."""
        n = len(self.latency_fields)
        return [r for c in cameras for r in self.latency.get(c, []) if n and len(r) == n]


class Recorder:
    """rclpy node in the demo process that stores the pipeline's outputs and
    writes the overlay video as its images arrive."""

    def __init__(self, topo: Topology, video_path: Path, ground_truth: bool, fps: float) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float64MultiArray
        from vision_msgs.msg import Detection2DArray, Detection3DArray

        from perception.ros.conversions import stamp_to_ns
        from perception.sim.layout import SimLayout

        self._ns = stamp_to_ns
        self.rec = Recording()
        self.node = rclpy.create_node("demo_recorder")
        self.video_path = video_path
        self.fps = fps
        self._writer: Any = None
        self._last_overlay: np.ndarray | None = None
        q = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        qi = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        sub = self.node.create_subscription
        layout = SimLayout(role=ROLE)
        self.watch: list[str] = []
        for cam in topo.cameras:
            if ground_truth:
                sub(
                    Detection2DArray,
                    layout.detections_topic(cam),
                    lambda m, c=cam: self._store(self.rec.gt2d[c], m, _boxes(m, False)),
                    q,
                )
            for output, store in (("detections", self.rec.dets), ("tracks", self.rec.tracks)):
                topic = topo.detector_topic(cam, output)
                sub(
                    Detection2DArray,
                    topic,
                    lambda m, s=store, c=cam: self._store(s[c], m, _boxes(m, True)),
                    q,
                )
                self.watch.append(topic)
            sub(
                Float64MultiArray,
                topo.detector_topic(cam, "latency"),
                lambda m, c=cam: self._on_latency(c, m),
                q,
            )
        if ground_truth:
            sub(
                Detection3DArray,
                layout.objects_topic,
                lambda m: self._store(self.rec.gt3d, m, _centres(m)),
                q,
            )
        for name in topo.fusion:
            sub(
                Detection3DArray,
                topo.objects_topic(name),
                lambda m, n=name: self._store(self.rec.objects[n], m, _centres(m)),
                q,
            )
            self.watch.append(topo.objects_topic(name))
        sub(Image, topo.overlay_topic, self._on_overlay, qi)
        self.watch.append(topo.overlay_topic)
        sub(DiagnosticArray, "/diagnostics", self._on_diag, 50)

    def _touch(self) -> None:
        self.rec.last_message = time.monotonic()

    def _store(self, table: dict, msg: Any, value: Any) -> None:
        stamp = self._ns(msg.header.stamp)
        table[stamp] = value
        self.rec.arrival[id(table)].setdefault(stamp, time.monotonic())
        self._touch()

    def _on_latency(self, camera: str, msg: Any) -> None:
        if not self.rec.latency_fields and msg.layout.dim:
            self.rec.latency_fields = tuple(msg.layout.dim[0].label.split(","))
        self.rec.latency[camera].append(list(msg.data))
        self._touch()

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            self.rec.diagnostics[st.name] = {
                "message": st.message,
                **{kv.key: kv.value for kv in st.values},
            }

    def _on_overlay(self, msg: Any) -> None:
        import cv2

        from perception.ros.images import image_to_bgr

        img = image_to_bgr(msg)
        if self._writer is None:
            h, w = img.shape[:2]
            self._writer = cv2.VideoWriter(
                str(self.video_path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h)
            )
            if not self._writer.isOpened():
                self.video_path = self.video_path.with_suffix(".avi")
                self._writer = cv2.VideoWriter(
                    str(self.video_path), cv2.VideoWriter.fourcc(*"MJPG"), self.fps, (w, h)
                )
        self._writer.write(np.ascontiguousarray(img))
        self.rec.overlay_frames += 1
        self.rec.arrival[id(self.rec.overlay_frames_at)].setdefault(
            self._ns(msg.header.stamp), time.monotonic()
        )
        if self.rec.overlay_frames == 1:
            cv2.imwrite(str(self.video_path.with_name("overlay_first.png")), img)
        self._last_overlay = img
        self._touch()

    def discovered(self) -> bool:
        """Every output topic of the pipeline has a publisher."""
        return all(self.node.count_publishers(t) > 0 for t in self.watch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            if self._last_overlay is not None:
                import cv2

                cv2.imwrite(str(self.video_path.with_name("overlay_last.png")), self._last_overlay)
        self.node.destroy_node()
