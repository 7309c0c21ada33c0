"""Sensor rig of the ego vehicle: cameras and a LiDAR mounted on base_link.

base_link is forward-left-up at ground level under the vehicle centre. Camera
extrinsics are `T_base_from_cam` to the camera's *optical* frame (x right, y
down, z forward), the frame the CARLA ROS bridge stamps on its images
(`<role>/<sensor>`). The LiDAR frame is base_link's axes moved to the mount
point (no rotation), which is what `synthetic.lidar_scan` returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perception.core.camera import CameraModel
from perception.core.fusion.synthetic import OPTICAL_FROM_FLU, rigid

__all__ = ["CameraMount", "LidarMount", "Rig", "default_rig", "yaw_pitch_rotation"]


def yaw_pitch_rotation(yaw: float, pitch: float = 0.0) -> np.ndarray:
    """FLU rotation: yaw about z (left positive), then pitch about y
    (positive looks down)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rot: np.ndarray = rz @ ry
    return rot


@dataclass(frozen=True, eq=False)
class CameraMount:
    """One camera: a name (the CARLA sensor role, e.g. rgb_front), its
    intrinsics and the 4x4 transform from its optical frame to base_link."""

    name: str
    model: CameraModel
    T_base_from_cam: np.ndarray

    def __post_init__(self) -> None:
        t = np.asarray(self.T_base_from_cam, np.float64)
        if t.shape != (4, 4):
            raise ValueError(f"CameraMount.T_base_from_cam: expected (4, 4), got {t.shape}")
        t = t.copy()
        t.setflags(write=False)
        object.__setattr__(self, "T_base_from_cam", t)

    @classmethod
    def create(
        cls,
        name: str,
        width: int,
        height: int,
        hfov_deg: float,
        position: Sequence[float],
        yaw_deg: float = 0.0,
        pitch_deg: float = 0.0,
    ) -> CameraMount:
        """Pinhole camera without distortion (as CARLA's) from a horizontal
        field of view and a pose on base_link."""
        if not 1.0 < hfov_deg < 179.0:
            raise ValueError(f"hfov_deg: expected 1 < fov < 179, got {hfov_deg}")
        f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
        k = [[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]]
        model = CameraModel.create(width, height, k, [0.0] * 5)
        rot = yaw_pitch_rotation(math.radians(yaw_deg), math.radians(pitch_deg))
        return cls(name, model, rigid(rot @ OPTICAL_FROM_FLU.T, position))


@dataclass(frozen=True)
class LidarMount:
    """Spinning LiDAR: position on base_link, channels, resolution, range."""

    position: tuple[float, float, float] = (0.0, 0.0, 2.0)
    elevations_deg: tuple[float, ...] = tuple(float(e) for e in np.linspace(-25.0, 5.0, 16))
    n_azimuth: int = 1024
    max_range: float = 80.0
    noise_std: float = 0.0


@dataclass(frozen=True, eq=False)
class Rig:
    """Cameras (in publishing order) and an optional LiDAR."""

    cameras: tuple[CameraMount, ...]
    lidar: LidarMount | None = LidarMount()

    def __post_init__(self) -> None:
        names = [c.name for c in self.cameras]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Rig.cameras: expected unique names, got {names}")

    def camera(self, name: str) -> CameraMount:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"no camera {name!r}; have {[c.name for c in self.cameras]}")


def default_rig(width: int = 640, height: int = 360, hfov_deg: float = 90.0) -> Rig:
    """Front camera and two side cameras (CARLA roles rgb_front, rgb_left,
    rgb_right, the names in config/carla.yaml) on the roof, slightly pitched
    down, covering 270 degrees, and a roof LiDAR."""
    return Rig(
        cameras=(
            CameraMount.create("rgb_front", width, height, hfov_deg, (1.5, 0.0, 1.7), 0.0, 3.0),
            CameraMount.create("rgb_left", width, height, hfov_deg, (0.5, 0.5, 1.7), 90.0, 3.0),
            CameraMount.create("rgb_right", width, height, hfov_deg, (0.5, -0.5, 1.7), -90.0, 3.0),
        ),
        lidar=LidarMount(),
    )
