"""Fusion stage: 2D detections of one camera + depth or LiDAR -> 3D objects.

Lifts boxes with a registered depth image (`DepthLifter`) or fits them to the
LiDAR points seen inside them (`LidarFusion`), moves the objects into the
target frame, tracks them in 3D and, on request, predicts them to a given
time (planning and AR act at publish time, not capture time). At most
`max_boxes` detections of a frame are fused (the highest scores; the rest are
counted as boxes_dropped, the frame as too_many_boxes), so one message cannot
stall the fusion or the 3D tracker. Every refusal is counted by kind in
`errors`; nothing raises out of `process`.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from perception.core.camera import CameraModel
from perception.core.errors import PerceptionError
from perception.core.fusion.amodal import DEFAULT_SIZE_PRIORS, AmodalConfig
from perception.core.fusion.depth import DepthLiftConfig, DepthLifter
from perception.core.fusion.lidar import LidarFusion, LidarFusionConfig
from perception.core.fusion.types import Objects3D
from perception.core.prediction import PredictionError, predict_objects3d
from perception.core.tracking.limits import keep_best
from perception.core.tracking.tracker3d import Tracker3D, Tracker3DConfig
from perception.core.types import Detections
from perception.pipeline.log import ThrottledLog
from perception.pipeline.types import CloudInput

__all__ = ["FusionOutput", "FusionSettings", "FusionStage"]


@dataclass(frozen=True)
class FusionSettings:
    """What the fusion of one camera needs besides its inputs.

    Attributes:
        mode: "depth" (registered depth image) or "lidar" (point cloud).
        target_frame: frame of the published objects.
        T_target_from_camera: 4x4 optical frame -> target frame.
        T_camera_from_cloud: 4x4 cloud frame -> optical frame (lidar mode).
        depth_scale: metres per depth unit; 0 = from the dtype (mm for uint16).
        depth_noise: (a, b) of the depth std a + b * z^2 (m) in the centre
            covariance (`DepthLiftConfig.depth_noise_a/b`).
        tracker3d: 3D tracker parameters; None = no 3D tracking.
        prediction_max_horizon_s: predictions further ahead are refused.
        max_boxes: most detections fused per frame (highest scores first).
        amodal_centres: complete each object behind the visible surface with
            its class's size prior (`core.fusion.amodal`); depth mode fits in
            `target_frame`, which must then be z-up.
        class_names: class names by id, to look the size priors up (empty:
            a prior named "3" is class id 3).
        size_priors: ((class name, length, width, height), ...) in metres.
    """

    mode: Literal["depth", "lidar"] = "depth"
    target_frame: str = "base_link"
    T_target_from_camera: np.ndarray = field(default_factory=lambda: np.eye(4))
    T_camera_from_cloud: np.ndarray | None = None
    depth_scale: float = 0.0
    depth_noise: tuple[float, float] = (0.02, 0.003)
    tracker3d: Tracker3DConfig | None = None
    prediction_max_horizon_s: float = 0.5
    max_boxes: int = 1000
    amodal_centres: bool = True
    class_names: tuple[str, ...] = ()
    size_priors: tuple[tuple[str, float, float, float], ...] = DEFAULT_SIZE_PRIORS

    def __post_init__(self) -> None:
        if self.max_boxes < 1:
            raise ValueError(f"max_boxes: expected >= 1, got {self.max_boxes}")
        if len(self.depth_noise) != 2 or not all(
            np.isfinite(v) and v >= 0 for v in self.depth_noise
        ):
            raise ValueError(f"depth_noise: expected (a, b) >= 0, got {self.depth_noise!r}")
        self.amodal()  # bad priors fail here, not at the first CameraInfo

    def amodal(self) -> AmodalConfig | None:
        """The amodal completion's configuration (None when off)."""
        if not self.amodal_centres:
            return None
        return AmodalConfig.from_names(self.class_names, self.size_priors)


@dataclass(frozen=True)
class FusionOutput:
    """3D objects of one frame, their prediction (when asked for) and the
    tracker's state covariances (6x6 per object, for Autoware-style outputs)."""

    objects: Objects3D
    predicted: Objects3D | None = None
    horizon_s: float = 0.0
    state_covariances: np.ndarray | None = None


