"""A pipeline file (config/pipeline_*.yaml) as one ROS-free `Pipeline`.

The live system runs the file's nodes as processes (detector -> one fusion
node per camera -> overlay); replay and the benchmarks run the same
parameters in one `Pipeline`: the detector node's parameters make the
`DetectionStage`, each fusion node whose `detections_topic` is the detector's
`/<detector>/<camera>/{tracks,detections}` makes that camera's `FusionStage`.
The topics each stage reads are kept, so a bag recorded on the vehicle can be
fed to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perception.config.files import TYPE_KEY, load_config
from perception.config.generated import (
    CameraParams,
    DetectorParams,
    FusionParams,
    Tracker3DParams,
    TrackerParams,
)
from perception.config.spec import ParameterError, select
from perception.core.detector import Detector
from perception.pipeline.config import fusion_settings
from perception.pipeline.detection import DetectionStage
from perception.pipeline.fusion import FusionStage
from perception.pipeline.log import ThrottledLog
from perception.pipeline.pipeline import Pipeline, build_detector

__all__ = ["FusionSpec", "PipelineSpec", "build_pipeline", "load_pipeline_spec"]

_ROS_BUILTINS = ("use_sim_time", TYPE_KEY)


def _own(params: Mapping[str, Any], *prefixes: str) -> dict[str, Any]:
    """A node's parameters without ROS built-ins and the given groups."""
    return {
        k: v
        for k, v in params.items()
        if k not in _ROS_BUILTINS and not any(k.startswith(p) for p in prefixes)
    }


@dataclass(frozen=True)
class FusionSpec:
    """One fusion node of the file and the topics it reads."""

    node: str
    params: FusionParams
    tracker3d: Tracker3DParams


@dataclass(frozen=True)
class PipelineSpec:
    """The typed parameters of a pipeline file's detector and fusion nodes."""

    path: str
    detector_node: str
    detector: DetectorParams
    cameras: dict[str, CameraParams]
    tracker: TrackerParams
    fusion: dict[str, FusionSpec] = field(default_factory=dict)
    """camera name -> its fusion node."""

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names the fusion nodes were configured with (first non-empty)."""
        for f in self.fusion.values():
            if any(f.params.class_names):
                return f.params.class_names
        return ()


def load_pipeline_spec(path: Path | str, overrides: list[str] | None = None) -> PipelineSpec:
    """Read a pipeline file (with `NODE.PARAM=VALUE` overrides) into typed
    parameters; every bad or unknown value raises ParameterError naming it."""
    try:
        data = load_config(Path(path), list(overrides or []))
    except (OSError, ValueError) as exc:
        raise ParameterError(f"{path}: {exc}") from exc
    nodes = {name: body["ros__parameters"] for name, body in data.items()}
    detectors = [n for n, p in nodes.items() if p[TYPE_KEY] in ("detector", "detector_lifecycle")]
    if len(detectors) != 1:
        raise ParameterError(f"{path}: expected exactly one detector node, got {detectors}")
    name = detectors[0]
    raw = nodes[name]
    detector = DetectorParams.from_flat(_own(raw, "cameras.", "tracker."), f"{name}.")
    if not detector.camera_names:
        raise ParameterError(f"{path}: {name}.camera_names: expected at least one camera")
    cameras = {
        c: CameraParams.from_flat(select(raw, f"cameras.{c}."), f"{name}.cameras.{c}.")
        for c in detector.camera_names
    }
    tracker = TrackerParams.from_flat(select(raw, "tracker."), f"{name}.tracker.")
    fusion: dict[str, FusionSpec] = {}
    for node, p in nodes.items():
        if p[TYPE_KEY] != "fusion":
            continue
        params = FusionParams.from_flat(_own(p, "tracker3d."), f"{node}.")
        topic = params.detections_topic.rstrip("/")
        camera = next(
            (c for c in cameras
             if topic in (f"/{name}/{c}/tracks", f"/{name}/{c}/detections")),
            None,
        )  # fmt: skip
        if camera is None:
            continue  # fed by something other than this detector: not part of the pipeline
        if camera in fusion:
            raise ParameterError(
                f"{path}: {node} and {fusion[camera].node} both fuse camera {camera}"
            )
        t3 = Tracker3DParams.from_flat(select(p, "tracker3d."), f"{node}.tracker3d.")
        fusion[camera] = FusionSpec(node, params, t3)
    return PipelineSpec(str(path), name, detector, cameras, tracker, fusion)


def build_pipeline(
    spec: PipelineSpec, log: ThrottledLog | None = None, detector: Detector | None = None
) -> Pipeline:
    """The `Pipeline` the file describes, with fresh trackers. Loads the engine
    (may take long) unless `detector` is given: replay reuses one detector for
    every input of a worker."""
    d = spec.detector
    if detector is None:
        detector = build_detector(
            d.model,
            score_threshold=d.score_threshold,
            iou_threshold=d.iou_threshold,
            max_detections=d.max_detections,
            nonfinite=d.nonfinite,
        )
    stage = DetectionStage(
        detector,
        list(spec.cameras),
        tracker=spec.tracker.to_config() if d.tracking else None,
        max_age_ms=0.0,  # replay: every frame is processed, none is stale
        log=log,
    )
    fusion = {
        cam: FusionStage(fusion_settings(f.params, f.tracker3d), log)
        for cam, f in spec.fusion.items()
    }
    return Pipeline(stage, fusion)
