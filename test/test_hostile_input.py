"""Hostile input (issue 16): every wire field range-checked at conversion, images
refused by their header before decoding, camera names checked at start-up,
box counts capped. The findings that were made over topics are checked over
real rclpy topics against the real nodes in their own processes: the node
stays alive, good input keeps flowing, the bad input is counted."""

from __future__ import annotations

import math
import struct
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not importable; run ./dev test")
cv2 = pytest.importorskip("cv2")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from vision_msgs.msg import (  # noqa: E402
    Detection2D,
    Detection2DArray,
    Detection3D,
    Detection3DArray,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
)

from perception.config.names import check_camera_names  # noqa: E402
from perception.config.spec import ParameterError, load_spec  # noqa: E402
from perception.core.fusion.types import Objects3D  # noqa: E402
from perception.core.images import (  # noqa: E402
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    compressed_header,
    compressed_to_bgr,
    image_to_array,
    image_to_bgr,
)
from perception.core.overlay_pipeline import OverlayCompositor, OverlaySettings  # noqa: E402
from perception.core.types import Detections  # noqa: E402
from perception.ros.conversions import (  # noqa: E402
    MessageFieldError,
    msg_to_detections,
    ns_to_stamp,
    stamp_to_ns,
)
from perception.ros.conversions3d import detection3d_array_to_objects  # noqa: E402
from perception.ros.testing import NodeProcess, spin_until  # noqa: E402

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
NS = 1_000_000_000
INT32_MAX = 2**31 - 1
NINES = "9" * 30


# ------------------------------------------------------------------ builders
def _det2d(cx=100.0, cy=80.0, w=40.0, h=60.0, cls="person", score=0.9, tid="", theta=0.0):
    d = Detection2D(id=tid)
    d.bbox.center.position.x, d.bbox.center.position.y = float(cx), float(cy)
    d.bbox.size_x, d.bbox.size_y, d.bbox.center.theta = float(w), float(h), float(theta)
    d.results = [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=cls, score=score))]
    return d


def _array2d(dets, stamp_ns=5 * NS, frame_id="cam") -> Detection2DArray:
    msg = Detection2DArray(detections=list(dets))
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), frame_id
    return msg


HOSTILE_2D = {
    # kind -> rows that must be dropped and counted as that kind
    "class_id": [_det2d(cls="99999999999"), _det2d(cls="-5"), _det2d(cls="1" * 5000)],
    "id": [_det2d(tid=NINES), _det2d(tid="-7"), _det2d(tid="9" * 5000)],
    "score": [_det2d(score=math.nan), _det2d(score=-math.inf)],
    "size": [_det2d(w=math.nan), _det2d(h=-1.0), _det2d(w=math.inf), _det2d(w=1e30)],
    "box": [_det2d(cx=math.inf), _det2d(cy=1e30), _det2d(theta=math.nan)],
}


def _det3d(center=(5.0, 0.0, 0.5), size=(1.0, 1.0, 1.5), cls="person", score=0.8, tid="3",
           quat=(0.0, 0.0, 0.0, 1.0), cov=None):  # fmt: skip
    d = Detection3D(id=tid)
    p = d.bbox.center.position
    p.x, p.y, p.z = (float(v) for v in center)
    o = d.bbox.center.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in quat)
    d.bbox.size.x, d.bbox.size.y, d.bbox.size.z = (float(v) for v in size)
    hyp = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=cls, score=score))
    hyp.pose.covariance = [0.0] * 36 if cov is None else cov
    d.results = [hyp]
    return d


