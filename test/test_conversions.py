"""Detections <-> vision_msgs/Detection2DArray, in-process and across processes."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from perception.core.types import Detections

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not importable; run ./dev test")

from vision_msgs.msg import Detection2D, Detection2DArray

from perception.ros.conversions import (
    detections_to_msg,
    label_info_msg,
    msg_to_detections,
    ns_to_stamp,
    stamp_to_ns,
)

NAMES = ["person", "bicycle", "car"]


def sample(seed: int = 0, n: int = 6, stamp_ns: int = 1_732_000_000_987_654_321) -> Detections:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1800, (n, 2)).astype(np.float32)
    wh = rng.uniform(0.5, 300, (n, 2)).astype(np.float32)
    tids = rng.integers(0, 10_000, n)
    tids[::3] = -1  # some untracked
    cls = rng.integers(0, len(NAMES) + 2, n)  # ids past the name list fall back to numbers
    return Detections.from_arrays(
        np.hstack([xy, xy + wh]),
        rng.uniform(0, 1, n),
        cls,
        tids,
        stamp_ns=stamp_ns,
        frame_id="camera_front_optical",
    )


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_732_000_000_987_654_321])
def test_stamp_ns_round_trip(ns):
    t = ns_to_stamp(ns)
    assert 0 <= t.nanosec < 1_000_000_000
    assert stamp_to_ns(t) == ns


def test_to_msg_layout():
    det = sample()
    msg = detections_to_msg(det, NAMES)
    assert msg.header.frame_id == det.frame_id
    assert stamp_to_ns(msg.header.stamp) == det.stamp_ns
    assert len(msg.detections) == len(det)
    for i, d in enumerate(msg.detections):
        x1, y1, x2, y2 = det.xyxy[i].astype(float)
        assert d.header == msg.header
        assert math.isclose(d.bbox.center.position.x, (x1 + x2) / 2)
        assert math.isclose(d.bbox.size_y, y2 - y1)
        assert d.bbox.center.theta == 0.0
        c = int(det.class_ids[i])
        assert d.results[0].hypothesis.class_id == (NAMES[c] if c < len(NAMES) else str(c))
        assert d.id == ("" if det.track_ids[i] < 0 else str(det.track_ids[i]))
    ids_only = detections_to_msg(det, NAMES, class_format="id")
    assert [d.results[0].hypothesis.class_id for d in ids_only.detections] == [
        str(c) for c in det.class_ids
    ]


@pytest.mark.parametrize("class_format", ["name", "id"])
def test_round_trip_is_exact(class_format):
    for seed in range(5):
        det = sample(seed)
        back = msg_to_detections(detections_to_msg(det, NAMES, class_format), NAMES)
        assert back.equals(det), (det, back)
    empty = Detections.empty(stamp_ns=42, frame_id="cam")
    assert msg_to_detections(detections_to_msg(empty)).equals(empty)


def test_from_foreign_messages():
    msg = Detection2DArray()
    msg.header.frame_id = "cam"
    d = Detection2D(id="not-a-number")
    d.bbox.center.position.x, d.bbox.center.position.y = 100.0, 50.0
    d.bbox.size_x, d.bbox.size_y = 20.0, 10.0
    d.bbox.center.theta = math.pi / 2  # rotated: axis-aligned hull swaps w and h
    msg.detections = [d, Detection2D(id="17")]
    det = msg_to_detections(msg, NAMES)
    np.testing.assert_allclose(det.xyxy[0], [95, 40, 105, 60], atol=1e-4)
    assert det.track_ids.tolist() == [-1, 17]
    assert det.class_ids.tolist() == [-1, -1]  # no hypothesis -> unknown class
    assert det.scores.tolist() == [0.0, 0.0]


def test_label_info():
    info = label_info_msg(NAMES, threshold=0.25)
    assert [(c.class_id, c.class_name) for c in info.class_map] == list(enumerate(NAMES))
    assert info.threshold == pytest.approx(0.25)


@pytest.mark.ros
def test_cross_process_round_trip(ros_context, executor):
    """Detections -> message -> DDS -> another process (decode + re-encode) -> back.

    Proves the vision_msgs build, both conversion directions and the DDS
    settings together, with real rclpy in two processes.
    """
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from perception.ros.testing import NodeProcess, spin_until

    qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    node = Node("round_trip_test", context=ros_context)
    executor.add_node(node)
    received: list[Detection2DArray] = []
    pub = node.create_publisher(Detection2DArray, "/round_trip/in", qos)
    node.create_subscription(Detection2DArray, "/round_trip/out", received.append, qos)
    sent = [sample(seed, stamp_ns=1_732_000_000_000_000_000 + seed) for seed in range(4)]
    sent.append(Detections.empty(stamp_ns=1_732_000_000_000_000_099, frame_id="camera_left"))
    argv = [
        "--ros-args",
        "-r",
        "in:=/round_trip/in",
        "-r",
        "out:=/round_trip/out",
        "-p",
        "class_names:=[" + ",".join(NAMES) + "]",
    ]
    with NodeProcess([sys.executable, "-m", "perception.ros.tools.detection_echo", *argv]) as proc:
        matched = spin_until(
            executor,
            lambda: (
                pub.get_subscription_count() > 0 and node.count_publishers("/round_trip/out") > 0
            ),
            timeout_s=30,
        )
        assert matched, f"echo process never matched; its output:\n{proc.output()}"
        for det in sent:
            pub.publish(detections_to_msg(det, NAMES))
        ok = spin_until(executor, lambda: len(received) >= len(sent), timeout_s=30)
        assert ok, f"got {len(received)}/{len(sent)} echoes; echo output:\n{proc.output()}"
    got = sorted((msg_to_detections(m, NAMES) for m in received), key=lambda d: d.stamp_ns)
    for want, have in zip(sent, got, strict=True):
        assert have.equals(want), (want, have)
    node.destroy_node()
