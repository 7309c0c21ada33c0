"""Detection stage: newest-frame slots, one engine call per batch, 2D tracking.

The camera side `submit`s frames (nothing else: no decoding, no queue). The
worker side calls `step`, which takes the newest frame of every camera,
decodes only those, runs ONE engine call over the batch and tracks each
camera's detections with that camera's tracker. Trackers are keyed by the
configured camera name, never by the frame_id on the wire, and advance on
stamps only: given the same frames in the same batches the outputs are the
same bit for bit, live or replayed.

Every frame is accounted for: received / processed / skipped / stale /
rejected (by kind) per camera.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from perception.core.detector import Detector
from perception.core.errors import InputImageError
from perception.core.frames import LatestFrameSlots
from perception.core.stats import LatencyStats, RateMeter
from perception.core.tracking.config import TrackerConfig
from perception.core.tracking.tracker import Tracker
from perception.core.types import Detections
from perception.pipeline.log import ThrottledLog
from perception.pipeline.types import STAGES, CameraFrame, CameraResult

__all__ = ["DetectionStage"]


class DetectionStage:
    """Many cameras, one detector, newest frames only (see the module docstring)."""

    def __init__(
        self,
        detector: Detector,
        cameras: Iterable[str],
        *,
        tracker: TrackerConfig | None = None,
        max_age_ms: float = 0.0,
        log: ThrottledLog | None = None,
    ) -> None:
        self.cameras = list(cameras)
        if not self.cameras:
            raise ValueError("cameras: expected at least one camera name")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras: expected unique names, got {self.cameras}")
        self.detector = detector
        self.max_age_ms = float(max_age_ms)
        self.log = log if log is not None else ThrottledLog()
        self.slots: LatestFrameSlots[CameraFrame] = LatestFrameSlots(self.cameras)
        self.errors: dict[str, defaultdict[str, int]] = {c: defaultdict(int) for c in self.cameras}
        self.latency = {c: LatencyStats(STAGES) for c in self.cameras}
        self.rates = {c: RateMeter() for c in self.cameras}
        self.batches = 0
        self.batch_errors = 0
        self._tracker_config = tracker
        self._trackers: dict[str, Tracker] = {}
        self._lock = threading.Lock()  # trackers vs. run-time config changes

    # ------------------------------------------------------------ settings
    @property
    def tracking(self) -> bool:
        return self._tracker_config is not None

    @property
    def tracker_config(self) -> TrackerConfig | None:
        return self._tracker_config

    def set_tracker_config(self, config: TrackerConfig) -> None:
        """New tracker parameters for every camera (tracks are kept)."""
        if self._tracker_config is None:
            raise ValueError("tracking is off: no tracker to configure")
        with self._lock:
            self._tracker_config = config
            for t in self._trackers.values():
                t.set_config(config)

    def tracker(self, camera: str) -> Tracker | None:
        """The 2D tracker of `camera` (None before its first frame or without tracking)."""
        return self._trackers.get(camera)

    # --------------------------------------------------------------- input
    def submit(self, frame: CameraFrame) -> None:
        """Store `frame` as its camera's newest (a replaced one counts as skipped)."""
        if self.slots.put(frame):
            self.log.warning(
                f"stamp_back.{frame.camera}",
                f"camera {frame.camera}: stamp went backwards (simulator reset or bag "
                "loop?); continuing with the new time line",
            )

    def wait(self, timeout_s: float) -> bool:
        """Block until a frame is waiting or `timeout_s` passes."""
        return self.slots.wait(timeout_s)

    def count_error(self, camera: str, kind: str, message: str, *, reject: bool = True) -> None:
        """Count a problem of `camera` by kind (and as a rejected frame), log throttled."""
        self.errors[camera][kind] += 1
        if reject:
            self.slots.reject(camera)
        self.log.warning(f"{kind}.{camera}", f"camera {camera}: {message}")

    # -------------------------------------------------------------- worker
    def take(self, now_ns: int | None = None) -> list[CameraFrame]:
        """Empty the slots; frames older than max_age (on the receive clock,
        measured at `now_ns`) are counted stale. None: no staleness check."""
        max_age_ns = int(self.max_age_ms * 1e6) if self.max_age_ms > 0 else None
        if now_ns is None:
            max_age_ns = None
        return self.slots.take_fresh(now_ns or 0, max_age_ns)

    def _decode(self, frame: CameraFrame) -> np.ndarray | None:
        try:
            image = frame.image() if callable(frame.image) else frame.image
        except InputImageError as exc:
            kind = str(getattr(exc, "kind", "bad_image"))
            self.count_error(frame.camera, kind, f"dropped frame ({kind}): {exc}")
            return None
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.dtype != np.uint8:
            self.count_error(frame.camera, "bad_image", "dropped frame: expected HxWxC uint8")
            return None
        return image

    def process(self, frames: list[CameraFrame]) -> list[CameraResult]:
        """Decode, detect as one batch, track per camera. Engine errors raise
        (the batch is lost); bad images are counted and left out."""
        t_take = time.monotonic_ns()
        images: list[np.ndarray] = []
        used: list[CameraFrame] = []
        for f in frames:
            img = self._decode(f)
            if img is not None:
                images.append(img)
                used.append(f)
        if not used:
            return []
        detections = self.detector.detect(
            images, [f.stamp_ns for f in used], [f.frame_id for f in used]
        )
        self.batches += 1
        timing = self.detector.last_timings
        out = []
        for f, img, det in zip(used, images, detections, strict=True):
            tracks = self._track(f.camera, det) if self.tracking else None
            self.rates[f.camera].tick(t_take)
            row = {
                "capture_to_receive_ms": (f.receive_clock_ns - f.stamp_ns) * 1e-6
                if f.receive_clock_ns
                else float("nan"),
                "queue_ms": (t_take - f.receive_ns) * 1e-6 if f.receive_ns else 0.0,
                "preprocess_ms": timing.preprocess_ms,
                "inference_ms": timing.inference_ms,
                "postprocess_ms": timing.postprocess_ms,
            }
            out.append(
                CameraResult(
                    camera=f.camera,
                    frame=f,
                    image=img,
                    detections=det,
                    tracks=tracks,
                    latency=row,
                    taken_ns=t_take,
                    engine_ms=timing.total_ms,
                )
            )
        return out

    def _track(self, camera: str, det: Detections) -> Detections:
        with self._lock:
            tracker = self._trackers.get(camera)
            if tracker is None:
                tracker = Tracker(self._tracker_config)
                self._trackers[camera] = tracker
            # rejects bad rows and stamps before any state change
            return tracker.update(det)

    def step(self, now_ns: int | None = None) -> list[CameraResult]:
        """`take` then `process`; an engine failure is counted, logged and
        returns nothing (the worker keeps running)."""
        frames = self.take(now_ns)
        if not frames:
            return []
        try:
            return self.process(frames)
        except Exception as exc:  # one bad batch must not kill the only worker
            self.batch_errors += 1
            self.log.error("batch", f"batch failed: {type(exc).__name__}: {exc}")
            return []

    def record_latency(self, camera: str, row: Mapping[str, float]) -> None:
        """Keep a finished latency row for the percentiles in diagnostics."""
        self.latency[camera].add_many({k: v for k, v in row.items() if v == v})

    # --------------------------------------------------------- diagnostics
    def counters(self) -> dict[str, dict[str, int]]:
        """Per camera: received / processed / skipped / stale / rejected /
        stamp_resets and `error.<kind>` counts."""
        snap = self.slots.snapshot()
        for cam, errs in self.errors.items():
            snap[cam].update({f"error.{k}": v for k, v in sorted(errs.items())})
        return snap

    def describe(self) -> dict[str, Any]:
        """Engine and detector facts for logs and diagnostics."""
        d = self.detector
        info = d.engine.info
        return {
            "engine": info.name,
            "runtime": info.runtime,
            "device": info.device,
            "precision": info.precision,
            "family": str(d.family),
            "classes": str(len(d.class_names)),
            "pixel_input": "on" if d.preprocessor.pixels else f"off ({d.pixel_input_reason})",
        }
