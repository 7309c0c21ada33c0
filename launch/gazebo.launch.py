"""Detector with config/gazebo.yaml.

ros2 launch perception gazebo.launch.py model:=MODEL
"""

from perception.ros.launch_helpers import detector_launch_description


def generate_launch_description():
    return detector_launch_description("gazebo.yaml")
