"""Scenario -> rosbag2 MCAP -> read back with rosbags: topics, counts, stamps,
images and ground truth survive the round trip."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags")

from rosbags.rosbag2 import Reader

from perception.sim import Scenario, default_rig
from perception.sim.bag import BagError, make_typestore, write_bag
from perception.sim.layout import SimLayout


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    sc = Scenario(5, duration_s=0.5, rate_hz=10.0, rig=default_rig(128, 72))
    path = tmp_path_factory.mktemp("bag") / "scenario"
    counts = write_bag(path, sc, depth=True)
    return sc, path, counts


def test_round_trip_counts_and_stamps(bag):
    sc, path, counts = bag
    layout = SimLayout()
    n = sc.n_frames
    assert n == 5
    expected = [sc.stamp_ns(i) for i in range(n)]
    frames = list(sc.frames())
    store = make_typestore()
    assert [p.suffix for p in path.iterdir() if p.name != "metadata.yaml"] == [".mcap"]
    assert "storage_identifier: mcap" in (path / "metadata.yaml").read_text()
    with Reader(path) as reader:
        topics = {c.topic: c for c in reader.connections}
        assert set(topics) == set(counts)
        assert all(c.msgcount == n for c in reader.connections)
        stamps: dict[str, list[int]] = {t: [] for t in topics}
        headers: dict[str, list[int]] = {t: [] for t in topics}
        for conn, ts, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            stamps[conn.topic].append(ts)
            st = msg.clock if conn.topic == "/clock" else msg.header.stamp
            headers[conn.topic].append(st.sec * 1_000_000_000 + st.nanosec)
            if conn.topic == layout.image_topic("rgb_front"):
                assert msg.encoding == "bgra8" and msg.header.frame_id == "ego_vehicle/rgb_front"
                i = expected.index(ts)
                img = np.asarray(msg.data).reshape(msg.height, msg.width, 4)
                np.testing.assert_array_equal(
                    img[:, :, :3], frames[i].cameras["rgb_front"].image_bgr
                )
            if conn.topic == layout.detections_topic("rgb_left"):
                i = expected.index(ts)
                cam = frames[i].cameras["rgb_left"]
                seen = cam.visible_pixels > 0
                want = [str(int(o)) for o in cam.object_ids[seen]]
                assert [d.id for d in msg.detections] == want
            if conn.topic == layout.objects_topic:
                assert msg.header.frame_id == "base_link"
                i = expected.index(ts)
                assert [d.id for d in msg.detections] == [str(o.id) for o in frames[i].objects]
            if conn.topic == layout.lidar_topic:
                assert msg.header.frame_id == "ego_vehicle/lidar"
                assert msg.width == len(frames[expected.index(ts)].lidar)
    for topic in topics:
        assert stamps[topic] == expected, topic
        assert headers[topic] == expected, topic


def test_bag_is_readable_by_rclpy(bag):
    """CDR written by rosbags with the repo's vision_msgs definitions is what
    the ROS message packages deserialize."""
    pytest.importorskip("rclpy")
    vision_msgs = pytest.importorskip("vision_msgs.msg")
    from rclpy.serialization import deserialize_message

    _, path, _ = bag
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.msgtype.endswith("Detection3DArray")]
        for _conn, ts, raw in reader.messages(connections=conns):
            msg = deserialize_message(bytes(raw), vision_msgs.Detection3DArray)
            assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == ts
            assert msg.detections and msg.detections[0].results[0].hypothesis.class_id
            break


def test_existing_path_is_refused(bag):
    sc, path, _ = bag
    with pytest.raises(BagError, match="exists"):
        write_bag(path, sc)