class FusionStage:
    """Depth or LiDAR fusion for one camera (see the module docstring)."""

    def __init__(self, settings: FusionSettings, log: ThrottledLog | None = None) -> None:
        if settings.mode not in ("depth", "lidar"):
            raise ValueError(f"mode: expected 'depth' or 'lidar', got {settings.mode!r}")
        self.settings = settings
        self.log = log if log is not None else ThrottledLog()
        self.errors: defaultdict[str, int] = defaultdict(int)
        self.processed = 0
        self.camera: CameraModel | None = None
        self.lifter: DepthLifter | None = None
        self.fusion: LidarFusion | None = None
        self.tracker = (
            Tracker3D(settings.tracker3d, frame_id=settings.target_frame)
            if settings.tracker3d is not None
            else None
        )
        self.horizons_ms: deque[float] = deque(maxlen=256)

    def count(self, kind: str, message: str) -> None:
        """Count a refused input by kind and log it (throttled)."""
        self.errors[kind] += 1
        self.log.warning(kind, f"{kind}: {message}")

    def set_camera(self, camera: CameraModel) -> None:
        """New intrinsics: new lifter / LiDAR fusion (their statistics restart)."""
        self.camera = camera
        amodal = self.settings.amodal()
        if self.settings.mode == "depth":
            a, b = self.settings.depth_noise
            self.lifter = DepthLifter(
                camera, DepthLiftConfig(depth_noise_a=a, depth_noise_b=b, amodal=amodal)
            )
        else:
            self.fusion = LidarFusion(
                camera,
                LidarFusionConfig(amodal=amodal),
                T_cam_from_cloud=self.settings.T_camera_from_cloud,
            )

    def process(
        self,
        det: Detections,
        depth: np.ndarray | None = None,
        cloud: CloudInput | None = None,
        predict_to_ns: int | None = None,
    ) -> FusionOutput | None:
        """3D objects for `det`, or None when refused (counted by kind)."""
        det, dropped = keep_best(det, self.settings.max_boxes)
        if dropped:
            self.errors["boxes_dropped"] += dropped
            self.count("too_many_boxes", f"{dropped} lowest-scoring of {len(det) + dropped} "
                       f"detections not fused (max_boxes {self.settings.max_boxes})")  # fmt: skip
        try:
            objects = self._objects(det, depth, cloud)
        except (PerceptionError, ValueError) as exc:
            self.count(type(exc).__name__, str(exc))
            return None
        except Exception as exc:  # a bug on one frame must not take the caller down
            self.count("internal_error", f"{type(exc).__name__}: {exc}")
            return None
        if objects is None:
            return None
        if self.tracker is not None:
            objects = self.tracker.update(objects)
        self.processed += 1
        if predict_to_ns is None or self.tracker is None:
            return FusionOutput(objects)
        covs = self.state_covariances(objects)
        try:
            predicted, horizon = predict_objects3d(
                objects,
                predict_to_ns,
                self.settings.prediction_max_horizon_s,
                covs,
                past="hold",
            )
        except PredictionError as exc:
            self.count("prediction_refused", str(exc))
            return FusionOutput(objects, state_covariances=covs)
        self.horizons_ms.append(horizon * 1e3)
        return FusionOutput(objects, predicted, horizon, covs)

    def _objects(
        self, det: Detections, depth: np.ndarray | None, cloud: CloudInput | None
    ) -> Objects3D | None:
        s = self.settings
        if self.camera is None:
            self.count("camera_info_missing", "no CameraInfo received yet: 3D needs intrinsics")
            return None
        if s.mode == "depth":
            if depth is None or self.lifter is None:
                self.count("depth_missing", "depth mode: the frame carries no depth image")
                return None
            res = self.lifter.lift(
                det,
                depth,
                s.depth_scale or None,
                T_target_from_camera=s.T_target_from_camera,
                target_frame=s.target_frame,
            )
            return res.objects
        if cloud is None:
            self.count("cloud_missing", "lidar mode: the frame carries no point cloud")
            return None
        if self.fusion is None or s.T_camera_from_cloud is None:
            self.count("extrinsics_missing", "T_camera_from_cloud is not set")
            return None
        lres = self.fusion.fuse(det, cloud.xyz, cloud_frame_id=cloud.frame_id)
        return lres.objects.transformed(
            s.T_target_from_camera @ s.T_camera_from_cloud, s.target_frame
        )

    def state_covariances(self, objects: Objects3D) -> np.ndarray:
        """(N, 6, 6) tracker state covariance per object (identity position
        block for objects the tracker does not know)."""
        by_id = {t.track_id: t.covariance for t in self.tracker.tracks()} if self.tracker else {}
        default = np.zeros((6, 6))
        default[:3, :3] = np.eye(3)
        if not len(objects.track_ids):
            return np.zeros((0, 6, 6))
        return np.stack([by_id.get(int(i), default) for i in objects.track_ids])

    def stats(self) -> dict[str, int]:
        """The lifter's or LiDAR fusion's counters (empty before intrinsics)."""
        worker = self.lifter if self.settings.mode == "depth" else self.fusion
        return worker.stats.as_dict() if worker is not None else {}