def _png_header(width: int, height: int) -> bytes:
    """A minimal PNG (65 bytes) that declares `width` x `height`."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"", 9))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def _encoded(ext: str, shape=(48, 64, 3), params=()) -> bytes:
    ok, buf = cv2.imencode(ext, np.full(shape, 90, np.uint8), list(params))
    assert ok, ext
    return buf.tobytes()


# -------------------------------------------------------- conversions (ROS-free)
def test_2d_rows_out_of_range_are_dropped_and_counted_never_raised():
    good = [
        _det2d(tid="4", cls="car"),
        _det2d(tid="-1", cls="-1"),
        _det2d(tid="x", cls="lorry"),
        _det2d(cls="2147483647", tid=str(2**63 - 1)),
        _det2d(w=0.0, h=0.0, theta=0.3),
    ]
    hostile = [d for rows in HOSTILE_2D.values() for d in rows]
    msg = _array2d(hostile[::2] + good + hostile[1::2])
    rejected: dict[str, int] = {}
    det = msg_to_detections(msg, ["person", "bicycle", "car"], rejected=rejected)
    assert rejected == {kind: len(rows) for kind, rows in HOSTILE_2D.items()}
    assert det.class_ids.tolist() == [2, -1, -1, INT32_MAX, 0]
    assert det.track_ids.tolist() == [4, -1, -1, 2**63 - 1, -1]
    assert np.isfinite(det.xyxy).all() and det.stamp_ns == 5 * NS
    assert len(msg_to_detections(msg)) == len(good)  # no counter given: dropped all the same


def test_3d_rows_out_of_range_are_dropped_and_counted():
    msg = Detection3DArray(
        detections=[
            _det3d(tid="7"),
            _det3d(cls="99999999999"),
            _det3d(tid=NINES),
            _det3d(size=(0.0, 1.0, 1.0)),
            _det3d(size=(math.nan, 1.0, 1.0)),
            _det3d(center=(1e300, 0.0, 0.0)),
            _det3d(quat=(math.nan, 0.0, 0.0, 1.0)),
            _det3d(cov=[1e300] * 36),
            _det3d(score=math.nan),
            _det3d(tid="8", cls="2"),
        ]
    )
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(7 * NS), "base_link"
    rejected: dict[str, int] = {}
    obj = detection3d_array_to_objects(msg, ["person"], rejected)
    assert obj.track_ids.tolist() == [7, 8] and obj.class_ids.tolist() == [0, 2]
    assert rejected == {"class_id": 1, "id": 1, "size": 2, "box": 2, "covariance": 1, "score": 1}


def test_stamps_exact_to_the_int32_limit_and_refused_beyond():
    top = INT32_MAX * NS + 999_999_999
    assert stamp_to_ns(ns_to_stamp(top)) == top
    for sec, nanosec in ((INT32_MAX, 4_294_967_295), (1, NS), (-1, 0)):
        with pytest.raises(MessageFieldError) as info:
            stamp_to_ns(Time(sec=sec, nanosec=nanosec))
        assert info.value.kind == "stamp"
    for ns in (top + 1, -1):
        with pytest.raises(MessageFieldError, match="builtin_interfaces/Time"):
            ns_to_stamp(ns)
    bad = _array2d([_det2d()])
    bad.header.stamp = Time(sec=INT32_MAX, nanosec=4_000_000_000)
    with pytest.raises(MessageFieldError):  # a whole message without a usable time
        msg_to_detections(bad)


# ------------------------------------------------------------- images (ROS-free)
class _Compressed:
    def __init__(self, data: bytes, fmt: str) -> None:
        self.data, self.format = data, fmt


def test_png_bomb_refused_from_its_header_in_microseconds():
    bomb = _png_header(65535, 65535)
    assert len(bomb) < 70  # the report's bomb had 68 bytes
    t0 = time.perf_counter()
    for _ in range(100):
        with pytest.raises(ImageDecodeError) as info:
            compressed_to_bgr(_Compressed(bomb, "png"))
    per_call = (time.perf_counter() - t0) / 100
    assert info.value.kind == "too_large" and "65535x65535" in str(info.value)
    assert per_call < 2e-3, f"refusing a bomb took {per_call * 1e3:.2f} ms"
    # under the decoder's own limit but over the camera's budget
    with pytest.raises(ImageDecodeError, match="over the budget of 1000"):
        compressed_to_bgr(_Compressed(_encoded(".png"), "png"), max_pixels=1000)
    assert compressed_to_bgr(_Compressed(_encoded(".png"), "png")).shape == (48, 64, 3)
    assert load_spec("detector")["camera"]["max_pixels"].default == DEFAULT_MAX_PIXELS


@pytest.mark.parametrize("ext", [".tiff", ".webp", ".ppm", ".bmp"])
def test_other_formats_labelled_jpeg_are_refused(ext):
    with pytest.raises(ImageDecodeError) as info:
        compressed_to_bgr(_Compressed(_encoded(ext), "jpeg"))
    assert info.value.kind == "unsupported_format"


def test_declared_format_must_match_the_bytes_and_headers_are_read():
    with pytest.raises(ImageDecodeError) as info:
        compressed_to_bgr(_Compressed(_encoded(".png"), "jpeg"))
    assert info.value.kind == "format_mismatch"
    progressive = _encoded(".jpg", (33, 65, 3), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))
    assert compressed_header(progressive, "bgr8; jpeg compressed bgr8") == ("jpeg", 65, 33)
    assert compressed_header(_encoded(".png"), "") == ("png", 64, 48)
    for data, fmt, kind in (
        (b"\xff\xd8\xff\xe0" + bytes(300), "jpeg", "corrupt"),
        (b"", "jpeg", "size"),
        (_png_header(0, 10), "png", "corrupt"),
        (b"GIF89a" + bytes(20), "", "unsupported_format"),
    ):
        with pytest.raises(ImageDecodeError) as info:
            compressed_to_bgr(_Compressed(data, fmt))
        assert info.value.kind == kind, data[:10]
    broken = _png_header(64, 48) + b"\x00" * 40  # a valid header, garbage after it
    with pytest.raises(ImageDecodeError) as info:
        compressed_to_bgr(_Compressed(broken, "png"))
    assert info.value.kind == "corrupt"


def test_raw_image_budget_checked_before_any_view_or_copy():
    big = Image(height=3000, width=4000, encoding="mono8", step=4000, data=b"")
    with pytest.raises(ImageDecodeError) as info:
        image_to_bgr(big, max_pixels=1_000_000)
    assert info.value.kind == "too_large"  # before the data length is even looked at
    huge = Image(height=2**32 - 1, width=2**32 - 1, encoding="bgr8", step=2**32 - 1, data=b"")
    with pytest.raises(ImageDecodeError) as info:
        image_to_bgr(huge)
    assert info.value.kind == "too_large"
    assert image_to_array(Image(height=2, width=2, encoding="mono8", step=2, data=bytes(4))).shape
    with pytest.raises(ImageDecodeError) as info:
        image_to_bgr(Image(height=2, width=2, encoding="mono8", step=2, data=bytes(3)))
    assert info.value.kind == "truncated"


# ----------------------------------------------------- camera names, box caps
def test_camera_names_must_be_ros_name_tokens():
    check_camera_names(["front", "rear_left", "_cam2"])
    with pytest.raises(ParameterError) as info:
        check_camera_names(["front", "../evil", "a b", "2cam", "x" * 65])
    text = str(info.value)
    assert "\n" not in text and text.startswith("camera_names: invalid camera name")
    for name in ("'../evil'", "'a b'", "'2cam'"):
        assert name in text


def test_overlay_draws_at_most_max_boxes_highest_scores_first():
    comp: OverlayCompositor[str] = OverlayCompositor(OverlaySettings(max_boxes=3))
    scores = [0.1, 0.9, 0.5, 0.7, 0.2]
    det = Detections.from_arrays(
        [[i, 0, i + 5, 5] for i in range(5)], scores, [0] * 5, list(range(5)), stamp_ns=NS
    )
    comp.add_tracks(det)
    comp.add_image(NS, "img")
    assert comp.latest_tracks is not None
    assert comp.latest_tracks.track_ids.tolist() == [1, 2, 3]  # the 3 best, in message order
    assert comp.counters["too_many_boxes"] == 1
    objects = Objects3D.from_arrays(np.zeros((5, 3)), np.ones((5, 3)), scores=scores)
    comp.add_objects(objects)
    assert comp.counters["too_many_boxes"] == 2
    assert not comp.status().ok


# ------------------------------------------------------- over topics, real nodes
def _wait_alive(executor, procs, predicate, what: str, timeout_s: float = 20.0) -> None:
    def check() -> None:
        for p in procs:
            if not p.alive():
                raise AssertionError(f"{p.argv[2]} died ({what}):\n{p.output()[-3000:]}")

    ok = spin_until(executor, predicate, timeout_s=timeout_s, on_step=check)
    check()
    assert ok, what + "\n" + "\n".join(p.output()[-2000:] for p in procs)


def _hostile_arrays(stamp_ns: int, frame_id: str) -> list[Detection2DArray]:
    """The crash messages of the report, each with a good row beside it."""
    out = []
    for rows in ([_det2d(cls="99999999999")], [_det2d(tid=NINES)], HOSTILE_2D["size"]):
        out.append(_array2d([*rows, _det2d(tid="1")], stamp_ns, frame_id))
    return out


@pytest.mark.ros
def test_tracker_node_survives_out_of_range_fields(ros_context, executor):
    """tracker_node in its own process: the OverflowError messages no longer
    end it, and the next good message is tracked."""
    probe = Node("hostile_trk_probe", context=ros_context)
    executor.add_node(probe)
    pub = probe.create_publisher(Detection2DArray, "/hostile_trk/det", RELIABLE)
    out: list[Detection2DArray] = []
    probe.create_subscription(Detection2DArray, "/hostile_trk/det/tracks", out.append, RELIABLE)
    args = ["--ros-args", "-p", "input_topics:=[/hostile_trk/det]", "-p", "class_names:=[person]"]
    with NodeProcess.module("perception.ros.tracker_node", *args) as proc:
        _wait_alive(executor, [proc], lambda: pub.get_subscription_count() > 0, "connect")
        stamp = 10 * NS
        for msg in _hostile_arrays(stamp, "cam"):
            pub.publish(msg)
            stamp += NS // 10
        for _ in range(3):
            stamp += NS // 10
            pub.publish(_array2d([_det2d(tid="1")], stamp, "cam"))

        def last() -> list[Detection2DArray]:
            return [m for m in out if stamp_to_ns(m.header.stamp) == stamp]

        _wait_alive(executor, [proc], lambda: bool(last()), "good messages after hostile")
    assert len(last()[-1].detections) == 1


@pytest.mark.ros
def test_fusion_node_survives_out_of_range_fields(ros_context, executor):
    pytest.importorskip("open3d", reason="open3d not importable (libusb-1.0-0 missing?)")
    probe = Node("hostile_fz_probe", context=ros_context)
    executor.add_node(probe)
    pub_info = probe.create_publisher(CameraInfo, "/hostile_fz/info", RELIABLE)
    pub_depth = probe.create_publisher(Image, "/hostile_fz/depth", RELIABLE)
    pub_det = probe.create_publisher(Detection2DArray, "/hostile_fz/det", RELIABLE)
    out: list[Detection3DArray] = []
    probe.create_subscription(Detection3DArray, "/fusion/objects", out.append, RELIABLE)
    args = ["--ros-args", "-p", "mode:=depth", "-p", "detections_topic:=/hostile_fz/det",
            "-p", "camera_info_topic:=/hostile_fz/info", "-p", "depth_topic:=/hostile_fz/depth",
            "-p", "class_names:=[person]", "-p", "qos_reliability:=reliable"]  # fmt: skip

    def frame(stamp_ns: int) -> tuple[CameraInfo, Image]:
        info = CameraInfo(width=320, height=240, distortion_model="plumb_bob")
        info.k = [300.0, 0.0, 160.0, 0.0, 300.0, 120.0, 0.0, 0.0, 1.0]
        info.d = [0.0] * 5
        depth = np.full((240, 320), 6.0, np.float32)
        img = Image(height=240, width=320, encoding="32FC1", step=320 * 4, data=depth.tobytes())
        for m in (info, img):
            m.header.stamp, m.header.frame_id = ns_to_stamp(stamp_ns), "cam_optical"
        return info, img

    with NodeProcess.module("perception.ros.fusion_node", *args) as proc:
        _wait_alive(
            executor,
            [proc],
            lambda: all(  # volatile topics: a message sent before matching is lost
                p.get_subscription_count() > 0 for p in (pub_det, pub_depth, pub_info)
            ),
            "connect",
        )
        stamp = 20 * NS
        for msg in _hostile_arrays(stamp, "cam_optical"):
            stamp = stamp_to_ns(msg.header.stamp) + NS // 10
            msg.header.stamp = ns_to_stamp(stamp)
            info, depth = frame(stamp)
            pub_info.publish(info)
            pub_depth.publish(depth)
            pub_det.publish(msg)
        first_good = stamp + NS // 10
        for _ in range(40):  # good frames until one is fused: a volatile message sent
            stamp += NS // 10  # while the reader side is still matching is lost
            info, depth = frame(stamp)
            pub_info.publish(info)
            pub_depth.publish(depth)
            pub_det.publish(_array2d([_det2d(cx=160, cy=120, tid="1")], stamp, "cam_optical"))
            if spin_until(
                executor, lambda: any(stamp_to_ns(m.header.stamp) >= first_good for m in out), 0.5
            ):
                break
        _wait_alive(
            executor,
            [proc],
            lambda: any(stamp_to_ns(m.header.stamp) >= first_good for m in out),
            "fused output after hostile messages",
        )


@pytest.mark.ros
def test_overlay_node_survives_and_counts_every_hostile_input(ros_context, executor):
    """One overlay process (compressed transport, predicted mode, 3D objects):
    each hostile message is followed by a good image that must come out."""
    ns = "/hostile_ovl"
    probe = Node("hostile_ovl_probe", context=ros_context)
    executor.add_node(probe)
    pub_img = probe.create_publisher(CompressedImage, f"{ns}/image/compressed", RELIABLE)
    pub_tracks = probe.create_publisher(Detection2DArray, f"{ns}/tracks", RELIABLE)
    pub_obj = probe.create_publisher(Detection3DArray, f"{ns}/objects", RELIABLE)
    out: list[Image] = []
    diags: list[DiagnosticArray] = []
    probe.create_subscription(Image, f"{ns}/out", out.append, RELIABLE)
    probe.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 50)
    params = {"image_topic": f"{ns}/image", "transport": "compressed",
              "tracks_topic": f"{ns}/tracks", "objects_topic": f"{ns}/objects",
              "output_topic": f"{ns}/out", "image_qos.reliability": "reliable",
              "use_prediction": "true", "max_boxes": "2",
              "diagnostics_period_s": "0.1"}  # fmt: skip
    args = ["--ros-args", "-r", "__node:=hostile_ovl"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    jpeg = _encoded(".jpg", (120, 160, 3))
    stamp = [30 * NS]

    def image(data: bytes = jpeg, fmt: str = "jpeg") -> CompressedImage:
        stamp[0] += NS // 10
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp[0]), "cam"
        return msg

    def values() -> dict[str, str]:
        found = [s for d in diags for s in d.status if s.name == "hostile_ovl: overlay"]
        return {kv.key: kv.value for kv in found[-1].values} if found else {}

    bad_stamp = image()
    bad_stamp.header.stamp = Time(sec=INT32_MAX, nanosec=4_294_967_295)
    bad_tracks_stamp = _array2d([_det2d()], 31 * NS, "cam")
    bad_tracks_stamp.header.stamp = Time(sec=INT32_MAX, nanosec=4_000_000_000)
    objects = Detection3DArray(detections=[_det3d(cls="99999999999"), _det3d(tid=NINES),
                                           _det3d(size=(math.inf, 1, 1)), _det3d()])  # fmt: skip
    objects.header.stamp, objects.header.frame_id = ns_to_stamp(31 * NS), "cam"
    many = _array2d([_det2d(cx=10 * i, tid=str(i), score=0.1 * i) for i in range(1, 6)], 31 * NS)
    hostile = [
        *_hostile_arrays(31 * NS, "cam"),
        bad_tracks_stamp,
        objects,
        many,
        image(_png_header(65535, 65535), "png"),  # the 65-byte bomb
        image(_encoded(".tiff"), "jpeg"),
        image(_encoded(".png"), "jpeg"),
        bad_stamp,
    ]
    pubs = {Detection2DArray: pub_tracks, Detection3DArray: pub_obj, CompressedImage: pub_img}
    with NodeProcess.module("perception.ros.overlay_node", *args) as proc:
        _wait_alive(
            executor,
            [proc],
            lambda: all(p.get_subscription_count() > 0 for p in pubs.values()),
            "connect",
        )
        for msg in hostile:
            pubs[type(msg)].publish(msg)
            n = len(out)
            pub_img.publish(image())
            _wait_alive(executor, [proc], lambda n=n: len(out) > n, f"image after {type(msg)}")
        expect = {
            "rejected.tracks.class_id": "1", "rejected.tracks.id": "1",
            "rejected.tracks.size": str(len(HOSTILE_2D["size"])), "rejected.tracks.stamp": "1",
            "rejected.objects.class_id": "1", "rejected.objects.id": "1",
            "rejected.objects.size": "1", "rejected.image.too_large": "1",
            "rejected.image.unsupported_format": "1", "rejected.image.format_mismatch": "1",
            "rejected.image.stamp": "1", "too_many_boxes": "1", "callback_errors": "0",
        }  # fmt: skip
        _wait_alive(
            executor,
            [proc],
            lambda: all(values().get(k) == v for k, v in expect.items()),
            f"diagnostics {values()}",
            timeout_s=10,
        )
    assert all(stamp_to_ns(m.header.stamp) < 2**31 * NS for m in out)


@pytest.mark.ros
def test_detector_refuses_bad_camera_names_at_start_with_one_line(ros_context):
    args = ["--ros-args", "-p", "camera_names:=[front, ../evil, a b]",
            "-p", "cameras.front.topic:=/front/image"]  # fmt: skip
    with NodeProcess.module("perception.ros.detector_node", *args) as proc:
        proc.proc.wait(60)
        log = proc.output()
        assert proc.proc.returncode == 2, log
    fatal = [line for line in log.splitlines() if "cannot start" in line]
    assert len(fatal) == 1 and "Traceback" not in log, log
    assert "'../evil'" in fatal[0] and "'a b'" in fatal[0] and "'front'" not in fatal[0]
