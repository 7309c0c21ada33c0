"""Projected 3D boxes in the AR overlay: the pure projection/clipping/drawing
(`perception.core.overlay`), the Detection3DArray -> Objects3D conversion and
the overlay node with CameraInfo + image + tracks + Detection3DArray."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from perception.core.camera import CameraModel  # noqa: E402
from perception.core.drawing import color_for  # noqa: E402
from perception.core.fusion.types import Objects3D  # noqa: E402
from perception.core.overlay import BOX_EDGES, box3d_edges, draw_boxes3d  # noqa: E402

NS = 1_000_000_000
# forward-left-up -> optical (the overlay node's default T_camera_from_objects)
T_OPT_FROM_FLU = np.array(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def _pinhole(w: int = 640, h: int = 480, f: float = 500.0) -> CameraModel:
    return CameraModel.create(w, h, [[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])


def _endpoints(edges: list[np.ndarray]) -> set[tuple[float, float]]:
    return {tuple(np.round(p, 6)) for e in edges for p in (e[0], e[-1])}


# ------------------------------------------------------------------ pure


def test_box_edges_are_the_12_pairs_of_corners_one_axis_apart():
    assert len(BOX_EDGES) == 12 and len(set(BOX_EDGES)) == 12
    corners = Objects3D.from_arrays([[0, 0, 0]], [[2, 4, 6]]).corners()[0]
    lengths = sorted(np.linalg.norm(corners[i] - corners[j]) for i, j in BOX_EDGES)
    assert lengths == [2.0] * 4 + [4.0] * 4 + [6.0] * 4


def test_box_in_front_of_a_pinhole_projects_to_the_expected_corners():
    cam = _pinhole()
    obj = Objects3D.from_arrays([[0.0, 0.0, 5.0]], [[1.0, 1.0, 1.0]], track_ids=[7])
    (edges,) = box3d_edges(cam, obj)
    assert len(edges) == 12
    expected = set()
    for z in (4.5, 5.5):
        d = 500.0 * 0.5 / z
        for sx in (-1, 1):
            for sy in (-1, 1):
                expected.add((round(320.0 + sx * d, 6), round(240.0 + sy * d, 6)))
    assert _endpoints(edges) == expected
    img = draw_boxes3d(np.zeros((480, 640, 3), np.uint8), cam, obj, thickness=1)
    color = np.array(color_for(7))
    near = 500.0 * 0.5 / 4.5
    # a point in the middle of the near face's top edge has the track's colour
    # (anti-aliased: a scaled copy of it)
    px = img[round(240 - near), 320].astype(float)
    assert px.max() > 100
    np.testing.assert_allclose(px / px.max(), color / color.max(), atol=0.1)
    assert not img[240, 320].any(), "the box outline is drawn, not filled"
    assert not img[:, :200].any() and not img[:, 450:].any()


def test_distortion_is_honoured_and_edges_are_curved():
    cam = CameraModel.create(
        640, 480, [[400, 0, 320], [0, 400, 240], [0, 0, 1]], [-0.3, 0.08, 0.0, 0.0, 0.0]
    )
    obj = Objects3D.from_arrays([[0.0, 0.0, 3.0]], [[2.0, 1.5, 1.0]])
    (edges,) = box3d_edges(cam, obj)
    corners = obj.corners()[0]
    want = {tuple(np.round(p, 6)) for p in cam.project(corners)}
    assert _endpoints(edges) == want
    assert all(e.shape[0] > 2 for e in edges), "a distorted camera samples each edge"
    # barrel distortion bows the middle of the top edge away from the chord
    top = next(e for e in edges if abs(e[0, 1] - e[-1, 1]) < 1e-6 and e[0, 1] < 240)
    mid = top[top.shape[0] // 2]
    assert mid[1] < top[0, 1] - 1.0


def test_box_partly_behind_the_camera_draws_only_its_visible_part():
    cam = _pinhole()
    # z from -0.8 to 1.2: the back face is behind the camera
    obj = Objects3D.from_arrays([[0.0, 0.0, 0.2]], [[1.0, 1.0, 2.0]], track_ids=[3])
    (edges,) = box3d_edges(cam, obj)
    assert 0 < len(edges) < 12
    pts = np.concatenate(edges)
    assert np.isfinite(pts).all()
    # everything lies in (a small margin around) the image: nothing mirrored or huge
    assert (pts[:, 0] > -0.1 * 640).all() and (pts[:, 0] < 1.1 * 640).all()
    assert (pts[:, 1] > -0.1 * 480).all() and (pts[:, 1] < 1.1 * 480).all()
    # the front face (z = 1.2) is complete: half-size 500 * 0.5 / 1.2 around the centre
    d = 500.0 * 0.5 / 1.2
    ends = _endpoints(edges)
    for sx in (-1, 1):
        for sy in (-1, 1):
            assert (round(320 + sx * d, 6), round(240 + sy * d, 6)) in ends
    img = draw_boxes3d(np.zeros((480, 640, 3), np.uint8), cam, obj)
    assert img.any()
    # the back face would project (mirrored) inside the front face: nothing there
    assert not img[200:280, 280:360].any()


def test_box_entirely_behind_the_camera_draws_nothing_and_empty_input_is_fine():
    cam = _pinhole()
    behind = Objects3D.from_arrays([[0.0, 0.0, -5.0]], [[1.0, 1.0, 1.0]])
    assert box3d_edges(cam, behind) == [[]]
    img = np.full((480, 640, 3), 9, np.uint8)
    assert (draw_boxes3d(img, cam, behind) == 9).all()
    assert (draw_boxes3d(img, cam, Objects3D.empty()) == 9).all()


def test_transform_moves_the_corners_into_the_optical_frame():
    cam = _pinhole()
    # a yawed box 6 m ahead in forward-left-up: drawn around the image centre
    flu = Objects3D.from_arrays([[6.0, 0.0, 0.0]], [[2.0, 1.0, 1.5]], [0.5])
    (edges,) = box3d_edges(cam, flu, transform=T_OPT_FROM_FLU)
    corners_opt = flu.corners()[0] @ T_OPT_FROM_FLU[:3, :3].T
    assert _endpoints(edges) == {tuple(np.round(p, 6)) for p in cam.project(corners_opt)}
    pts = np.concatenate(edges)
    assert pts[:, 0].min() < 320 < pts[:, 0].max() and pts[:, 1].min() < 240 < pts[:, 1].max()


def test_bad_inputs_raise_typed_errors():
    from perception.core.errors import InputImageError

    cam = _pinhole()
    obj = Objects3D.from_arrays([[0.0, 0.0, 5.0]], [[1.0, 1.0, 1.0]])
    with pytest.raises(InputImageError, match="does not match the camera model"):
        draw_boxes3d(np.zeros((10, 10, 3), np.uint8), cam, obj)
    with pytest.raises(ValueError, match="near: expected a finite number > 0"):
        box3d_edges(cam, obj, near=0.0)
    with pytest.raises(ValueError, match="transform: expected a finite 4x4"):
        box3d_edges(cam, obj, transform=np.eye(3))


# ------------------------------------------------------------ conversion


def test_detection3d_array_round_trip():
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs not importable; run ./dev test")
    from perception.ros.conversions3d import (
        detection3d_array_to_objects,
        objects_to_detection3d_array,
    )

    rng = np.random.default_rng(3)
    cov = np.zeros((3, 3, 3))
    cov[:] = np.diag([0.1, 0.2, 0.3])
    cov[1, 0, 1] = cov[1, 1, 0] = 0.05
    obj = Objects3D.from_arrays(
        rng.uniform(-10, 10, (3, 3)),
        rng.uniform(0.5, 4, (3, 3)),
        [0.3, -1.2, 3.0],
        cov,
        None,
        [0.9, 0.5, 0.25],
        [1, 0, 2],
        [4, -1, 12],
        stamp_ns=12 * NS + 345,
        frame_id="base_link",
    )
    names = ["person", "car", "bike"]
    back = detection3d_array_to_objects(objects_to_detection3d_array(obj, names), names)
    assert back.stamp_ns == obj.stamp_ns and back.frame_id == "base_link"
    np.testing.assert_allclose(back.centers, obj.centers)
    np.testing.assert_allclose(back.sizes, obj.sizes)
    np.testing.assert_allclose(back.yaws, obj.yaws, atol=1e-6)
    np.testing.assert_allclose(back.covariances, obj.covariances)
    np.testing.assert_array_equal(back.scores, obj.scores)
    np.testing.assert_array_equal(back.class_ids, obj.class_ids)
    np.testing.assert_array_equal(back.track_ids, obj.track_ids)
    assert not back.has_velocity.any()
    np.testing.assert_allclose(back.corners(), obj.corners(), atol=1e-5)
    # numeric class strings without names, and an empty array
    num = detection3d_array_to_objects(objects_to_detection3d_array(obj, None, "id"))
    np.testing.assert_array_equal(num.class_ids, obj.class_ids)
    assert len(detection3d_array_to_objects(objects_to_detection3d_array(Objects3D.empty()))) == 0


# ------------------------------------------------------------------ node

W, H, F = 320, 240, 250.0


def _node_rig(ros_context, executor, **overrides):
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs not importable; run ./dev test")
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    from perception.ros.overlay_node import OverlayNode
    from perception.ros.testing import spin_until

    params = {
        "image_topic": "/o3/image",
        "tracks_topic": "/o3/tracks",
        "output_topic": "/o3/out",
        "objects_topic": "/o3/objects",
        "camera_info_topic": "/o3/camera_info",
        "image_qos.reliability": "reliable",
        **overrides,
    }
    node = OverlayNode(
        "overlay3d_under_test",
        context=ros_context,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
    )
    probe = Node("o3_probe", context=ros_context)
    executor.add_node(node)
    executor.add_node(probe)
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {
        "image": probe.create_publisher(Image, "/o3/image", rel),
        "tracks": probe.create_publisher(Detection2DArray, "/o3/tracks", rel),
        "objects": probe.create_publisher(Detection3DArray, "/o3/objects", rel),
        "info": probe.create_publisher(CameraInfo, "/o3/camera_info", rel),
    }
    out: list = []
    probe.create_subscription(Image, "/o3/out", out.append, rel)
    assert spin_until(executor, lambda: all(p.get_subscription_count() for p in pubs.values()))

    def send(kind: str, msg, counter: str | None) -> None:
        before = node.counters[counter] if counter else None
        pubs[kind].publish(msg)
        if counter:
            assert spin_until(executor, lambda: node.counters[counter] == before + 1)

    def destroy() -> None:
        node.destroy_node()
        probe.destroy_node()

    return node, send, out, destroy


def _camera_info(stamp_ns: int):
    from sensor_msgs.msg import CameraInfo

    from perception.ros.conversions import ns_to_stamp

    msg = CameraInfo(width=W, height=H, distortion_model="plumb_bob")
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = "cam_optical"
    msg.d = [0.0] * 5
    msg.k = [F, 0.0, W / 2, 0.0, F, H / 2, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [F, 0.0, W / 2, 0.0, 0.0, F, H / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def _image(stamp_ns: int, value: int = 40):
    from sensor_msgs.msg import Image

    from perception.ros.conversions import ns_to_stamp

    msg = Image(height=H, width=W, encoding="bgr8", step=W * 3)
    msg.data = bytes([value]) * (W * H * 3)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = "cam_optical"
    return msg


def _tracks(stamp_ns: int):
    from perception.core.types import Detections
    from perception.ros.conversions import detections_to_msg

    # a small 2D box in the top-left corner, away from the 3D box
    det = Detections.from_arrays(
        [(5, 5, 40, 40)], [0.9], [0], [1], stamp_ns=stamp_ns, frame_id="cam_optical"
    )
    return detections_to_msg(det, ["person"])


def _objects(stamp_ns: int, track_id: int = 5):
    from perception.ros.conversions3d import objects_to_detection3d_array

    # 4 m ahead of the camera in base_link (forward-left-up), 1 m cube
    obj = Objects3D.from_arrays(
        [[4.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]], track_ids=[track_id],
        stamp_ns=stamp_ns, frame_id="base_link",
    )  # fmt: skip
    return objects_to_detection3d_array(obj, ["person"])


def _outline_changed(img: np.ndarray, value: int = 40) -> None:
    """The projected cube (near face at 3.5 m: +-35.7 px around the centre)
    is drawn; its inside and the far image corner are not."""
    from perception.core.overlay import box3d_edges

    changed = np.any(img.astype(int) != value, axis=2)
    d = F * 0.5 / 3.5
    left, top = round(W / 2 - d), round(H / 2 - d)
    assert changed[top + 10 : H - top - 10, left - 1 : left + 2].any(axis=1).all()
    assert changed[top - 1 : top + 2, left + 10 : W - left - 10].any(axis=0).all()
    assert not changed[H // 2 - 5 : H // 2 + 5, W // 2 - 5 : W // 2 + 5].any()
    assert not changed[H - 30 :, W - 60 :].any()
    cam = _pinhole(W, H, F)
    obj = Objects3D.from_arrays([[4.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]])
    (edges,) = box3d_edges(cam, obj, transform=T_OPT_FROM_FLU)
    for e in edges:  # every projected corner is on a drawn pixel
        for u, v in (e[0], e[-1]):
            assert changed[round(v), round(u)]


def test_node_draws_projected_3d_boxes_with_the_image_stamp(ros_context, executor):
    from perception.ros.conversions import stamp_to_ns
    from perception.ros.images import image_to_bgr
    from perception.ros.testing import spin_until

    node, send, out, destroy = _node_rig(ros_context, executor)
    try:
        t0 = 20 * NS
        send("info", _camera_info(t0), None)
        assert spin_until(executor, lambda: node.core.camera is not None)
        # objects before the image and its tracks
        send("objects", _objects(t0), "objects_received")
        send("tracks", _tracks(t0), "tracks_received")
        send("image", _image(t0), "images_received")
        assert spin_until(executor, lambda: len(out) == 1)
        assert stamp_to_ns(out[0].header.stamp) == t0
        assert out[0].header.frame_id == "cam_optical"
        _outline_changed(image_to_bgr(out[0]))
        # objects AFTER the image and its tracks (fusion comes later): the image waits
        t1 = t0 + NS // 10
        send("tracks", _tracks(t1), "tracks_received")
        send("image", _image(t1), "images_received")
        assert node.core.pending()["pending_3d"] == 1 and len(out) == 1
        send("objects", _objects(t1), "objects_received")
        assert spin_until(executor, lambda: len(out) == 2)
        assert stamp_to_ns(out[1].header.stamp) == t1
        _outline_changed(image_to_bgr(out[1]))
        assert node.counters["objects_missing"] == 0 and not node.core.pending()["pending_3d"]
        assert node.counters["camera_info_missing"] == 0
    finally:
        destroy()


def test_node_3d_buffers_stay_bounded_and_missing_inputs_are_counted(ros_context, executor):
    from perception.ros.images import image_to_bgr
    from perception.ros.testing import spin_until

    node, send, out, destroy = _node_rig(ros_context, executor, buffer_size=3)
    try:
        t0 = 30 * NS
        for k in range(10):  # objects whose images never come
            send("objects", _objects(t0 + k * NS // 30), "objects_received")
            assert node.core.pending()["objects_buffer"] <= 3
        assert node.counters["unmatched_objects"] == 7
        # images + tracks whose objects never come: at most 3 wait, older ones go out plain
        t1 = 40 * NS
        for k in range(6):
            send("tracks", _tracks(t1 + k * NS // 30), "tracks_received")
            send("image", _image(t1 + k * NS // 30), "images_received")
            assert node.core.pending()["pending_3d"] <= 3
        assert spin_until(executor, lambda: len(out) == 3)
        assert node.counters["objects_missing"] == 3
        assert (image_to_bgr(out[0])[60:180, 100:220] == 40).all(), "no 3D box drawn"
        # objects of the newest waiting image: the two older ones cannot get theirs any
        # more (objects come in stamp order) and go out plain; no CameraInfo yet, so
        # the newest is published with its 3D boxes skipped, counted
        send("objects", _objects(t1 + 5 * NS // 30), "objects_received")
        assert spin_until(executor, lambda: len(out) == 6)
        assert node.counters["objects_missing"] == 5 and not node.core.pending()["pending_3d"]
        assert node.counters["camera_info_missing"] == 1
        # a CameraInfo of another size than the image: 2D overlay still out, error counted
        info = _camera_info(t1)
        info.width, info.height = 2 * W, 2 * H
        send("info", info, None)
        assert spin_until(executor, lambda: node.core.camera is not None)
        t2 = 50 * NS
        send("objects", _objects(t2), "objects_received")
        send("tracks", _tracks(t2), "tracks_received")
        send("image", _image(t2), "images_received")
        assert spin_until(executor, lambda: len(out) == 7)
        assert node.counters["draw_errors"] == 1
        assert (image_to_bgr(out[6])[5:40, 5] != 40).any(), "the 2D box is drawn"
        node.publish_diagnostics()
    finally:
        destroy()


def test_node_refuses_a_bad_transform(ros_context):
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs not importable; run ./dev test")
    from rclpy.parameter import Parameter

    from perception.ros.overlay_node import OverlayNode
    from perception.ros.params import ParameterError

    with pytest.raises(ParameterError, match="T_camera_from_objects: expected 16 numbers"):
        OverlayNode(
            "overlay3d_bad",
            context=ros_context,
            parameter_overrides=[Parameter("T_camera_from_objects", value=[1.0, 0.0, 0.0])],
        )
