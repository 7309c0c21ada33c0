"""Detector with config/multi_camera.yaml.

ros2 launch perception multi_camera.launch.py model:=MODEL
"""

from perception.ros.launch_helpers import detector_launch_description


def generate_launch_description():
    return detector_launch_description("multi_camera.yaml")
