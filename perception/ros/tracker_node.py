"""tracker_node: track ids for Detection2DArray streams, one tracker per camera.

Subscribes every topic of `input_topics` (vision_msgs/Detection2DArray, e.g.
the detector's `~/<camera>/detections`) and publishes on the matching entry of
`output_topics` (default: `<input>/tracks`) the tracked boxes with the track
id in `Detection2D.id`, keeping the input header (stamp and frame_id). Each
(input topic, frame_id) pair has its own `perception.core.tracking.Tracker`:
ids are unique per camera and stable for the node's lifetime, stamps are
checked per camera (duplicates and out-of-order messages are dropped and not
republished; a clock going back, as when a simulator restarts, resets that
camera's tracks with a warning).

Tracker parameters are `tracker.<name>` for every field of `TrackerConfig`
(its defaults are the single source), declared with typed descriptors and
changeable at run time; a value the tracker would refuse is rejected by the
on-set callback with the reason.

    ros2 run perception tracker_node --ros-args \
        -p input_topics:="[/cam0/detections, /cam1/detections]" -p tracker.high_score:=0.6
"""

from __future__ import annotations

import re
import sys
from dataclasses import fields
from functools import partial
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from vision_msgs.msg import Detection2DArray

from perception.core.tracking import MultiCameraTracker, TrackerConfig, TrackerConfigError
from perception.core.tracking.config import UNIT_INTERVAL_FIELDS
from perception.ros.conversions import detections_to_msg, msg_to_detections
from perception.ros.params import ParameterError, ParamSpec, declare_from_spec, validate
from perception.ros.runner import run_node

__all__ = ["TrackerNode", "main", "tracker_param_specs"]

PREFIX = "tracker."
_ROS_TYPE = {"float": "double", "int": "int", "bool": "bool", "Solver": "string"}


