"""Detection stage: newest-frame slots, one engine call per batch, 2D tracking.

The camera side `submit`s frames (nothing else: no decoding, no queue). The
worker side calls `step`, which takes the newest frame of every camera,
decodes only those, runs ONE engine call over the batch and tracks each
camera's detections with that camera's tracker. Trackers are keyed by the
configured camera name, never by the frame_id on the wire, and advance on
stamps only: given the same frames in the same batches the outputs are the
same bit for bit, live or replayed.

Every frame is accounted for: received / processed / skipped / stale /
rejected (by kind) per camera. A frame counted processed was handed out as a
`CameraResult`; one that fails on its own (decode, non-finite model output,
post-processing, tracking) is rejected and counted against its camera only,
the rest of the batch goes on. An engine failure concerns the whole batch:
it is counted once in `batch_errors` and as `error.engine` (rejected) for
every camera in the batch.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from perception.core.detector import Detector, ImageFailure
from perception.core.errors import InputImageError
from perception.core.frames import LatestFrameSlots
from perception.core.preprocess import check_image
from perception.core.stats import LatencyStats, RateMeter
from perception.core.tracking.cmc import CameraMotionEstimator
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
        self.last_error: dict[str, str] = {}
        """Per camera, the last problem counted ("<kind>: <message>"), e.g. for a
        CLI to say why a frame it passed has no result."""
        self.latency = {c: LatencyStats(STAGES) for c in self.cameras}
        self.rates = {c: RateMeter() for c in self.cameras}
        self.batches = 0
        self.batch_errors = 0
        # frames taken from the slots (counted processed there) but then rejected
        self._lost: dict[str, int] = {c: 0 for c in self.cameras}
        self._tracker_config = tracker
        self._trackers: dict[str, Tracker] = {}
        # per camera, when tracker.camera_motion_compensation is on
        self._motion: dict[str, CameraMotionEstimator] = {}
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
            if not config.camera_motion_compensation:
                self._motion.clear()

    def tracker(self, camera: str) -> Tracker | None:
        """The 2D tracker of `camera` (None before its first frame or without tracking)."""
        return self._trackers.get(camera)

    def camera_motion(self, camera: str) -> CameraMotionEstimator | None:
        """The camera motion estimator of `camera` (None unless
        tracker.camera_motion_compensation is on and a frame was tracked)."""
        return self._motion.get(camera)

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
        self.last_error[camera] = f"{kind}: {message}"
        if reject:
            self.slots.reject(camera)
        self.log.warning(f"{kind}.{camera}", f"camera {camera}: {message}")

    def _drop(self, frame: CameraFrame, kind: str, message: str) -> None:
        """A frame already taken for processing is rejected after all: counted
        against its camera (rejected, error.<kind>) and not as processed."""
        self._lost[frame.camera] += 1
        self.count_error(frame.camera, kind, f"dropped frame ({kind}): {message}")

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
            self._drop(frame, str(getattr(exc, "kind", "bad_image")), str(exc))
            return None
        except Exception as exc:  # a decoder bug on one frame must not cost the batch
            self._drop(frame, "decode_error", f"{type(exc).__name__}: {exc}")
            return None
        try:
            return check_image(image)  # what the batch preprocessing would refuse
        except InputImageError as exc:
            self._drop(frame, "bad_image", str(exc).split(": ", 1)[-1])  # no batch index
            return None

    def process(self, frames: list[CameraFrame]) -> list[CameraResult]:
        """Decode, detect as one batch, track per camera.

        A frame that fails on its own is counted against its camera and left
        out (the others are returned; `last_error` says why); an engine
        failure raises (the batch is lost, counted as `error.engine` for each
        of its cameras). `frames` come from `take` (which counts them), so
        the counters add up."""
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
        try:
            detections = self.detector.detect_each(
                images, [f.stamp_ns for f in used], [f.frame_id for f in used]
            )
        except Exception as exc:
            self.batch_errors += 1
            for f in used:
                self._drop(f, "engine", f"batch failed: {type(exc).__name__}: {exc}")
            raise
        self.batches += 1
        timing = self.detector.last_timings
        dropped_rows = self.detector.last_nonfinite_rows
        out = []
        for i, (f, img, det) in enumerate(zip(used, images, detections, strict=True)):
            if i < len(dropped_rows) and dropped_rows[i]:  # nonfinite=drop: rows, not frames
                self.errors[f.camera]["nonfinite_rows"] += dropped_rows[i]
                self.log.warning(
                    f"nonfinite_rows.{f.camera}",
                    f"camera {f.camera}: dropped {dropped_rows[i]} rows with non-finite model "
                    "outputs (nonfinite=drop; error.nonfinite_rows counts them all)",
                )
            if isinstance(det, ImageFailure):
                self._drop(f, det.kind, det.message)
                continue
            tracks = None
            if self.tracking:
                try:
                    tracks = self._track(f.camera, det, img)
                except Exception as exc:  # this camera's tracker only
                    self._drop(f, "tracking_error", f"{type(exc).__name__}: {exc}")
                    continue
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

    def _track(self, camera: str, det: Detections, image: np.ndarray) -> Detections:
        with self._lock:
            tracker = self._trackers.get(camera)
            if tracker is None:
                tracker = Tracker(self._tracker_config)
                self._trackers[camera] = tracker
            cfg = tracker.config
            if not cfg.camera_motion_compensation:
                # rejects bad rows and stamps before any state change
                return tracker.update(det)
            # Motion between this camera's processed frames (skipped ones
            # included in the step): depends on the pixels only.
            motion = self._motion.get(camera)
            if motion is None:
                motion = self._motion[camera] = CameraMotionEstimator()
            affine = motion.estimate(image, det.xyxy)
            accepted = tracker.stats.frames
            out = tracker.update(det, camera_motion=affine)
            if tracker.stats.frames == accepted:
                # a rejected frame: the tracks are still in the pixels of the
                # last accepted one, so the next estimate must not chain on it
                motion.reset()
            return out

    def step(self, now_ns: int | None = None) -> list[CameraResult]:
        """`take` then `process`; an engine failure is counted (`batch_errors`,
        `error.engine` per camera), logged and returns nothing (the worker keeps
        running)."""
        frames = self.take(now_ns)
        if not frames:
            return []
        try:
            return self.process(frames)
        except Exception as exc:  # one bad batch must not kill the only worker
            self.log.error("batch", f"batch failed: {type(exc).__name__}: {exc}")
            return []

    def record_latency(self, camera: str, row: Mapping[str, float]) -> None:
        """Keep a finished latency row for the percentiles in diagnostics."""
        self.latency[camera].add_many({k: v for k, v in row.items() if v == v})

    # --------------------------------------------------------- diagnostics
    def frame_counts(self) -> dict[str, dict[str, int]]:
        """Per camera: received / processed / skipped / stale / rejected /
        stamp_resets, processed meaning handed out as a result (frames taken
        but then rejected count as rejected only)."""
        snap = self.slots.snapshot()
        for cam, lost in self._lost.items():
            snap[cam]["processed"] -= lost
        return snap

    def counters(self) -> dict[str, dict[str, int]]:
        """`frame_counts` plus the `error.<kind>` counts per camera."""
        snap = self.frame_counts()
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
