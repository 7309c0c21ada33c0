"""Launch descriptions shared by the files in launch/ (needs launch_ros).

Every launch file is the same shape: one detector node (plain or lifecycle)
whose parameters come from one YAML in config/, with the model path and the
config file overridable on the command line:

    ros2 launch perception carla.launch.py model:=/models/yolo11n.onnx
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["detector_launch_description"]


def detector_launch_description(config_name: str) -> Any:
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import DeclareLaunchArgument
    from launch.conditions import IfCondition, UnlessCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node

    from launch import LaunchDescription

    default_config = os.path.join(get_package_share_directory("perception"), "config", config_name)
    config = LaunchConfiguration("config")
    overrides = {"model.path": LaunchConfiguration("model")}
    common: dict[str, Any] = {
        "package": "perception",
        "name": LaunchConfiguration("node_name"),
        "namespace": LaunchConfiguration("namespace"),
        "parameters": [config, overrides],
        "output": "screen",
    }
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config",
                default_value=default_config,
                description="ROS 2 parameter file for the detector",
            ),
            DeclareLaunchArgument("model", description="Model file (.onnx, .engine, .pt)"),
            DeclareLaunchArgument("node_name", default_value="detector"),
            DeclareLaunchArgument("namespace", default_value=""),
            DeclareLaunchArgument(
                "lifecycle",
                default_value="false",
                description="Run the managed (lifecycle) detector",
            ),
            Node(
                executable="detector_node",
                condition=UnlessCondition(LaunchConfiguration("lifecycle")),
                **common,
            ),
            LifecycleNode(
                executable="detector_lifecycle_node",
                condition=IfCondition(LaunchConfiguration("lifecycle")),
                **common,
            ),
        ]
    )
