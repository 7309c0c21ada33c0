"""Masks through the ROS nodes: the fusion node lifts detections from the
same-stamp instance-id image (output differs from boxes on an occluded
object), the overlay node draws masks and skeletons from their topics, and
across processes a segmentation model in the detector node publishes the
mask image with the input's stamp, which the fusion node uses."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not importable; run ./dev test")

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray

from perception.core.camera import CameraModel
from perception.core.fusion.synthetic import (
    OPTICAL_FROM_FLU,
    SceneBox,
    detections_from_render,
    render_depth,
    rigid,
)
from perception.core.types import Detections, InstanceMasks
from perception.ros.conversions import (
    detections_to_msg,
    header_from,
    msg_to_detections,
    ns_to_stamp,
    stamp_to_ns,
)
from perception.ros.images import image_to_bgr
from perception.ros.masks import (
    id_image_from_msg,
    keypoints_to_cloud,
    masks_to_image_msg,
)
from perception.ros.testing import NodeProcess, spin_until

pytestmark = pytest.mark.ros
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reference"
K = [[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]]
# a pedestrian at 7 m in front of the middle of a car at 15 m
T_WORLD_FROM_CAM = rigid(OPTICAL_FROM_FLU.T, (0.0, 0.0, 1.4))
SCENE = [
    SceneBox((15.0, 0.0, 0.75), (4.0, 1.8, 1.5), 0.0, 2),
    SceneBox((7.0, 0.05, 0.85), (0.5, 0.6, 1.7), 0.0, 0),
]


def _scene_msgs(stamp_ns: int):
    cam = CameraModel.create(640, 480, K, [0.0] * 5, frame_id="cam")
    depth, ids = render_depth(cam, T_WORLD_FROM_CAM, SCENE, 0.0, max_depth=60.0)
    det, which = detections_from_render(ids, SCENE, stamp_ns=stamp_ns, frame_id="cam",
                                        track_ids=[21, 22])  # fmt: skip
    dense = np.stack([ids == k for k in which])
    det = Detections.from_arrays(
        det.xyxy, det.scores, det.class_ids, det.track_ids, stamp_ns=stamp_ns, frame_id="cam",
        image_size=(640, 480), masks=InstanceMasks.from_dense(dense),
    )  # fmt: skip
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.header.stamp, info.header.frame_id = ns_to_stamp(stamp_ns), "cam"
    info.k = [v for row in K for v in row]
    info.d = [0.0] * 5
    img = Image(height=480, width=640, encoding="32FC1", step=640 * 4,
                data=depth.astype(np.float32).tobytes())  # fmt: skip
    img.header = header_from(det)
    det_msg = detections_to_msg(det, ["person", "x", "car"])
    masks = masks_to_image_msg(det, det_msg.header)
    return info, img, det_msg, masks, det


def _fusion(ros_context, name: str, **extra: str):
    from perception.ros.fusion_node import FusionNode

    params = {
        "detections_topic": "/fm/det", "camera_info_topic": "/fm/info", "depth_topic": "/fm/depth",
        "qos_reliability": "reliable", "tracking": False, "target_frame": "cam",
        "T_target_from_camera": [float(v) for v in np.eye(4).reshape(-1)],
        "class_names": ["person", "x", "car"], **extra,
    }  # fmt: skip
    return FusionNode(
        name,
        context=ros_context,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
    )


def test_fusion_node_lifts_from_the_mask_image(ros_context, executor):
    with_masks = _fusion(ros_context, "fm_masks", masks_topic="/fm/masks")
    boxes_only = _fusion(ros_context, "fm_boxes")
    probe = Node("fm_probe", context=ros_context)
    for n in (with_masks, boxes_only, probe):
        executor.add_node(n)
    pubs = {
        "info": probe.create_publisher(CameraInfo, "/fm/info", RELIABLE),
        "depth": probe.create_publisher(Image, "/fm/depth", RELIABLE),
        "det": probe.create_publisher(Detection2DArray, "/fm/det", RELIABLE),
        "masks": probe.create_publisher(Image, "/fm/masks", RELIABLE),
    }
    out: dict[str, list[Detection3DArray]] = {"fm_masks": [], "fm_boxes": []}
    for name, got in out.items():
        probe.create_subscription(Detection3DArray, f"/{name}/objects", got.append, RELIABLE)
    assert spin_until(executor, lambda: all(p.get_subscription_count() > 0 for p in pubs.values()))
    info, depth, det_msg, masks, det = _scene_msgs(2_000_000_000)
    pubs["info"].publish(info)
    assert spin_until(executor, lambda: with_masks.stage.camera is not None
                      and boxes_only.stage.camera is not None)  # fmt: skip
    # an unparsable row first: the node drops it, the mask ids still index the message
    bad = detections_to_msg(det[np.array([0])], ["person", "x", "car"], header=det_msg.header)
    bad.detections[0].id = str(2**70)
    det_msg.detections = [bad.detections[0], *det_msg.detections]
    no_mask = InstanceMasks(np.zeros((1, 4), np.int32), (np.zeros((0, 0), bool),), (640, 480))
    first = replace(det[np.array([1])], masks=no_mask)  # the bad row: no pixels
    masks = masks_to_image_msg(Detections.concatenate([first, det]), det_msg.header)
    pubs["depth"].publish(depth)
    pubs["det"].publish(det_msg)
    pubs["masks"].publish(masks)
    assert spin_until(executor, lambda: all(out.values()), timeout_s=10)
    assert with_masks.masks_fused == 1 and with_masks.stage.stats()["mask_rows"] == 2
    assert boxes_only.stage.stats()["mask_rows"] == 0
    cam_from_world = np.linalg.inv(T_WORLD_FROM_CAM)
    truth = cam_from_world[:3, :3] @ np.asarray(SCENE[0].center) + cam_from_world[:3, 3]

    def car_error(msg: Detection3DArray) -> float:
        (car,) = [d for d in msg.detections if d.id == "21"]
        p = car.bbox.center.position
        return float(np.linalg.norm(np.array([p.x, p.y, p.z]) - truth))

    # the box's central depths are the pedestrian's; the mask holds the car only
    assert car_error(out["fm_boxes"][0]) > 4.0
    assert car_error(out["fm_masks"][0]) < 1.5
    assert stamp_to_ns(out["fm_masks"][0].header.stamp) == 2_000_000_000
    # a mask image of another size: counted, fused with boxes
    info, depth, det_msg, masks, _ = _scene_msgs(3_000_000_000)
    small = Image(height=10, width=10, encoding="mono16", step=20, data=bytes(200))
    small.header = det_msg.header
    for key, msg in (("depth", depth), ("det", det_msg), ("masks", small)):
        pubs[key].publish(msg)
    assert spin_until(executor, lambda: with_masks.errors["masks_size"] == 1)
    assert spin_until(executor, lambda: len(out["fm_masks"]) == 2)
    assert car_error(out["fm_masks"][1]) > 4.0
    with_masks.publish_diagnostics()
    for n in (with_masks, boxes_only, probe):
        n.destroy_node()


def test_overlay_node_draws_masks_and_skeletons(ros_context, executor):
    from perception.ros.overlay_node import OverlayNode

    params = {"image_topic": "/om/image", "tracks_topic": "/om/tracks", "masks_topic": "/om/masks",
              "keypoints_topic": "/om/kps", "output_topic": "/om/out", "trails.enabled": False,
              "image_qos.reliability": "reliable"}  # fmt: skip
    overlay = OverlayNode(
        "om",
        context=ros_context,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
    )
    probe = Node("om_probe", context=ros_context)
    executor.add_node(overlay)
    executor.add_node(probe)
    pubs = {
        "image": probe.create_publisher(Image, "/om/image", RELIABLE),
        "tracks": probe.create_publisher(Detection2DArray, "/om/tracks", RELIABLE),
        "masks": probe.create_publisher(Image, "/om/masks", RELIABLE),
        "kps": probe.create_publisher(PointCloud2, "/om/kps", RELIABLE),
    }
    out: list[Image] = []
    probe.create_subscription(Image, "/om/out", out.append, RELIABLE)
    assert spin_until(executor, lambda: all(p.get_subscription_count() > 0 for p in pubs.values()))
    w, h, stamp = 160, 120, 5_000_000_000
    dense = np.zeros((1, h, w), bool)
    dense[0, 30:90, 40:80] = True
    kps = np.array([[[60.0, 40.0, 0.9], [60.0, 80.0, 0.9]]], np.float32)
    det = Detections.from_arrays([[30, 20, 100, 100]], [0.9], [0], [3], stamp_ns=stamp,
                                 frame_id="cam", image_size=(w, h),
                                 masks=InstanceMasks.from_dense(dense), keypoints=kps)  # fmt: skip
    tracks = detections_to_msg(det, ["person"])
    image = Image(height=h, width=w, encoding="bgr8", step=w * 3, data=bytes(w * h * 3))
    image.header = tracks.header
    pubs["image"].publish(image)
    pubs["tracks"].publish(tracks)
    pubs["masks"].publish(masks_to_image_msg(det, tracks.header))
    pubs["kps"].publish(keypoints_to_cloud(det, tracks.header))
    assert spin_until(executor, lambda: len(out) == 1), overlay.counters
    bgr = image_to_bgr(out[0])
    assert (bgr[70, 50] > 0).any()  # tinted by the mask (inside it, off the box edges)
    assert (bgr[70, 90] == 0).all()  # in the box, outside the mask: untouched
    assert (bgr[40, 60] == 255).all()  # a keypoint's white disc
    # tracks whose masks never come are drawn without them once the buffer moves on
    for k in range(1, 12):
        t = stamp + k * 100_000_000
        det_k = Detections.from_arrays([[30, 20, 100, 100]], [0.9], [0], [3], stamp_ns=t,
                                       frame_id="cam")  # fmt: skip
        msg = detections_to_msg(det_k, ["person"])
        image.header = msg.header
        pubs["image"].publish(image)
        pubs["tracks"].publish(msg)
        spin_until(executor, lambda: False, timeout_s=0.05)
    assert spin_until(executor, lambda: overlay.counters["extras_missing"] >= 1)
    assert spin_until(executor, lambda: len(out) >= 2)
    overlay.destroy_node()
    probe.destroy_node()


def test_seg_model_through_detector_and_fusion_processes(ros_context, executor, tmp_path):
    """image_publisher (a process) -> detector with a -seg model and tracking
    (a process) -> fusion node with masks_topic (a process), depth from this
    test registered to each image. The mask image carries the input's stamp
    and indexes the same-stamp tracks; the fusion node fuses with it."""
    import yaml

    image = FIXTURES / "scene_a.png"
    model = FIXTURES / "yolo11t_seg_dynamic.onnx"
    detector = {"detector": {"ros__parameters": {
        "perception.node_type": "detector", "camera_names": ["cam"], "tracking": True,
        "model.path": str(model), "score_threshold": 0.3, "max_detections": 5,
        "max_age_ms": 0.0, "cameras.cam.topic": "/sx/cam/image_raw",
        "cameras.cam.qos.reliability": "reliable", "tracker.min_hits": 1,
        # the fixture model's boxes score 0.38-0.648 here: let all of them
        # start tracks (the default new_track_score is 0.6)
        "tracker.new_track_score": 0.3}}}  # fmt: skip
    cfg = tmp_path / "detector.yaml"
    cfg.write_text(yaml.safe_dump(detector))
    probe = Node("sx_probe", context=ros_context)
    executor.add_node(probe)
    pub_depth = probe.create_publisher(Image, "/sx/cam/depth", RELIABLE)
    image_stamps: set[int] = set()

    def on_image(msg: Image) -> None:  # a depth camera registered to the colour one: 8 m
        depth = Image(height=msg.height, width=msg.width, encoding="32FC1", step=msg.width * 4,
                      data=np.full((msg.height, msg.width), 8.0, np.float32).tobytes())  # fmt: skip
        depth.header = msg.header
        image_stamps.add(stamp_to_ns(msg.header.stamp))
        pub_depth.publish(depth)

    masks: list[Image] = []
    tracks: list[Detection2DArray] = []
    objects: list[Detection3DArray] = []
    diags: dict[str, dict[str, str]] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            diags[st.name] = {kv.key: kv.value for kv in st.values}

    probe.create_subscription(Image, "/sx/cam/image_raw", on_image, RELIABLE)
    probe.create_subscription(Image, "/detector/cam/tracks/masks", masks.append, RELIABLE)
    probe.create_subscription(Detection2DArray, "/detector/cam/tracks", tracks.append, RELIABLE)
    probe.create_subscription(Detection3DArray, "/sx_fusion/objects", objects.append, RELIABLE)
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    fusion_args = [
        "-r", "__node:=sx_fusion", "-p", "mode:=depth",
        "-p", "detections_topic:=/detector/cam/tracks",
        "-p", "masks_topic:=/detector/cam/tracks/masks",
        "-p", "camera_info_topic:=/sx/cam/camera_info", "-p", "depth_topic:=/sx/cam/depth",
        "-p", "qos_reliability:=reliable", "-p", "tracking:=false",
        "-p", "diagnostics_period_s:=0.2",
    ]  # fmt: skip
    procs = [
        NodeProcess([sys.executable, "-m", "perception.ros.run_config", str(cfg)]),
        NodeProcess([sys.executable, "-m", "perception.ros.fusion_node", "--ros-args",
                     *fusion_args]),
        NodeProcess([sys.executable, "-m", "perception.ros.tools.image_publisher", str(image),
                     "--topic", "/sx/cam/image_raw", "--frame-id", "cam_optical", "--rate", "3",
                     "--loop", "--camera-info"]),
    ]  # fmt: skip

    def fused() -> bool:
        d = next((v for k, v in diags.items() if "sx_fusion" in k), {})
        return int(d.get("masks_fused", "0")) >= 2 and int(d.get("fusion.mask_rows", "0")) >= 1

    def outputs() -> str:
        return "\n".join(p.output()[-3000:] for p in procs)

    def probe_saw_masks() -> bool:  # this test's own subscriptions may match later than fusion's
        if not image_stamps:
            return False
        first, tracked = min(image_stamps), {stamp_to_ns(t.header.stamp) for t in tracks}
        stamps = (stamp_to_ns(m.header.stamp) for m in masks)
        return any(s >= first and s in tracked for s in stamps)

    try:
        assert spin_until(executor, lambda: fused() and objects and probe_saw_masks(),
                          timeout_s=120), outputs()  # fmt: skip
    finally:
        for p in procs:
            p.stop()
    # the mask image: the input image's stamp, frame and size; ids index the tracks
    # (images published before this test's subscription matched are not known here)
    by_stamp = {stamp_to_ns(t.header.stamp): t for t in tracks}
    seen = [m for m in masks if stamp_to_ns(m.header.stamp) >= min(image_stamps)]
    assert seen, (len(masks), len(image_stamps))
    checked = 0
    for m in seen:
        stamp = stamp_to_ns(m.header.stamp)
        assert stamp in image_stamps and m.header.frame_id == "cam_optical"
        assert (m.encoding, m.width, m.height) == ("mono16", 400, 300)
        t = by_stamp.get(stamp)
        if t is None:
            continue
        ids = id_image_from_msg(m)
        assert int(ids.max()) <= len(t.detections)
        present = set(np.unique(ids).tolist()) - {0}
        rows = msg_to_detections(t)
        for v in present:  # every instance lies inside its track's (observed) box region
            ys, xs = np.nonzero(ids == v)
            x1, y1, x2, y2 = rows.xyxy[v - 1]
            assert xs.mean() > x1 - 20 and xs.mean() < x2 + 20 and y1 - 20 < ys.mean() < y2 + 20
        checked += 1
    assert checked >= 1
    late = [stamp_to_ns(o.header.stamp) for o in objects]
    assert all(t in image_stamps for t in late if t >= min(image_stamps))
