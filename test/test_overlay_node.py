"""Overlay node with real rclpy: across processes (image publisher, tracks from
this test, overlay node), bounded buffers, predicted mode, parameters."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not importable; run ./dev test")
cv2 = pytest.importorskip("cv2")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from perception.core.types import Detections  # noqa: E402
from perception.ros.conversions import detections_to_msg, ns_to_stamp, stamp_to_ns  # noqa: E402
from perception.ros.images import image_to_bgr  # noqa: E402
from perception.ros.testing import NodeProcess, spin_until  # noqa: E402

pytestmark = pytest.mark.ros

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
NS = 1_000_000_000
GRAY = 60


def _tracks_for(header, box, track_id: int = 1) -> Detection2DArray:
    det = Detections.from_arrays(
        [box], [0.9], [0], [track_id], stamp_ns=stamp_to_ns(header.stamp), frame_id=header.frame_id
    )
    return detections_to_msg(det, ["person"], header=header)


def test_cross_process_image_and_tracks_in_annotated_image_out(ros_context, executor, tmp_path):
    """image_publisher and the overlay node in their own processes; this test
    answers every image it sees with tracks of the same stamp."""
    img_path = tmp_path / "gray.png"
    cv2.imwrite(str(img_path), np.full((240, 320, 3), GRAY, np.uint8))
    ns = "/ovl_xproc"
    probe = Node("ovl_probe", context=ros_context)
    executor.add_node(probe)
    pub_tracks = probe.create_publisher(Detection2DArray, f"{ns}/tracks", RELIABLE)
    sent: dict[int, tuple[float, float, float, float]] = {}
    out: list[Image] = []
    diags: list[DiagnosticArray] = []

    def on_image(msg: Image) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        x = 40.0 + 10.0 * (len(sent) % 10)
        sent[stamp] = (x, 60.0, x + 100.0, 180.0)
        pub_tracks.publish(_tracks_for(msg.header, sent[stamp]))

    probe.create_subscription(Image, f"{ns}/image_raw", on_image, RELIABLE)
    probe.create_subscription(Image, f"{ns}/overlay", out.append, RELIABLE)
    probe.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    procs = [
        NodeProcess.module(
            "perception.ros.overlay_node",
            "--ros-args",
            "-r",
            "__node:=ovl_xproc",
            "-p",
            f"image_topic:={ns}/image_raw",
            "-p",
            f"tracks_topic:={ns}/tracks",
            "-p",
            f"output_topic:={ns}/overlay",
            "-p",
            "image_qos.reliability:=reliable",
            "-p",
            "buffer_size:=10",
            "-p",
            "diagnostics_period_s:=0.2",
        ),
        NodeProcess(
            [
                sys.executable,
                "-m",
                "perception.ros.tools.image_publisher",
                str(img_path),
                "--topic",
                f"{ns}/image_raw",
                "--frame-id",
                "cam_optical",
                "--rate",
                "10",
                "--loop",
            ]
        ),
    ]
    try:

        def matched() -> int:
            return sum(stamp_to_ns(m.header.stamp) in sent for m in out)

        ok = spin_until(executor, lambda: matched() >= 3, timeout_s=30)
        logs = "\n".join(f"--- {p.argv[2]}\n{p.output()[-2000:]}" for p in procs)
        assert ok, f"{len(out)} annotated images, {len(sent)} images seen\n{logs}"

        def diag_published() -> int:
            found = [s for d in diags for s in d.status if s.name == "ovl_xproc: overlay"]
            return int({kv.key: kv.value for kv in found[-1].values}["published"]) if found else 0

        ok = spin_until(executor, lambda: diag_published() >= 3, timeout_s=10)
        assert ok, f"no diagnostics from the overlay node\n{logs}"
    finally:
        for p in procs:
            p.stop()
    for msg in out:
        stamp = stamp_to_ns(msg.header.stamp)
        assert stamp in sent, "every annotated image carries the stamp of an input image"
        assert msg.header.frame_id == "cam_optical"
        assert (msg.width, msg.height, msg.encoding) == (320, 240, "bgr8")
        img = image_to_bgr(msg)
        x1, y1, _, y2 = (int(v) for v in sent[stamp])
        changed = np.any(img.astype(int) != GRAY, axis=2)
        # the box of THIS image's tracks is drawn (its left edge), the far corner is untouched
        assert changed[y1 + 20 : y2 - 5, x1 - 1 : x1 + 2].all(), f"no box edge at x={x1}"
        assert not changed[200:, 250:].any()
    status = [s for d in diags for s in d.status if s.name == "ovl_xproc: overlay"][-1]
    values = {kv.key: kv.value for kv in status.values}
    assert values["buffer_size"] == "10" and int(values["image_buffer"]) <= 10


# ---------------------------------------------------------------- in-process


def _make_node(ros_context, **overrides):
    from perception.ros.overlay_node import OverlayNode

    params = {
        "image_topic": "/ovl/image",
        "tracks_topic": "/ovl/tracks",
        "output_topic": "/ovl/out",
        "image_qos.reliability": "reliable",
        **overrides,
    }
    return OverlayNode(
        "overlay_under_test",
        context=ros_context,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
    )


def _image_msg(stamp_ns: int, w: int = 320, h: int = 240, value: int = 0) -> Image:
    msg = Image(height=h, width=w, encoding="bgr8", step=w * 3)
    msg.data = bytes([value]) * (w * h * 3)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = "cam"
    return msg


class _Rig:
    """A probe node publishing images/tracks to the node under test one at a
    time (each waits until the node has taken it) and collecting its output."""

    def __init__(self, ros_context, executor, node, compressed: bool = False) -> None:
        self.node, self.executor = node, executor
        self.probe = Node("ovl_probe", context=ros_context)
        executor.add_node(node)
        executor.add_node(self.probe)
        image_type, topic = (
            (CompressedImage, "/ovl/image/compressed")
            if compressed
            else (
                Image,
                "/ovl/image",
            )
        )
        self.pub_image = self.probe.create_publisher(image_type, topic, RELIABLE)
        self.pub_tracks = self.probe.create_publisher(Detection2DArray, "/ovl/tracks", RELIABLE)
        self.out: list[Image] = []
        self.probe.create_subscription(Image, "/ovl/out", self.out.append, RELIABLE)
        assert spin_until(
            executor,
            lambda: (
                self.pub_image.get_subscription_count() and self.pub_tracks.get_subscription_count()
            ),
        )

    def image(self, msg) -> None:
        n = self.node.counters["images_received"]
        self.pub_image.publish(msg)
        assert spin_until(self.executor, lambda: self.node.counters["images_received"] == n + 1)

    def tracks(self, stamp_ns: int, box, track_id: int = 1) -> None:
        n = self.node.counters["tracks_received"]
        header = _image_msg(stamp_ns, 1, 1).header
        self.pub_tracks.publish(_tracks_for(header, box, track_id))
        assert spin_until(self.executor, lambda: self.node.counters["tracks_received"] == n + 1)

    def destroy(self) -> None:
        self.node.destroy_node()
        self.probe.destroy_node()


def test_buffers_never_grow_under_a_flood_of_unmatched_messages(ros_context, executor):
    node = _make_node(ros_context, buffer_size=4)
    rig = _Rig(ros_context, executor, node)
    t0 = 100 * NS
    for k in range(40):  # images nobody answers
        rig.image(_image_msg(t0 + k * NS // 30))
        assert node.core.pending()["image_buffer"] <= 4
    assert node.counters["unmatched_images"] == 36 and node.core.pending()["image_buffer"] == 4
    # tracks of the newest buffered image: published with that image's stamp; the
    # older images can no longer be matched (tracks come in stamp order): dropped, counted
    last = t0 + 39 * NS // 30
    rig.tracks(last, (50, 50, 150, 150))
    assert spin_until(executor, lambda: len(rig.out) == 1)
    assert stamp_to_ns(rig.out[0].header.stamp) == last and rig.out[0].header.frame_id == "cam"
    assert node.core.pending()["image_buffer"] == 0 and node.counters["unmatched_images"] == 39
    assert node.core.class_names == ["person"], "class names carried by the tracks are learnt"
    for k in range(30):  # tracks whose images never come
        rig.tracks(200 * NS + k * NS // 30, (50, 50, 150, 150))
        assert node.core.pending()["track_buffer"] <= 4
    assert node.counters["unmatched_tracks"] == 26
    # an image arriving after its tracks is matched from the tracks buffer
    rig.image(_image_msg(200 * NS + 29 * NS // 30))
    assert spin_until(executor, lambda: len(rig.out) == 2)
    assert node.counters["published"] == 2 and len(rig.out) == 2
    rig.destroy()


def test_compressed_input_and_trails(ros_context, executor):
    node = _make_node(ros_context, transport="compressed")
    rig = _Rig(ros_context, executor, node, compressed=True)
    t0 = 50 * NS
    for k in range(4):  # the object moves right; its trail follows the centres
        stamp = t0 + k * NS // 10
        box = (40 + 40 * k, 80, 80 + 40 * k, 160)
        rig.tracks(stamp, box)
        _, buf = cv2.imencode(".png", np.zeros((240, 320, 3), np.uint8))
        msg = CompressedImage(format="png", data=buf.tobytes())
        msg.header.stamp = ns_to_stamp(stamp)
        msg.header.frame_id = "cam"
        rig.image(msg)
    assert spin_until(executor, lambda: len(rig.out) == 4)
    img = image_to_bgr(rig.out[-1])
    # the trail runs through the centres (60..180, 120), outside the last box (160..200)
    assert (img[118:123, 65:150].max(axis=(0, 2)) > 0).mean() > 0.9
    bad = CompressedImage(format="jpeg", data=b"\xff\xd8" + bytes(50))
    bad.header.stamp = ns_to_stamp(t0 + NS)
    rig.tracks(t0 + NS, (0, 0, 10, 10))
    rig.image(bad)
    assert node.counters["decode_errors"] == 1 and len(rig.out) == 4
    rig.destroy()


def test_prediction_mode_moves_boxes_to_the_image_time_and_refuses_far_horizons(
    ros_context, executor
):
    node = _make_node(ros_context, use_prediction=True, **{"prediction.max_horizon_s": 0.5})
    rig = _Rig(ros_context, executor, node)
    t0 = 10 * NS
    rig.image(_image_msg(t0 - NS))  # no tracks yet: published plain
    assert spin_until(executor, lambda: len(rig.out) == 1)
    assert not image_to_bgr(rig.out[0]).any()
    for k in range(10):  # 100 px/s to the right, tracks at 10 Hz
        x = 20.0 + 10.0 * k
        rig.tracks(t0 + k * NS // 10, (x, 60, x + 60, 180))
    # image 100 ms after the newest tracks (x1 = 110): drawn at x1 ~ 120
    rig.image(_image_msg(t0 + NS))
    assert spin_until(executor, lambda: len(rig.out) == 2)
    assert node.core.last_horizon_s == pytest.approx(0.1)
    img = image_to_bgr(rig.out[1])
    cols = (img[100:170].max(axis=2) > 0).sum(axis=0)
    left = int(np.argmax(cols[:150]))
    assert 117 <= left <= 122, f"predicted left edge at x={left}, expected ~120 (measured 110)"
    # 2 s after the tracks: beyond the cap, image published without boxes, refusal counted
    rig.image(_image_msg(t0 + 3 * NS))
    assert spin_until(executor, lambda: len(rig.out) == 3)
    assert node.counters["prediction_refused"] == 1 and not image_to_bgr(rig.out[2]).any()
    # switching prediction off at run time goes back to stamp matching
    assert node.set_parameters([Parameter("use_prediction", value=False)])[0].successful
    rig.image(_image_msg(t0 + 4 * NS))
    assert node.core.pending()["image_buffer"] == 1 and len(rig.out) == 3
    node.publish_diagnostics()
    rig.destroy()


def test_parameters_validated_at_start_and_at_run_time(ros_context, executor):
    from perception.ros.params import ParameterError

    with pytest.raises(ParameterError, match=r"buffer_size: expected a value in \[1, 200\]"):
        _make_node(ros_context, buffer_size=0)
    with pytest.raises(ParameterError, match="transport: expected one of"):
        _make_node(ros_context, transport="h264")
    node = _make_node(ros_context)
    res = node.set_parameters([Parameter("prediction.past", value="future")])[0]
    assert not res.successful and "prediction.past: expected one of" in res.reason
    res = node.set_parameters([Parameter("buffer_size", value=20)])[0]
    assert not res.successful  # read-only: the buffers are sized at start
    assert node.set_parameters([Parameter("prediction.max_horizon_s", value=0.2)])[0].successful
    assert node.params.prediction.max_horizon_s == pytest.approx(0.2)
    assert node.core.settings.max_horizon_s == pytest.approx(0.2)
    node.destroy_node()


def test_runner_refuses_a_bad_parameter_with_exit_code_2(tmp_path: Path):
    proc = NodeProcess.module("perception.ros.overlay_node", "--ros-args", "-p", "buffer_size:=0")
    try:
        code = proc.proc.wait(30)
        log = proc.output()
    finally:
        proc.stop()
    assert code == 2, log
    assert "buffer_size: expected a value in [1, 200]" in log


def test_tracks_at_time_request_is_answered_or_refused(ros_context, executor):
    from std_msgs.msg import Header, String

    node = _make_node(ros_context, **{"tracks_at.request_topic": "/ovl/at/request",
                                      "tracks_at.response_topic": "/ovl/at"})  # fmt: skip
    rig = _Rig(ros_context, executor, node)
    answers: list[Detection2DArray] = []
    refusals: list[String] = []
    rig.probe.create_subscription(Detection2DArray, "/ovl/at", answers.append, RELIABLE)
    rig.probe.create_subscription(String, "/ovl/at/request/refused", refusals.append, RELIABLE)
    pub = rig.probe.create_publisher(Header, "/ovl/at/request", RELIABLE)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    t0 = 10 * NS
    pub.publish(Header(stamp=ns_to_stamp(t0)))  # nothing tracked yet
    assert spin_until(executor, lambda: len(refusals) == 1)
    assert "no tracks received yet" in refusals[0].data
    for k in range(10):  # 100 px/s to the right at 10 Hz; newest x1 = 110 at t0 + 0.9 s
        x = 20.0 + 10.0 * k
        rig.tracks(t0 + k * NS // 10, (x, 60, x + 60, 180))
    last = t0 + 9 * NS // 10
    pub.publish(Header(stamp=ns_to_stamp(last + NS // 5)))
    assert spin_until(executor, lambda: len(answers) == 1)
    ans = answers[0]
    assert stamp_to_ns(ans.header.stamp) == last + NS // 5
    (d,) = ans.detections
    assert stamp_to_ns(d.header.stamp) == last, "each detection carries the source stamp"
    assert d.id == "1" and d.bbox.center.position.x == pytest.approx(140.0 + 20.0, abs=2.0)
    pose = d.results[0].pose
    assert pose.pose.position.x == pytest.approx(d.bbox.center.position.x)
    assert pose.covariance[0] > 0.0 and pose.covariance[7] > 0.0
    pub.publish(Header(stamp=ns_to_stamp(last + 2 * NS)))  # beyond the 0.5 s cap
    assert spin_until(executor, lambda: len(refusals) == 2)
    assert "expected |horizon| <= 0.500 s" in refusals[1].data
    assert node.counters["requests"] == 3 and node.counters["requests_refused"] == 2
    rig.destroy()
