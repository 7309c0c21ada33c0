"""Detector node with real rclpy: across processes, bad input, lifecycle, parameters."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not importable; run ./dev test")
cv2 = pytest.importorskip("cv2")

import yaml  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from perception.ros.conversions import msg_to_detections, stamp_to_ns  # noqa: E402
from perception.ros.testing import NodeProcess, spin_until  # noqa: E402

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FIXTURE_MODEL = REPO / "test" / "fixtures" / "reference" / "yolo11t_dynamic.onnx"
LABELS = REPO / "config" / "coco80.labels"
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def model_setup() -> dict:
    """The real YOLOX-Nano with its COCO labels where ../shared/data is present,
    else the committed random-weight YOLO11 fixture (layout checks only)."""
    if (SHARED / "yolox_nano.onnx").is_file():
        return {"model.path": str(SHARED / "yolox_nano.onnx"), "model.labels_file": str(LABELS)}
    return {"model.path": str(FIXTURE_MODEL), "score_threshold": 0.01}


# camera name -> (transport, image source, size, expected (class, box) from PROVENANCE.md)
REAL_CAMERAS = {
    "front": ("raw", "pd_33887522274_eebd074106_k.jpg", (848, 600), ("bus", [384, 238, 537, 446])),
    "left": ("raw", "darknet_dog.jpg", (768, 576), ("dog", [133, 207, 326, 543])),
    "right": ("compressed", "udacity_vd_test1.jpg", (1280, 720), ("car", [1050, 404, 1275, 508])),
}


def _camera_images(tmp_path: Path) -> dict[str, tuple[str, Path, tuple[int, int], tuple | None]]:
    if SHARED.is_dir():
        return {
            cam: (transport, SHARED / name, size, expect)
            for cam, (transport, name, size, expect) in REAL_CAMERAS.items()
        }
    out = {}
    rng = np.random.default_rng(0)
    for cam, (transport, _, size, _) in REAL_CAMERAS.items():
        img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        path = tmp_path / f"{cam}.png"
        cv2.imwrite(str(path), img)
        out[cam] = (transport, path, size, None)
    return out


def test_cross_process_three_cameras_raw_and_compressed(ros_context, executor, tmp_path):
    """Camera publishers, the detector and this test in separate processes."""
    cams = _camera_images(tmp_path)
    params = {
        "perception.node_type": "detector",
        "camera_names": list(cams),
        "max_age_ms": 0.0,
        "class_format": "name",
        **model_setup(),
    }
    for cam, (transport, _, _, _) in cams.items():
        params[f"cameras.{cam}.topic"] = f"/test_rig/{cam}/image_raw"
        params[f"cameras.{cam}.transport"] = transport
        params[f"cameras.{cam}.qos.reliability"] = "reliable"
    config = tmp_path / "rig.yaml"
    config.write_text(yaml.safe_dump({"rig_detector": {"ros__parameters": params}}))

    node = Node("rig_probe", context=ros_context)
    executor.add_node(node)
    sent: dict[str, set[int]] = {c: set() for c in cams}
    got: dict[str, list[Detection2DArray]] = {c: [] for c in cams}
    for cam, (transport, _, _, _) in cams.items():
        topic = f"/test_rig/{cam}/image_raw"
        msg_type, t = (
            (CompressedImage, topic + "/compressed")
            if transport == "compressed"
            else (Image, topic)
        )
        node.create_subscription(
            msg_type, t, lambda m, cam=cam: sent[cam].add(stamp_to_ns(m.header.stamp)), RELIABLE
        )
        node.create_subscription(
            Detection2DArray, f"/rig_detector/{cam}/detections", got[cam].append, RELIABLE
        )

    procs = [NodeProcess([sys.executable, "-m", "perception.ros.run_config", str(config)])]
    for cam, (transport, path, _, _) in cams.items():
        procs.append(
            NodeProcess(
                [
                    sys.executable,
                    "-m",
                    "perception.ros.tools.image_publisher",
                    str(path),
                    "--topic",
                    f"/test_rig/{cam}/image_raw",
                    "--frame-id",
                    f"{cam}_optical",
                    "--transport",
                    transport,
                    "--rate",
                    "4",
                    "--loop",
                ]
            )
        )
    try:

        def matched(cam: str) -> int:
            return sum(stamp_to_ns(m.header.stamp) in sent[cam] for m in got[cam])

        # The probe's image subscriptions may match a little after the detector's:
        # wait for detections of frames the probe saw being sent.
        ok = spin_until(executor, lambda: all(matched(c) >= 2 for c in got), timeout_s=90)
        logs = "\n".join(f"--- {p.argv[2]}\n{p.output()[-2000:]}" for p in procs)
        assert ok, f"detections per camera: { {c: len(v) for c, v in got.items()} }\n{logs}"
    finally:
        for p in procs:
            p.stop()
    for cam, (_, _, (w, h), expect) in cams.items():
        # Every output carries the stamp of an input frame: at least two are frames
        # the probe saw (checked while waiting); the probe may miss others (the
        # camera's reliable queue holds one frame), so the rest must at least be
        # increasing and inside the time span of the run.
        stamps = [stamp_to_ns(m.header.stamp) for m in got[cam]]
        assert stamps == sorted(set(stamps)), "stamps must be unique and increasing"
        assert min(sent[cam]) - 10**9 <= stamps[-1] <= max(sent[cam]) + 10**9
        for msg in got[cam]:
            assert msg.header.frame_id == f"{cam}_optical"
            det = msg_to_detections(msg)
            assert (det.xyxy[:, [0, 2]] <= w).all() and (det.xyxy[:, [1, 3]] <= h).all()
        if expect is not None:
            name, box = expect
            det = msg_to_detections(got[cam][-1], LABELS.read_text().split())
            names = LABELS.read_text().split()
            ious = [
                _iou(box_, box)
                for box_, c in zip(det.xyxy.tolist(), det.class_ids.tolist(), strict=True)
                if names[c] == name
            ]
            best = max(ious, default=0.0)
            assert best > 0.85, f"{cam}: no {name} near {box} in original pixels (best IoU {best})"


# ---------------------------------------------------------------- in-process


def _make_node(ros_context, cameras: dict[str, dict], lifecycle: bool = False, **extra):
    from perception.ros.detector_node import DetectorLifecycleNode, DetectorNode

    overrides = {"max_age_ms": 0.0, **model_setup(), **extra}
    if cameras:  # an empty override list has no element type in rclpy: leave it unset
        overrides["camera_names"] = list(cameras)
    for cam, cfg in cameras.items():
        overrides[f"cameras.{cam}.topic"] = f"/{cam}/image"
        overrides[f"cameras.{cam}.qos.reliability"] = "reliable"
        for k, v in cfg.items():
            overrides[f"cameras.{cam}.{k}"] = v
    cls = DetectorLifecycleNode if lifecycle else DetectorNode
    return cls(
        "detector_under_test",
        context=ros_context,
        parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
    )


def _image_msg(img: np.ndarray, stamp_ns: int, frame: str = "cam") -> Image:
    h, w = img.shape[:2]
    msg = Image(height=h, width=w, encoding="bgr8", step=w * 3, data=img.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame
    return msg


def test_bad_input_is_counted_and_other_cameras_keep_working(ros_context, executor):
    node = _make_node(
        ros_context,
        {
            "good": {},
            "bad": {"camera_info_topic": "/bad/camera_info"},
            "jpeg": {"transport": "compressed"},
        },
    )
    executor.add_node(node)
    probe = Node("probe", context=ros_context)
    executor.add_node(probe)
    pub_good = probe.create_publisher(Image, "/good/image", RELIABLE)
    pub_bad = probe.create_publisher(Image, "/bad/image", RELIABLE)
    pub_jpeg = probe.create_publisher(CompressedImage, "/jpeg/image/compressed", RELIABLE)
    good_out: list[Detection2DArray] = []
    diags: list[DiagnosticArray] = []
    probe.create_subscription(
        Detection2DArray, "/detector_under_test/good/detections", good_out.append, RELIABLE
    )
    probe.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    assert spin_until(
        executor,
        lambda: (
            pub_good.get_subscription_count()
            and pub_bad.get_subscription_count()
            and pub_jpeg.get_subscription_count()
        ),
    )
    img = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    good = _image_msg(img, 10_000_000_000)

    def bad_variants():
        wrong_enc = _image_msg(img, 1)
        wrong_enc.encoding = "yuv422"
        step = _image_msg(img, 2)
        step.step = 100
        trunc = _image_msg(img, 3)
        trunc.data = bytes(trunc.data[:1000])
        zero = _image_msg(img, 4)
        zero.height = 0
        return [wrong_enc, step, trunc, zero]

    errors_of = node.pipeline.stage.errors
    slots = node.pipeline.stage.slots
    # One bad message at a time, each followed by a good frame on another camera.
    for i, bad in enumerate(bad_variants()):
        pub_bad.publish(bad)
        assert spin_until(executor, lambda i=i: slots.snapshot()["bad"]["rejected"] == i + 1)
        pub_good.publish(_image_msg(img, 10_000_000_000 + i))
        assert spin_until(executor, lambda i=i: len(good_out) >= i + 1)
    pub_jpeg.publish(CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0" + bytes(300)))
    assert spin_until(executor, lambda: errors_of["jpeg"].get("corrupt", 0) == 1)
    # Stamps going backwards (simulator reset): counted, frame still processed.
    pub_good.publish(good)
    pub_good.publish(_image_msg(img, 5_000_000_000))
    assert spin_until(executor, lambda: slots.snapshot()["good"]["stamp_resets"] == 1)
    assert spin_until(
        executor, lambda: any(stamp_to_ns(m.header.stamp) == 5_000_000_000 for m in good_out)
    )

    errors = errors_of["bad"]
    assert {k: errors[k] for k in ("encoding", "step", "truncated", "size")} == {
        "encoding": 1,
        "step": 1,
        "truncated": 1,
        "size": 1,
    }
    assert errors["camera_info_missing"] >= 1
    node.pipeline.publish_diagnostics()
    assert spin_until(
        executor,
        lambda: any(
            "error.truncated" in {kv.key for s in d.status for kv in s.values} for d in diags
        ),
    )
    status = next(s for d in diags for s in d.status if s.name.endswith("camera bad"))
    values = {kv.key: kv.value for kv in status.values}
    assert values["rejected"] == "4" and values["error.encoding"] == "1"
    assert status.level == status.WARN
    assert node.pipeline.stage.batch_errors == 0
    node.destroy_node()
    probe.destroy_node()


def test_parameters_validated_at_start_and_at_run_time(ros_context, executor):
    from perception.ros.params import ParameterError

    with pytest.raises(ParameterError, match=r"score_threshold: expected a value in \[0.0, 1.0\]"):
        _make_node(ros_context, {"cam": {}}, score_threshold=1.5)
    with pytest.raises(ParameterError, match="transport: expected one of"):
        _make_node(ros_context, {"cam": {"transport": "h264"}})
    with pytest.raises(ParameterError, match="camera_names: expected at least one camera"):
        _make_node(ros_context, {})
    node = _make_node(ros_context, {"cam": {}})
    res = node.set_parameters([Parameter("iou_threshold", value=-0.1)])[0]
    assert not res.successful and "iou_threshold" in res.reason and "range" in res.reason
    res = node.set_parameters([Parameter("class_format", value="label")])[0]
    assert not res.successful
    assert res.reason == "class_format: expected one of ['name', 'id'], got 'label'"
    res = node.set_parameters([Parameter("model.path", value="/other.onnx")])[0]
    assert not res.successful  # read-only at run time
    res = node.set_parameters([Parameter("score_threshold", value=0.6)])[0]
    assert res.successful
    assert node.pipeline.stage.detector.conf == pytest.approx(0.6)
    node.destroy_node()


def test_lifecycle_configure_activate_deactivate_cleanup(ros_context, executor):
    node = _make_node(ros_context, {"cam": {}}, lifecycle=True)
    executor.add_node(node)
    assert node.pipeline.stage is None  # nothing loaded before configure
    node.trigger_configure()
    assert node.pipeline.stage is not None
    assert node.count_subscribers("/cam/image") == 0
    node.trigger_activate()
    assert node.pipeline.cameras["cam"].subs
    probe = Node("probe", context=ros_context)
    executor.add_node(probe)
    out: list[Detection2DArray] = []
    probe.create_subscription(
        Detection2DArray, "/detector_under_test/cam/detections", out.append, RELIABLE
    )
    pub = probe.create_publisher(Image, "/cam/image", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    img = np.zeros((64, 96, 3), np.uint8)
    pub.publish(_image_msg(img, 123))
    assert spin_until(executor, lambda: len(out) == 1)
    node.trigger_deactivate()
    assert not node.pipeline.cameras["cam"].subs
    node.trigger_cleanup()
    assert node.pipeline.stage is None
    node.destroy_node()
    probe.destroy_node()


def test_tracking_stage_publishes_stable_ids(ros_context, executor):
    node = _make_node(ros_context, {"cam": {}}, tracking=True)
    executor.add_node(node)
    probe = Node("probe", context=ros_context)
    executor.add_node(probe)
    tracks: list[Detection2DArray] = []
    probe.create_subscription(
        Detection2DArray, "/detector_under_test/cam/tracks", tracks.append, RELIABLE
    )
    pub = probe.create_publisher(Image, "/cam/image", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    if (SHARED / "darknet_dog.jpg").is_file():
        img = cv2.imread(str(SHARED / "darknet_dog.jpg"))
    else:
        img = np.random.default_rng(5).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    for i in range(6):  # 10 Hz stamps; one frame at a time so none is skipped
        pub.publish(_image_msg(img, 1_000_000_000 + i * 100_000_000, frame="cam_optical"))
        assert spin_until(executor, lambda i=i: len(tracks) == i + 1), len(tracks)
    ids = [sorted(d.id for d in m.detections) for m in tracks]
    assert all(m.header.frame_id == "cam_optical" for m in tracks)
    assert ids[-1] and all(i != "" for i in ids[-1]), "tracked detections must carry ids"
    assert ids[-1] == ids[-2] == ids[-3], f"ids must be stable on a static scene: {ids}"
    res = node.set_parameters([Parameter("tracker.high_score", value=0.05)])[0]
    assert not res.successful and "tracker." in res.reason  # below low_score: refused by config
    node.destroy_node()
    probe.destroy_node()


def test_label_info_latched_overlay_on_demand_latency_and_qos_mismatch(ros_context, executor):
    from rclpy.qos import DurabilityPolicy
    from std_msgs.msg import Float64MultiArray
    from vision_msgs.msg import LabelInfo

    from perception.ros.detector_node import LATENCY_FIELDS

    node = _make_node(ros_context, {"cam": {}, "strict": {}})
    executor.add_node(node)
    probe = Node("probe", context=ros_context)
    executor.add_node(probe)
    # LabelInfo is transient-local: a subscriber joining late still gets the class map.
    labels: list[LabelInfo] = []
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    probe.create_subscription(LabelInfo, "/detector_under_test/label_info", labels.append, latched)
    assert spin_until(executor, lambda: len(labels) == 1)
    names = [c.class_name for c in labels[0].class_map]
    assert names == list(node.pipeline.stage.detector.class_names) and len(names) > 0

    pub = probe.create_publisher(Image, "/cam/image", RELIABLE)
    latency: list[Float64MultiArray] = []
    dets: list[Detection2DArray] = []
    probe.create_subscription(
        Float64MultiArray, "/detector_under_test/cam/latency", latency.append, RELIABLE
    )
    probe.create_subscription(
        Detection2DArray, "/detector_under_test/cam/detections", dets.append, RELIABLE
    )
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    img = np.random.default_rng(9).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    overlay_pub = node.pipeline.cameras["cam"].pubs["overlay"]
    assert overlay_pub.get_subscription_count() == 0
    published = []
    original = overlay_pub.publish
    overlay_pub.publish = lambda m: (published.append(m), original(m))
    pub.publish(_image_msg(img, 2_000_000_000))
    assert spin_until(executor, lambda: len(dets) == 1 and len(latency) == 1)
    assert published == [], "no overlay may be drawn while nobody subscribes"
    overlays: list[Image] = []
    probe.create_subscription(Image, "/detector_under_test/cam/overlay", overlays.append, 10)
    assert spin_until(executor, lambda: overlay_pub.get_subscription_count() > 0)
    pub.publish(_image_msg(img, 2_100_000_000))
    assert spin_until(executor, lambda: len(overlays) == 1)
    assert stamp_to_ns(overlays[0].header.stamp) == 2_100_000_000
    assert (overlays[0].width, overlays[0].height) == (120, 90)

    row = latency[0]
    assert row.layout.dim[0].label == ",".join(LATENCY_FIELDS)
    assert len(row.data) == len(LATENCY_FIELDS) and row.data[0] == pytest.approx(2.0)
    assert all(v >= 0 for v in row.data[2:7]), dict(zip(LATENCY_FIELDS, row.data, strict=True))

    # A best-effort camera publisher cannot feed a reliable subscription: counted with a fix.
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    probe.create_publisher(Image, "/strict/image", best_effort)
    errors = node.pipeline.stage.errors["strict"]
    assert spin_until(executor, lambda: errors.get("incompatible_qos", 0) >= 1)
    node.destroy_node()
    probe.destroy_node()


def test_engine_threads_leave_a_core_to_the_middleware(ros_context, executor):
    """model.threads = 0 in the live node: one thread less than the CPUs (the
    receive threads and camera drivers keep a core); a set value is kept."""
    from perception.pipeline import live_engine_threads

    assert [live_engine_threads(n) for n in (1, 2, 3, 8)] == [1, 1, 2, 7]
    for threads, expected in ((0, live_engine_threads()), (2, 2)):
        node = _make_node(ros_context, {"cam": {}}, **{"model.threads": threads})
        engine = node.pipeline.stage.detector.engine
        opts = engine.session.get_session_options()
        assert opts.intra_op_num_threads == expected
        node.destroy_node()
