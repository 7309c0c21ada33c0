"""Typed spec parameters -> pipeline settings (the one bridge, used by the
nodes, replay, the CLIs and the benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

from perception.config.generated import FusionParams, Tracker3DParams
from perception.config.transforms import rigid_transform
from perception.pipeline.fusion import FusionSettings

__all__ = ["fusion_settings", "size_priors"]


def fusion_settings(p: FusionParams, tracker3d: Tracker3DParams | None = None) -> FusionSettings:
    """The fusion stage's settings from the fusion node's parameters."""
    cloud = p.T_camera_from_cloud
    return FusionSettings(
        mode=p.mode,
        target_frame=p.target_frame,
        T_target_from_camera=rigid_transform("T_target_from_camera", p.T_target_from_camera),
        T_camera_from_cloud=rigid_transform("T_camera_from_cloud", cloud) if cloud else None,
        depth_scale=p.depth_scale,
        depth_noise=_pair("depth_noise_m", p.depth_noise_m),
        tracker3d=(tracker3d or Tracker3DParams()).to_config() if p.tracking else None,
        prediction_max_horizon_s=p.prediction_max_horizon_s,
        max_boxes=p.max_boxes,
        amodal_centres=p.amodal_centres,
        class_names=tuple(p.class_names),
        size_priors=size_priors(p.size_prior_classes, p.size_prior_lwh_m),
    )


def size_priors(
    classes: Sequence[str], lwh: Sequence[float]
) -> tuple[tuple[str, float, float, float], ...]:
    """size_prior_classes + the flat size_prior_lwh_m -> (name, l, w, h) rows."""
    if len(lwh) != 3 * len(classes):
        raise ValueError(
            f"size_prior_lwh_m: expected 3 values per size_prior_classes entry "
            f"({3 * len(classes)}), got {len(lwh)}"
        )
    return tuple(
        (str(c), float(lwh[3 * k]), float(lwh[3 * k + 1]), float(lwh[3 * k + 2]))
        for k, c in enumerate(classes)
    )


def _pair(name: str, values: Sequence[float]) -> tuple[float, float]:
    if len(values) != 2:
        raise ValueError(f"{name}: expected 2 values [a, b], got {len(values)}")
    return float(values[0]), float(values[1])
