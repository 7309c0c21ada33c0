"""tracker_node: track ids for Detection2DArray streams, one tracker per input topic.

Subscribes every topic of `input_topics` (vision_msgs/Detection2DArray, e.g.
the detector's `~/<camera>/detections`) and publishes on the matching entry of
`output_topics` (default: `<input>/tracks`) the tracked boxes with the track
id in `Detection2D.id`, keeping the input header (stamp and frame_id).

Each input topic is one camera with its own `perception.core.tracking.Tracker`:
the topic is configured, the frame_id on the wire is not, so it is never a
key (a frame_id per message cannot create trackers, and another camera's
clock cannot reset this one's tracks). A tracker follows the frame_id of its
first frame; messages with another one are rejected and counted. Ids are
unique per input and stable for the node's lifetime; stamps are checked per
input (duplicates and out-of-order messages are dropped and not republished;
a clock going back, as when a simulator restarts, resets that input's tracks
with a warning). At most `max_boxes` detections of a message are tracked
(the highest scores; the rest counted as boxes_dropped / too_many_boxes), so
one message cannot stall the node. Every problem is counted per input topic
and reported on /diagnostics; warnings are throttled; no message ends the node.

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
from collections import defaultdict
from functools import partial
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from vision_msgs.msg import Detection2DArray

from perception.config import TrackerNodeParams, TrackerParams
from perception.core.message_fields import MessageFieldError
from perception.core.tracking import Tracker, TrackerConfig, keep_best
from perception.pipeline.log import ThrottledLog
from perception.pipeline.status import OK, WARN, Status
from perception.ros.conversions import detections_to_msg, msg_to_detections
from perception.ros.diagnostics import diagnostic_array
from perception.ros.params import (
    ParameterError,
    declare_params,
    on_set_validator,
    param_changes,
    specs_of,
)
from perception.ros.runner import run_node

__all__ = ["TrackerNode", "main"]

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
    """Plain rclpy node around one `Tracker` per input topic."""

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
        self.log = ThrottledLog(self.get_logger())
        self._config = self.tracker_params.to_config()
        # one per input topic, never per frame_id: the topic is the camera
        self.trackers = [Tracker(self._config) for _ in self.input_topics]
        self.published = [0] * len(self.input_topics)
        self.errors: list[defaultdict[str, int]] = [defaultdict(int) for _ in self.input_topics]
        self._check_spec = on_set_validator(
            {PREFIX + k: v for k, v in specs_of(TrackerParams).items()}
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        qos = QoSProfile(depth=self.qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = [
            self.create_publisher(Detection2DArray, topic, qos) for topic in self.output_topics
        ]
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._subs = [
            self.create_subscription(Detection2DArray, topic, partial(self._on_msg, i), qos)
            for i, topic in enumerate(self.input_topics)
        ]
        self.create_timer(p.diagnostics_period_s, self.publish_diagnostics)
        self.get_logger().info(
            f"tracking {self.input_topics} -> {self.output_topics} with {self._config.as_dict()}"
        )
        if self._config.camera_motion_compensation:
            self.get_logger().warning(
                "tracker.camera_motion_compensation is on, but this node only receives "
                "boxes (no images): it has no effect here; set it on the detector node"
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
    def count(self, index: int, kind: str, message: str, n: int = 1) -> None:
        """Count a problem of input `index` by kind; log it throttled."""
        self.errors[index][kind] += n
        topic = self.input_topics[index]
        self.log.warning(f"{kind}.{index}", f"{topic}: {kind}: {message}")

    def _on_msg(self, index: int, msg: Detection2DArray) -> None:
        try:
            self._track(index, msg)
        except Exception as exc:  # last resort: one message must not end the node
            self.count(index, "callback_error", f"{type(exc).__name__}: {exc}")

    def _track(self, index: int, msg: Detection2DArray) -> None:
        rejected: dict[str, int] = {}
        try:
            det = msg_to_detections(msg, self.class_names, rejected=rejected)
        except MessageFieldError as exc:  # e.g. a stamp out of range: no usable time
            self.count(index, f"bad_{exc.kind}", f"message dropped: {exc}")
            return
        for kind, n in rejected.items():
            self.count(index, f"rows_rejected.{kind}", f"{n} detection(s) dropped", n)
        det, dropped = keep_best(det, self.params.max_boxes)
        if dropped:
            self.errors[index]["boxes_dropped"] += dropped
            self.count(index, "too_many_boxes", f"{dropped} lowest-scoring of {len(det) + dropped} "
                       f"detections dropped (max_boxes {self.params.max_boxes})")  # fmt: skip
        tracker = self.trackers[index]
        rejected_frames = tracker.stats.frames_rejected
        out = tracker.update(det)
        if tracker.stats.frames_rejected > rejected_frames:
            return  # other frame_id, duplicate or out-of-order stamp: counted by the tracker
        self._pubs[index].publish(
            detections_to_msg(out, self.class_names, self.class_format, header=msg.header)
        )
        self.published[index] += 1

    # ------------------------------------------------------------ diagnostics
    def counters(self, index: int) -> dict[str, int]:
        """Input `index`: published, the node's error counts (by kind) and the
        tracker's frame / row counters (`tracker.<name>`)."""
        out = {"published": self.published[index]}
        out.update({f"error.{k}": v for k, v in sorted(self.errors[index].items())})
        out.update({f"tracker.{k}": v for k, v in self.trackers[index].stats.as_dict().items()})
        out["tracker.tracks"] = len(self.trackers[index])
        return out

    def statuses(self) -> list[Status]:
        """One status per input topic (warns when something was dropped or rejected)."""
        out = []
        for i, topic in enumerate(self.input_topics):
            c = self.counters(i)
            stats = self.trackers[i].stats
            problems = sum(self.errors[i].values()) + stats.frames_rejected
            out.append(
                Status(
                    name=f"{self.get_fully_qualified_name()}: input {topic}",
                    level=WARN if problems else OK,
                    message=f"{c['published']} published, {stats.frames_rejected} frames "
                    f"rejected, {sum(self.errors[i].values())} problems",
                    hardware_id=self.trackers[i].frame_id or "",
                    values={k: str(v) for k, v in c.items()},
                )
            )
        return out

    def publish_diagnostics(self) -> None:
        stamp = self.get_clock().now().to_msg()
        self._pub_diag.publish(diagnostic_array(self.statuses(), stamp))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the tracker node."""
    return run_node(TrackerNode, argv, name="tracker")


if __name__ == "__main__":
    sys.exit(main())
