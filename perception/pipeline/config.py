"""Typed spec parameters -> pipeline settings (the one bridge, used by the
nodes, replay, the CLIs and the benchmarks)."""

from __future__ import annotations

from perception.config.generated import FusionParams, Tracker3DParams
from perception.config.transforms import rigid_transform
from perception.pipeline.fusion import FusionSettings

__all__ = ["fusion_settings"]


def fusion_settings(p: FusionParams, tracker3d: Tracker3DParams | None = None) -> FusionSettings:
    """The fusion stage's settings from the fusion node's parameters."""
    cloud = p.T_camera_from_cloud
    return FusionSettings(
        mode=p.mode,
        target_frame=p.target_frame,
        T_target_from_camera=rigid_transform("T_target_from_camera", p.T_target_from_camera),
        T_camera_from_cloud=rigid_transform("T_camera_from_cloud", cloud) if cloud else None,
        depth_scale=p.depth_scale,
        tracker3d=(tracker3d or Tracker3DParams()).to_config() if p.tracking else None,
        prediction_max_horizon_s=p.prediction_max_horizon_s,
        max_boxes=p.max_boxes,
    )
