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

All parameters come from specs/tracker.params.yaml: the node's own
(section `tracker_node`, read-only) and `tracker.<name>` for every field of
`TrackerConfig` (section `tracker`, changeable at run time). A value the spec
or the tracker would refuse (e.g. low_score above high_score) is rejected by
the on-set callback with the reason.

    ros2 run perception tracker_node --ros-args \
        -p input_topics:="[/cam0/detections, /cam1/detections]" -p tracker.high_score:=0.6
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from vision_msgs.msg import Detection2DArray

from perception.config import TrackerNodeParams, TrackerParams
from perception.core.tracking import MultiCameraTracker, TrackerConfig
from perception.ros.conversions import detections_to_msg, msg_to_detections
from perception.ros.params import (
    ParameterError,
    declare_params,
    on_set_validator,
    param_changes,
    specs_of,
    tracker_param_specs,
)
from perception.ros.runner import run_node

# tracker_param_specs: re-exported for callers that still import it from here;
# new code imports it (or TrackerParams) from perception.ros.params / perception.config.
__all__ = ["TrackerNode", "main", "tracker_param_specs"]

PREFIX = "tracker."


def _topics(p: TrackerNodeParams) -> tuple[list[str], list[str]]:
    """Input and output topics, checked together (empty strings ignored)."""
    inputs = [t for t in p.input_topics if t]
    outputs = [t for t in p.output_topics if t]
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
    return inputs, outputs


class TrackerNode(Node):
    """Plain rclpy node around `MultiCameraTracker` (one per input topic)."""

    def __init__(self, node_name: str = "tracker", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        try:
            p = declare_params(self, TrackerNodeParams)
            self.input_topics, self.output_topics = _topics(p)
            self.tracker_params = declare_params(self, TrackerParams, PREFIX)
        except ParameterError as exc:
            raise ParameterError(f"tracker_node: {exc}") from exc
        self.params = p
        self.class_names: list[str] = [n for n in p.class_names if n]
        self.class_format = p.class_format
        self.qos_depth: int = p.qos_depth
        self._config = self.tracker_params.to_config()
        self.trackers = [MultiCameraTracker(self._config) for _ in self.input_topics]
        self.published = [0] * len(self.input_topics)
        self._check_spec = on_set_validator(
            {PREFIX + k: v for k, v in specs_of(TrackerParams).items()}
        )
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
            f"tracking {self.input_topics} -> {self.output_topics} with {self._config.as_dict()}"
        )

    # ------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Check tracker.* changes against the spec one by one, then together with the
        tracker's own rules; apply them only if all pass."""
        result = self._check_spec(params)
        changes = param_changes(params, PREFIX)
        if not result.successful or not changes:
            return result
        try:
            new = self.tracker_params.with_flat(changes, PREFIX)
        except ParameterError as exc:
            reason = str(exc)
            return SetParametersResult(
                successful=False, reason=reason if reason.startswith(PREFIX) else PREFIX + reason
            )
        self.tracker_params = new
        self._config = new.to_config()
        for t in self.trackers:
            t.set_config(self._config)
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
