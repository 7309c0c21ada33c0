"""detection_echo: decode Detection2DArray into core detections and re-publish.

A check tool for the message boundary: what comes out on `~/out` is what a
perception node would publish for the detections it understood on `~/in`.
Comparing both ends shows whether stamps, frames, boxes, classes and track
ids survive conversion and transport (remap `in`/`out` as needed).

    ros2 run perception detection_echo --ros-args -r in:=/cam/detections \
        -r out:=/cam/detections_echo -p class_names:="[person, car]"
"""

from __future__ import annotations

import sys
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from vision_msgs.msg import Detection2DArray

from perception.ros.conversions import detections_to_msg, msg_to_detections
from perception.ros.runner import run_node


class DetectionEcho(Node):
    """Subscribes `in`, publishes `out` after a full round trip through `Detections`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("detection_echo", **kwargs)
        self.declare_parameter(
            "class_names",
            [""],
            ParameterDescriptor(
                type=ParameterType.PARAMETER_STRING_ARRAY,
                description="Class names; index = class id. [''] means ids only.",
            ),
        )
        names = [n for n in self.get_parameter("class_names").value if n]
        self.class_names: list[str] = names
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.received = 0
        self.pub = self.create_publisher(Detection2DArray, "out", qos)
        self.sub = self.create_subscription(Detection2DArray, "in", self._on_msg, qos)

    def _on_msg(self, msg: Detection2DArray) -> None:
        self.received += 1
        det = msg_to_detections(msg, self.class_names)
        self.pub.publish(detections_to_msg(det, self.class_names))


def main(argv: list[str] | None = None) -> int:
    return run_node(DetectionEcho, argv, name="detection_echo")


if __name__ == "__main__":
    sys.exit(main())
