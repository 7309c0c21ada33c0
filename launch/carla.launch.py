"""Detector with config/carla.yaml.

ros2 launch perception carla.launch.py model:=MODEL
"""

from perception.ros.launch_helpers import detector_launch_description


def generate_launch_description():
    return detector_launch_description("carla.yaml")
