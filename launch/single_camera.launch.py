"""Detector with config/single_camera.yaml.

ros2 launch perception single_camera.launch.py model:=MODEL
"""

from perception.ros.launch_helpers import detector_launch_description


def generate_launch_description():
    return detector_launch_description("single_camera.yaml")
