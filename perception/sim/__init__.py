"""Synthetic driving scenarios with exact ground truth (a test and demo source,
not a simulator): an ego vehicle with a three-camera rig and a LiDAR drives a
straight road among moving cars, pedestrians and cyclists drawn as textured
boxes. Core modules are numpy/OpenCV only; `ros_publisher` and `bag` speak the
CARLA ROS bridge topic layout."""

from perception.sim.rig import CameraMount, LidarMount, Rig, default_rig
from perception.sim.scenario import (
    CLASS_NAMES,
    ID_GROUND,
    ID_SCENERY,
    ID_SKY,
    Actor,
    CameraFrame,
    Frame,
    Lighting,
    Object3D,
    Scenario,
)

__all__ = [
    "CLASS_NAMES",
    "ID_GROUND",
    "ID_SCENERY",
    "ID_SKY",
    "Actor",
    "CameraFrame",
    "CameraMount",
    "Frame",
    "LidarMount",
    "Lighting",
    "Object3D",
    "Rig",
    "Scenario",
    "default_rig",
]
