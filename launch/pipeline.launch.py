"""The whole pipeline of config/pipeline_carla.yaml (what `./dev demo` runs):
detector with tracking, one depth fusion node per camera, overlay.

ros2 launch perception pipeline.launch.py model:=MODEL [labels:=LABELS]
    [config:=.../config/pipeline_gazebo.yaml]
"""

from perception.ros.launch_helpers import pipeline_launch_description


def generate_launch_description():
    return pipeline_launch_description("pipeline_carla.yaml")
