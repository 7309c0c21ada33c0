"""Scenario publisher: CARLA topic names and frame ids, and a real publisher
process whose images, ground truth and /clock arrive in this process with
matching stamps, driving this node's sim time."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs.msg")
pytest.importorskip("rosgraph_msgs.msg")

from perception.sim import Scenario, default_rig
from perception.sim.layout import SimLayout
from perception.sim.ros_publisher import frame_messages, timed_frames

pytestmark = pytest.mark.ros


def test_frame_messages_topics_and_frame_ids():
    sc = Scenario(2, duration_s=0.2, rig=default_rig(128, 72))
    layout = SimLayout()
    f = sc.frame(1)
    msgs = dict(frame_messages(f, f.stamp_ns, sc, layout, depth=True))
    assert next(iter(msgs)) == "/clock"
    want = {"/clock", "/carla/ego_vehicle/lidar", "/carla/ego_vehicle/ground_truth/objects"}
    for cam, short in (("rgb_front", "front"), ("rgb_left", "left"), ("rgb_right", "right")):
        want |= {
            f"/carla/ego_vehicle/{cam}/image",
            f"/carla/ego_vehicle/{cam}/camera_info",
            f"/carla/ego_vehicle/depth_{short}/image",
            f"/carla/ego_vehicle/{cam}/ground_truth/detections",
        }
        img = msgs[f"/carla/ego_vehicle/{cam}/image"]
        assert img.encoding == "bgra8" and img.step == 128 * 4 and len(img.data) == 128 * 72 * 4
        assert img.header.frame_id == f"ego_vehicle/{cam}"
        info = msgs[f"/carla/ego_vehicle/{cam}/camera_info"]
        assert info.header.frame_id == f"ego_vehicle/{cam}" and info.width == 128
        assert info.k[0] == pytest.approx(64.0)  # 90 deg HFOV
        assert msgs[f"/carla/ego_vehicle/depth_{short}/image"].encoding == "32FC1"
        gt = msgs[f"/carla/ego_vehicle/{cam}/ground_truth/detections"]
        seen = f.cameras[cam].visible_pixels > 0
        assert [d.id for d in gt.detections] == [str(i) for i in f.cameras[cam].object_ids[seen]]
    assert set(msgs) == want
    assert msgs["/carla/ego_vehicle/lidar"].header.frame_id == "ego_vehicle/lidar"
    objs = msgs["/carla/ego_vehicle/ground_truth/objects"]
    assert objs.header.frame_id == "base_link"
    assert [d.id for d in objs.detections] == [str(o.id) for o in f.objects]
    st = msgs["/clock"].clock
    assert st.sec * 10**9 + st.nanosec == f.stamp_ns == 1_100_000_000


def test_looping_keeps_the_clock_advancing():
    sc = Scenario(2, duration_s=0.3, rig=default_rig(64, 36))
    it = timed_frames(sc, loop=True)
    stamps = [next(it)[0] for _ in range(7)]
    assert stamps == [1_000_000_000 + i * 100_000_000 for i in range(7)]


def test_publisher_process_to_subscriber(executor, ros_context):
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, PointCloud2
    from vision_msgs.msg import Detection2DArray

    from perception.ros.testing import NodeProcess, spin_until

    n_frames = 8
    node = rclpy.create_node(
        "sim_listener",
        context=ros_context,
        parameter_overrides=[Parameter("use_sim_time", Parameter.Type.BOOL, True)],
    )
    executor.add_node(node)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    got: dict[str, list] = {"image": [], "clock": [], "gt": [], "lidar": []}

    def ns(stamp) -> int:
        return stamp.sec * 1_000_000_000 + stamp.nanosec

    node.create_subscription(
        Image,
        "/carla/ego_vehicle/rgb_front/image",
        lambda m: got["image"].append((ns(m.header.stamp), m.header.frame_id, m.encoding)),
        qos,
    )
    node.create_subscription(Clock, "/clock", lambda m: got["clock"].append(ns(m.clock)), qos)
    node.create_subscription(
        Detection2DArray,
        "/carla/ego_vehicle/rgb_front/ground_truth/detections",
        lambda m: got["gt"].append(ns(m.header.stamp)),
        qos,
    )
    node.create_subscription(
        PointCloud2,
        "/carla/ego_vehicle/lidar",
        lambda m: got["lidar"].append(ns(m.header.stamp)),
        qos,
    )
    args = {
        "--seed": "4",
        "--duration": str(n_frames / 10.0),
        "--rate": "10",
        "--speed": "4",
        "--width": "96",
        "--height": "54",
        "--wait-subscribers": "1",
        "--linger": "3",
    }
    argv = [sys.executable, "-m", "perception.sim.ros_publisher"]
    proc = NodeProcess(argv + [x for kv in args.items() for x in kv])
    try:
        ok = spin_until(
            executor,
            lambda: len(got["image"]) >= n_frames and len(got["lidar"]) >= n_frames,
            timeout_s=60.0,
        )
        assert ok, f"received {len(got['image'])} images; publisher log:\n{proc.output()}"
        spin_until(executor, lambda: len(got["clock"]) >= n_frames, timeout_s=5.0)
    finally:
        code = proc.stop()
    expected = [1_000_000_000 + i * 100_000_000 for i in range(n_frames)]
    assert [s for s, _, _ in got["image"]] == expected
    assert {(f, e) for _, f, e in got["image"]} == {("ego_vehicle/rgb_front", "bgra8")}
    assert got["gt"] == expected and got["lidar"] == expected
    # /clock: one tick per frame, strictly advancing, equal to the sensor stamps
    assert got["clock"] == expected
    assert node.get_clock().ros_time_is_active
    assert node.get_clock().now().nanoseconds == expected[-1]
    assert code == 0, proc.output()
    node.destroy_node()