def _field_docs() -> dict[str, str]:
    """Attribute descriptions from the TrackerConfig docstring (one source)."""
    doc = TrackerConfig.__doc__ or ""
    out: dict[str, str] = {}
    name = None
    for line in doc.split("Attributes:", 1)[-1].splitlines():
        m = re.match(r"^\s{8}(\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name and line.startswith(" " * 12):
            out[name] += " " + line.strip()
    return out


def tracker_param_specs() -> dict[str, ParamSpec]:
    """One dynamic ROS parameter per TrackerConfig field, default from the dataclass."""
    defaults = TrackerConfig()
    docs = _field_docs()
    specs = {}
    for f in fields(TrackerConfig):
        specs[f.name] = ParamSpec(
            name=f.name,
            type=_ROS_TYPE[str(f.type)],
            default=getattr(defaults, f.name),
            description=docs.get(f.name, ""),
            choices=("lap", "scipy") if f.name == "solver" else None,
            range=(0.0, 1.0) if f.name in UNIT_INTERVAL_FIELDS else None,
            dynamic=True,
        )
    return specs


class TrackerNode(Node):
    """Plain rclpy node around `MultiCameraTracker` (one per input topic)."""

    def __init__(self, node_name: str = "tracker", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._declare_static()
        self._specs = {PREFIX + k: v for k, v in tracker_param_specs().items()}
        try:
            values = declare_from_spec(self, tracker_param_specs(), PREFIX)
            config = TrackerConfig(**values)
        except (ParameterError, TrackerConfigError) as exc:
            raise ParameterError(f"tracker_node: {exc}") from exc
        self._config = config
        self.trackers = [MultiCameraTracker(config) for _ in self.input_topics]
        self.published = [0] * len(self.input_topics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        qos = QoSProfile(depth=self.qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = [
            self.create_publisher(Detection2DArray, topic, qos) for topic in self.output_topics
        ]
        self._subs = [
            self.create_subscription(Detection2DArray, topic, partial(self._on_msg, i), qos)
            for i, topic in enumerate(self.input_topics)
        ]
        self.get_logger().info(
            f"tracking {self.input_topics} -> {self.output_topics} with {config.as_dict()}"
        )

    # ------------------------------------------------------------ parameters
    def _declare_static(self) -> None:
        def ro(desc: str, ptype: int) -> ParameterDescriptor:
            return ParameterDescriptor(description=desc, type=ptype, read_only=True)

        arr = ParameterType.PARAMETER_STRING_ARRAY
        self.declare_parameter(
            "input_topics",
            ["detections"],
            ro("Detection2DArray topics to track (one tracker set each).", arr),
        )
        self.declare_parameter(
            "output_topics", [""], ro("Tracks topic per input; [''] = '<input>/tracks'.", arr)
        )
        self.declare_parameter(
            "class_names", [""], ro("Class names, index = class id; [''] = numeric ids.", arr)
        )
        self.declare_parameter(
            "class_format",
            "name",
            ro("Class written as 'name' or numeric 'id'.", ParameterType.PARAMETER_STRING),
        )
        self.declare_parameter(
            "qos_depth",
            10,
            ro(
                "Queue depth of subscriptions and publishers (>= 1).",
                ParameterType.PARAMETER_INTEGER,
            ),
        )
        inputs = [t for t in self.get_parameter("input_topics").value if t]
        outputs = [t for t in self.get_parameter("output_topics").value if t]
        if not inputs:
            raise ParameterError("input_topics: expected at least one topic, got none")
        if len(set(inputs)) != len(inputs):
            raise ParameterError(f"input_topics: expected distinct topics, got {inputs}")
        if not outputs:
            outputs = [t.rstrip("/") + "/tracks" for t in inputs]
        if len(outputs) != len(inputs):
            raise ParameterError(
                f"output_topics: expected {len(inputs)} topics (one per input), got {outputs}"
            )
        if set(outputs) & set(inputs):
            raise ParameterError(f"output_topics: expected none of the inputs, got {outputs}")
        fmt = self.get_parameter("class_format").value
        if fmt not in ("name", "id"):
            raise ParameterError(f"class_format: expected 'name' or 'id', got {fmt!r}")
        depth = self.get_parameter("qos_depth").value
        if depth < 1:
            raise ParameterError(f"qos_depth: expected >= 1, got {depth}")
        self.input_topics: list[str] = inputs
        self.output_topics: list[str] = outputs
        self.class_names: list[str] = [n for n in self.get_parameter("class_names").value if n]
        self.class_format: str = fmt
        self.qos_depth: int = int(depth)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate tracker.* changes one by one, then together as a config;
        apply them only if all pass."""
        changes: dict[str, Any] = {}
        for p in params:
            spec = self._specs.get(p.name)
            if spec is None:
                continue
            value = p.value
            reason = validate(p.name, spec, value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if spec.type == "double":
                value = float(value)
            changes[spec.name] = value
        if not changes:
            return SetParametersResult(successful=True)
        try:
            config = self._config.replace(**changes)
        except TrackerConfigError as exc:
            return SetParametersResult(successful=False, reason=f"tracker.{exc}")
        self._config = config
        for t in self.trackers:
            t.set_config(config)
        self.get_logger().info(f"tracker parameters changed: {changes}")
        return SetParametersResult(successful=True)

    @property
    def config(self) -> TrackerConfig:
        return self._config

    # ------------------------------------------------------------ data path
    def _on_msg(self, index: int, msg: Detection2DArray) -> None:
        det = msg_to_detections(msg, self.class_names)
        multi = self.trackers[index]
        tracker = multi.tracker(det.frame_id)
        rejected = tracker.stats.frames_rejected if tracker is not None else 0
        out = multi.update(det)
        tracker = multi.tracker(det.frame_id)
        if tracker is not None and tracker.stats.frames_rejected > rejected:
            return  # duplicate or out-of-order: already logged by the tracker
        self._pubs[index].publish(
            detections_to_msg(out, self.class_names, self.class_format, header=msg.header)
        )
        self.published[index] += 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the tracker node."""
    return run_node(TrackerNode, argv, name="tracker")


if __name__ == "__main__":
    sys.exit(main())
