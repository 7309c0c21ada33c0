"""What goes into the pipeline and what comes out, per camera.

Plain data, no ROS: a driver (a node, replay, a CLI, a benchmark) builds a
`CameraFrame` from whatever it reads and turns a `CameraResult` into whatever
it writes. Only stamps enter decisions; the receive clocks are there for
latency rows and the staleness policy of live drivers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from perception.core.camera import CameraModel
from perception.core.fusion.types import Objects3D
from perception.core.types import Detections

__all__ = ["LATENCY_FIELDS", "STAGES", "CameraFrame", "CameraResult", "CloudInput", "ImageSource"]

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
"""Element order of a latency row (the detector node's ~/<camera>/latency message)."""

STAGES = LATENCY_FIELDS[1:]
"""The latency row's stages (everything but the stamp)."""

ImageSource = np.ndarray | Callable[[], np.ndarray]
"""A decoded HxWx3 uint8 BGR image, or a function that decodes it. Live drivers
pass the function, so frames replaced by newer ones before the engine is free
are never decoded; it raises `InputImageError` (with a `kind`) on bad data."""


@dataclass(frozen=True)
class CloudInput:
    """A point cloud in its own frame: (N, 3) float xyz and that frame's id."""

    xyz: np.ndarray
    frame_id: str


@dataclass(frozen=True)
class CameraFrame:
    """One camera image and what came with it.

    Attributes:
        camera: configured camera name (the pipeline's key; never the untrusted
            frame_id from the wire).
        image: the image or a function that decodes it (`ImageSource`).
        stamp_ns: capture stamp (header stamp), the only time used in decisions.
        frame_id: optical frame written on every output.
        receive_ns: driver's monotonic clock at arrival (staleness, queue time).
        receive_clock_ns: driver's ROS clock at arrival (capture->receive latency);
            0 when unknown.
        camera_model: intrinsics, needed for 3D fusion (None keeps the last one).
        depth: registered depth image (metres, or raw units with the fusion's
            depth scale) for depth fusion.
        cloud: point cloud for LiDAR fusion.
        predict_to_ns: time the 3D tracks are predicted to (e.g. the publish
            time); None = no prediction for this frame.
    """

    camera: str
    image: ImageSource
    stamp_ns: int
    frame_id: str
    receive_ns: int = 0
    receive_clock_ns: int = 0
    camera_model: CameraModel | None = None
    depth: np.ndarray | None = None
    cloud: CloudInput | None = None
    predict_to_ns: int | None = None


@dataclass
class CameraResult:
    """Everything the pipeline made of one frame.

    `tracks` is None when tracking is off; `objects` / `predicted` are None
    when the camera has no fusion or the frame carried no depth / cloud (or
    fusion refused it: see the fusion stage's error counters). `latency`
    holds the stages the pipeline measured; the driver adds `publish_ms` and
    `capture_to_publish_ms` when it has published.
    """

    camera: str
    frame: CameraFrame
    image: np.ndarray
    detections: Detections
    tracks: Detections | None = None
    objects: Objects3D | None = None
    predicted: Objects3D | None = None
    latency: dict[str, float] = field(default_factory=dict)
    taken_ns: int = 0
    """Monotonic clock when the batch was taken (the driver's publish time is
    measured from here)."""
    engine_ms: float = 0.0
    """Preprocess + inference + postprocess of the batch, in ms."""

    @property
    def stamp_ns(self) -> int:
        return self.frame.stamp_ns

    @property
    def frame_id(self) -> str:
        return self.frame.frame_id
