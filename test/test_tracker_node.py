"""tracker_node with real rclpy in-process: isolated Context, the node and a
test node on one SingleThreadedExecutor, waiting on conditions with a deadline
(see test/conftest.py `ros_context` / `executor`)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
vision_msgs = pytest.importorskip("vision_msgs.msg")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from vision_msgs.msg import (  # noqa: E402
    Detection2D,
    Detection2DArray,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
)

from perception.ros.conversions import ns_to_stamp  # noqa: E402
from perception.ros.params import ParameterError  # noqa: E402
from perception.ros.testing import spin_until  # noqa: E402
from perception.ros.tracker_node import TrackerNode  # noqa: E402

QOS = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)


def make_msg(
    frame_id: str, stamp_ns: int, centers: list[tuple[float, float]], cls: str = "person"
) -> Detection2DArray:
    msg = Detection2DArray()
    msg.header.frame_id = frame_id
    msg.header.stamp = ns_to_stamp(stamp_ns)
    for cx, cy in centers:
        d = Detection2D()
        d.header = msg.header
        d.bbox.center.position.x = float(cx)
        d.bbox.center.position.y = float(cy)
        d.bbox.size_x = 40.0
        d.bbox.size_y = 80.0
        d.results = [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=cls, score=0.9))]
        msg.detections.append(d)
    return msg


@pytest.fixture
def setup(ros_context, executor):
    node = TrackerNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("input_topics", value=["/cam_a/detections", "/cam_b/detections"]),
            Parameter("class_names", value=["person", "car"]),
            Parameter("tracker.max_lost_s", value=3.0),
        ],
    )
    peer = rclpy.create_node("tracker_node_test_peer", context=ros_context)
    received: dict[str, list[Detection2DArray]] = {"a": [], "b": []}
    peer.create_subscription(
        Detection2DArray, "/cam_a/detections/tracks", received["a"].append, QOS
    )
    peer.create_subscription(
        Detection2DArray, "/cam_b/detections/tracks", received["b"].append, QOS
    )
    pubs = {
        "a": peer.create_publisher(Detection2DArray, "/cam_a/detections", QOS),
        "b": peer.create_publisher(Detection2DArray, "/cam_b/detections", QOS),
    }
    executor.add_node(node)
    executor.add_node(peer)
    ok = spin_until(
        executor,
        lambda: (
            all(p.get_subscription_count() >= 1 for p in pubs.values())
            and peer.count_publishers("/cam_a/detections/tracks") >= 1
        ),
        10.0,
    )
    assert ok, "tracker_node did not connect"
    try:
        yield node, pubs, received, executor
    finally:
        executor.remove_node(peer)
        executor.remove_node(node)
        peer.destroy_node()
        node.destroy_node()


def ids(msg: Detection2DArray) -> list[str]:
    return [d.id for d in msg.detections]


def test_tracks_published_per_camera_with_stable_ids_and_header(setup) -> None:
    node, pubs, received, executor = setup
    base = 1_700_000_000_000_000_000
    for k in range(4):
        stamp = base + k * 40_000_000
        pubs["a"].publish(make_msg("cam_a", stamp, [(100 + 3 * k, 200), (400 - 3 * k, 200)]))
        pubs["b"].publish(make_msg("cam_b", stamp, [(300, 300 + 2 * k)]))
        n = k + 1
        assert spin_until(
            executor, lambda n=n: len(received["a"]) >= n and len(received["b"]) >= n, 10.0
        ), "tracks did not arrive"
    a, b = received["a"], received["b"]
    assert a[0].header.frame_id == "cam_a" and b[0].header.frame_id == "cam_b"
    assert a[-1].header.stamp == ns_to_stamp(base + 3 * 40_000_000)
    assert [ids(m) for m in a] == [["1", "2"]] * 4  # ids stable, in input order
    assert [ids(m) for m in b] == [["1"]] * 4  # per camera
    assert a[-1].detections[0].results[0].hypothesis.class_id == "person"
    assert a[-1].detections[0].bbox.center.position.x == pytest.approx(109.0, abs=1.0)

    # A duplicate stamp is dropped, not republished; the next frame continues.
    pubs["a"].publish(make_msg("cam_a", base + 3 * 40_000_000, [(0, 0)]))
    pubs["a"].publish(make_msg("cam_a", base + 4 * 40_000_000, [(112, 200), (388, 200)]))
    assert spin_until(executor, lambda: len(received["a"]) >= 5, 10.0)
    assert ids(received["a"][4]) == ["1", "2"]
    assert received["a"][4].header.stamp == ns_to_stamp(base + 4 * 40_000_000)
    stats = node.trackers[0].stats
    assert stats.frames_rejected_duplicate == 1 and len(received["a"]) == 5

    # Simulator restart: the clock goes back; old tracks dropped, new ids.
    pubs["a"].publish(make_msg("cam_a", 0, [(112, 200)]))
    assert spin_until(executor, lambda: len(received["a"]) >= 6, 10.0)
    assert ids(received["a"][5]) == ["3"]
    assert node.trackers[0].stats.resets == 1


def test_parameters_validated_and_changed_at_run_time(setup) -> None:
    node, _pubs, _received, _executor = setup
    assert node.config.max_lost_s == 3.0
    res = node.set_parameters([Parameter("tracker.high_score", value=0.7)])
    assert res[0].successful and node.config.high_score == 0.7
    assert node.trackers[1].config.high_score == 0.7
    res = node.set_parameters([Parameter("tracker.high_score", value=1.5)])
    assert not res[0].successful and "high_score" in res[0].reason
    res = node.set_parameters([Parameter("tracker.low_score", value=0.9)])
    assert not res[0].successful and "low_score" in res[0].reason
    res = node.set_parameters([Parameter("tracker.solver", value="hungarian")])
    assert not res[0].successful and "solver" in res[0].reason
    res = node.set_parameters([Parameter("tracker.min_hits", value=0)])
    assert not res[0].successful and "min_hits" in res[0].reason
    res = node.set_parameters([Parameter("input_topics", value=["/x"])])
    assert not res[0].successful  # read-only
    assert node.config.high_score == 0.7 and node.config.low_score == 0.1


def test_bad_static_parameters_refused(ros_context) -> None:
    with pytest.raises(ParameterError, match="output_topics"):
        TrackerNode(
            context=ros_context,
            parameter_overrides=[
                Parameter("input_topics", value=["/a", "/b"]),
                Parameter("output_topics", value=["/a_tracks"]),
            ],
        )
    with pytest.raises(ParameterError, match="low_score"):
        TrackerNode(
            context=ros_context,
            parameter_overrides=[
                Parameter("tracker.low_score", value=0.8),
            ],
        )
