"""Launch descriptions shared by the files in launch/ (needs launch_ros).

Two shapes: one detector node (plain or lifecycle) whose parameters come from
one YAML in config/, and a whole pipeline (every node of a
config/pipeline_*.yaml, the file `./dev demo` runs); the model path and the
config file are overridable on the command line:

    ros2 launch perception carla.launch.py model:=/models/yolo11n.onnx
    ros2 launch perception pipeline.launch.py model:=/models/yolo11n.onnx
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = [
    "EXECUTABLES",
    "detector_launch_description",
    "pipeline_launch_description",
    "pipeline_nodes",
]

# run_config node kind -> console script of setup.py
EXECUTABLES = {
    "detector": "detector_node",
    "detector_lifecycle": "detector_lifecycle_node",
    "tracker": "tracker_node",
    "fusion": "fusion_node",
    "overlay": "overlay_node",
}


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


def pipeline_nodes(config: str | Path) -> list[tuple[str, str]]:
    """(node name, node kind) of every node of a pipeline file, in file order
    (the same reading and checks as run_config; no launch_ros needed)."""
    from perception.config.files import TYPE_KEY, load_config

    data = load_config(Path(config), [])
    return [(name, str(body["ros__parameters"][TYPE_KEY])) for name, body in data.items()]


def pipeline_launch_description(config_name: str) -> Any:
    """Every node of a pipeline file, each in its own process, named as in the
    file (the file's topics are absolute, so no namespace). `model:=` sets the
    detectors' model.path; `labels:=` their model.labels_file and the
    class_names of the fusion and overlay nodes. A detector_lifecycle node
    starts unconfigured, as under the detector launch files."""
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node

    from launch import LaunchDescription

    default_config = os.path.join(get_package_share_directory("perception"), "config", config_name)

    def nodes(context: Any) -> list[Any]:
        path = LaunchConfiguration("config").perform(context)
        model = LaunchConfiguration("model").perform(context)
        labels = LaunchConfiguration("labels").perform(context)
        names = (
            [ln.strip() for ln in Path(labels).read_text().splitlines() if ln.strip()]
            if labels
            else []
        )
        actions = []
        for name, kind in pipeline_nodes(path):
            overrides: dict[str, Any] = {}
            if kind.startswith("detector"):
                overrides["model.path"] = model
                if labels:
                    overrides["model.labels_file"] = labels
            elif kind in ("fusion", "overlay") and names:
                overrides["class_names"] = names
            cls = LifecycleNode if kind == "detector_lifecycle" else Node
            actions.append(
                cls(
                    package="perception",
                    executable=EXECUTABLES[kind],
                    name=name,
                    namespace="",
                    parameters=[path, overrides],
                    output="screen",
                )
            )
        return actions

    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config",
                default_value=default_config,
                description="Pipeline parameter file (config/pipeline_*.yaml)",
            ),
            DeclareLaunchArgument("model", description="Model file (.onnx, .engine, .pt)"),
            DeclareLaunchArgument(
                "labels",
                default_value="",
                description="Class names file, one per line (default: the model's own names "
                "and the class_names of the file)",
            ),
            OpaqueFunction(function=nodes),
        ]
    )
