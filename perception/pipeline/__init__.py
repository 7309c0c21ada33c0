"""The ROS-free perception pipeline: the single place where per-frame work
happens. Nodes, replay, the CLIs, the demo and the benchmarks drive it.

- `types`: `CameraFrame` in, `CameraResult` out.
- `detection`: newest-frame slots, one engine call per batch, 2D tracking.
- `fusion`: depth / LiDAR fusion, 3D tracking, prediction for one camera.
- `pipeline`: both together; `build_detector` makes the engine and detector.
"""

from perception.pipeline.detection import DetectionStage
from perception.pipeline.fusion import FusionOutput, FusionSettings, FusionStage
from perception.pipeline.log import ThrottledLog
from perception.pipeline.pipeline import Pipeline, build_detector, live_engine_threads
from perception.pipeline.types import (
    LATENCY_FIELDS,
    STAGES,
    CameraFrame,
    CameraResult,
    CloudInput,
)

__all__ = [
    "LATENCY_FIELDS",
    "STAGES",
    "CameraFrame",
    "CameraResult",
    "CloudInput",
    "DetectionStage",
    "FusionOutput",
    "FusionSettings",
    "FusionStage",
    "Pipeline",
    "ThrottledLog",
    "build_detector",
    "live_engine_threads",
]
