"""The whole per-frame pipeline: detection + 2D tracking + per-camera fusion,
3D tracking and prediction, with no ROS.

    pipeline = Pipeline(DetectionStage(detector, ["front"], tracker=TrackerConfig()),
                        {"front": FusionStage(FusionSettings(tracker3d=Tracker3DConfig()))})
    for frame in frames:                      # CameraFrame, in stamp order
        pipeline.submit(frame)
        for result in pipeline.step():        # CameraResult per processed camera
            ...

The live nodes are drivers of its stages (the detector node of
`DetectionStage`, the fusion node of `FusionStage`), replay and the CLIs of
the whole; given the same frames in the same batches all give the same
detections, track ids and 3D objects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from perception.core.decoders import DEFAULT_LABELS_MAX_BYTES, load_labels
from perception.core.detector import Detector
from perception.core.engines.config import EngineConfig
from perception.pipeline.detection import DetectionStage
from perception.pipeline.fusion import FusionStage
from perception.pipeline.types import CameraFrame, CameraResult

__all__ = ["Pipeline", "build_detector", "engine_config", "live_engine_threads"]


def live_engine_threads(cpus: int | None = None) -> int:
    """CPU threads of a live node's engine when `model.threads` is 0: one less
    than the CPUs this process may use (`cpus`, default its affinity), at least 1.

    A live node shares its CPUs with the middleware's receive threads, its
    executor and often the camera drivers; an intra-op pool over every core
    stalls each parallel operator on whichever core they take. On 2 cores
    (YOLOX-Nano, 4 and 8 cameras at 30 Hz, docs/benchmarks.md) one thread gave
    the same or a higher rate than two at 1280x720, a steady one instead of
    swings of up to 2x, and left most of a core free. Offline drivers (replay,
    the CLIs) keep the runtime's default: nothing else competes there.
    """
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


def engine_config(model: Any) -> EngineConfig:
    """The EngineConfig of a detector's `model.*` parameters (`DetectorModelParams`
    or anything with the same attributes): what the node, replay and
    `perception build-engine` build and look up in the engine cache."""
    return EngineConfig.from_mapping(
        {
            "model_path": model.path,
            "runtime": model.runtime,
            "device": model.device,
            "precision": model.precision,
            "cache_dir": model.cache_dir,
            "fallback": model.fallback_runtime,
            "fallback_model_path": model.fallback_model_path,
            "build_input_shape": list(model.build_input_shape),
            "threads": model.threads,
            "graph_rewrites": model.graph_rewrites,
        }
    )


def build_detector(
    model: Any,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    on_progress: Callable[[Any], None] | None = None,
    **detector_options: Any,
) -> Detector:
    """The one place an engine and its `Detector` are made from parameters.

    `model` is the `model.*` group of the detector spec (`DetectorParams().model`
    or anything with the same attributes); the thresholds are the spec's
    top-level ones. Used by the detector node, the CLIs, replay and the
    benchmarks, so they all get the same defaults. `detector_options` are
    further `Detector` keywords: the spec's top-level `nonfinite`, and CLI
    extras that have no node parameter (class_conf, agnostic, multi_label,
    imgsz, class_names); the engine is closed if the detector cannot be made.
    `model.labels_max_bytes` bounds the labels file.
    """
    from perception.core.engines.factory import create_engine

    if not model.path:
        raise ValueError("model.path: expected a model file, got ''")
    config = engine_config(model)
    labels_max_bytes = int(getattr(model, "labels_max_bytes", DEFAULT_LABELS_MAX_BYTES))
    if model.labels_file:
        load_labels(model.labels_file, labels_max_bytes)  # refused before a long engine build
    engine = create_engine(config, on_progress=on_progress)
    try:
        return Detector(
            engine,
            family=model.family,
            conf=float(score_threshold),
            iou=float(iou_threshold),
            max_det=int(max_detections),
            labels_file=model.labels_file or None,
            labels_max_bytes=labels_max_bytes,
            pixel_input=model.pixel_input,
            **detector_options,
        )
    except BaseException:
        engine.close()
        raise


class Pipeline:
    """Detection stage plus an optional fusion stage per camera."""

    def __init__(
        self, detection: DetectionStage, fusion: Mapping[str, FusionStage] | None = None
    ) -> None:
        self.detection = detection
        self.fusion: dict[str, FusionStage] = dict(fusion or {})
        unknown = set(self.fusion) - set(detection.cameras)
        if unknown:
            raise ValueError(f"fusion: cameras {sorted(unknown)} are not among {detection.cameras}")

    @property
    def cameras(self) -> list[str]:
        return self.detection.cameras

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.detection.detector.class_names

    def submit(self, frame: CameraFrame) -> None:
        """Store `frame` as its camera's newest (see `DetectionStage.submit`)."""
        self.detection.submit(frame)

    def wait(self, timeout_s: float) -> bool:
        return self.detection.wait(timeout_s)

    def step(self, now_ns: int | None = None) -> list[CameraResult]:
        """Process the newest frame of every camera as one batch (engine errors
        are counted, not raised)."""
        return self._fuse(self.detection.step(now_ns))

    def process(self, frames: Iterable[CameraFrame]) -> list[CameraResult]:
        """Submit `frames` (at most one per camera) and process them as one
        batch; engine errors raise. Replay and tests call this."""
        for f in frames:
            self.detection.submit(f)
        return self._fuse(self.detection.process(self.detection.take(None)))

    def _fuse(self, results: list[CameraResult]) -> list[CameraResult]:
        for r in results:
            stage = self.fusion.get(r.camera)
            f = r.frame
            if stage is None or (f.depth is None and f.cloud is None):
                continue
            if f.camera_model is not None and f.camera_model is not stage.camera:
                stage.set_camera(f.camera_model)
            det = r.tracks if r.tracks is not None else r.detections
            out = stage.process(det, f.depth, f.cloud, f.predict_to_ns)
            if out is not None:
                r.objects = out.objects
                r.predicted = out.predicted
        return results

    def counters(self) -> dict[str, dict[str, int]]:
        """Per camera: the detection counters and `fusion.<kind>` refusals."""
        out = self.detection.counters()
        for cam, stage in self.fusion.items():
            out[cam]["fusion.processed"] = stage.processed
            out[cam].update({f"fusion.error.{k}": v for k, v in sorted(stage.errors.items())})
        return out

    def close(self) -> None:
        """Release the engine."""
        self.detection.detector.engine.close()
