"""`perception replay` on one machine: a generated scenario bag replays into
MCAP outputs that read back with rosbags, the same on every run and the same
as the ROS-free pipeline fed the scenario's frames directly; bad inputs
(truncated, empty, missing topic, stamps out of order, corrupt image) are
reported with a reason while the others complete; --resume skips finished
inputs and never takes a leftover .tmp folder for one.

No ROS needed (the message-mapping test against perception.ros.conversions
skips without it). One bag (12 frames, 3 cameras 320x192, depth, ground
truth) is rendered once per session.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rosbags")

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from perception.replay.job import InputResult, ReplayConfig, Replayer, expand_inputs, input_key
from perception.sim.bag import make_typestore

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "default_detector.onnx"
PIPELINE = REPO / "config" / "pipeline_carla.yaml"
CAMS = ("rgb_front", "rgb_left", "rgb_right")
PREFIX = "/carla/ego_vehicle"
N_FRAMES = 12

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL} missing")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def scenario_bag(tmp_path_factory) -> tuple[Path, list[Any], Any]:
    """A generated scenario bag (python -m perception.sim.bag's writer) and the
    frames it holds, rendered once."""
    from perception.sim import Scenario, default_rig
    from perception.sim.bag import write_bag
    from perception.sim.rig import Rig

    rig = Rig(default_rig(320, 192).cameras, None)
    sc = Scenario(3, duration_s=N_FRAMES / 10.0, rate_hz=10.0, rig=rig)
    frames = list(sc.frames())
    sc.frames = lambda: iter(frames)  # type: ignore[method-assign]  # write what we keep
    path = tmp_path_factory.mktemp("replay") / "drive_a"
    write_bag(path, sc, depth=True)
    return path, frames, rig


@pytest.fixture(scope="module")
def replayer(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay_out")
    config = ReplayConfig(str(PIPELINE), str(out), (f"detector.model.path={MODEL}",))
    with Replayer(config) as r:
        yield r


def use_out(replayer: Replayer, out: Path, **changes: Any) -> Replayer:
    """The module's replayer (one engine) writing to `out` (other settings:
    the defaults unless given)."""
    replayer.config = replace(replayer.config, out=str(out), resume=False, max_frames=0)
    replayer.config = replace(replayer.config, **changes)
    return replayer


def bag_file(bag: Path) -> Path:
    return next(bag.glob("*.mcap"))


def rewrite(
    src: Path, dst: Path, edit=None, drop: tuple[str, ...] = (), storage=StoragePlugin.MCAP
) -> Path:
    """Copy a bag message by message: `edit(items)` may change the list of
    [topic, log_time, message] (deserialised), topics in `drop` are left out."""
    store = make_typestore()
    with Reader(src) as r:
        types = {c.topic: c.msgtype for c in r.connections if c.topic not in drop}
        items = [
            [c.topic, t, store.deserialize_cdr(raw, c.msgtype)]
            for c, t, raw in r.messages()
            if c.topic in types
        ]
    if edit is not None:
        items = edit(items)
    with Writer(dst, version=9, storage_plugin=storage) as w:
        conns = {t: w.add_connection(t, m, typestore=store) for t, m in types.items()}
        for topic, t, msg in items:
            w.write(conns[topic], t, store.serialize_cdr(msg, types[topic]))
    return dst


def read_outputs(folder: Path) -> dict[str, list[tuple[int, str, bytes]]]:
    """topic -> [(log time, msgtype, raw CDR)] of an output MCAP."""
    out: dict[str, list[tuple[int, str, bytes]]] = {}
    with Reader(folder / "outputs") as r:
        for c, t, raw in r.messages():
            out.setdefault(c.topic, []).append((t, c.msgtype, bytes(raw)))
    return out


def stamp_of(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


# ---------------------------------------------------------------- happy path
def test_bag_replays_to_readable_mcap(scenario_bag, replayer, tmp_path):
    bag, frames, _ = scenario_bag
    r = use_out(replayer, tmp_path).run(str(bag))
    assert r.status == "ok", r.reason
    assert r.reason == ""
    assert r.frames == N_FRAMES and r.images == 3 * N_FRAMES
    assert r.key == input_key(str(bag)) and (tmp_path / r.key / "result.json").is_file()
    assert not list(tmp_path.glob("*.tmp-*"))
    for cam in CAMS:
        c = r.counters[cam]
        assert (c["received"], c["processed"], c["rejected"]) == (N_FRAMES, N_FRAMES, 0)
        assert c["fusion.processed"] == N_FRAMES
    # metrics against the bag's ground truth
    assert set(r.metrics) >= {"ap50", "mota", "idf1", "id_switches", "centre_error"}
    assert 0.0 < r.metrics["ap50"] <= 1.0
    folder = tmp_path / r.key
    for name in ("report.md", "report.json", "accuracy.png", "latency.png", "frames.jsonl"):
        assert (folder / name).is_file(), name
    assert "Detection AP@0.5" in (folder / "report.md").read_text()
    rows = [json.loads(line) for line in (folder / "frames.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * N_FRAMES and {row["camera"] for row in rows} == set(CAMS)

    stamps = [f.stamp_ns for f in frames]
    expected = {
        **{f"/detector/{c}/detections": "vision_msgs/msg/Detection2DArray" for c in CAMS},
        **{f"/detector/{c}/tracks": "vision_msgs/msg/Detection2DArray" for c in CAMS},
        **{f"/fusion_{c[4:]}/objects": "vision_msgs/msg/Detection3DArray" for c in CAMS},
        **{f"/fusion_{c[4:]}/markers": "visualization_msgs/msg/MarkerArray" for c in CAMS},
    }
    with AnyReader([folder / "outputs"], default_typestore=make_typestore()) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == expected
        got: dict[str, list[int]] = {}
        for conn, t, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype.endswith("MarkerArray"):
                assert msg.markers[0].action == 3  # DELETEALL first, as the node
                continue
            assert stamp_of(msg) == t
            got.setdefault(conn.topic, []).append(t)
            cam = conn.topic.split("/")[2]
            if conn.topic.startswith("/detector/"):
                assert msg.header.frame_id == f"ego_vehicle/{cam}"
                if conn.topic.endswith("/tracks") and msg.detections:
                    assert all(d.id.isdigit() for d in msg.detections)
            else:
                assert msg.header.frame_id == "base_link"
    for topic in expected:
        if not topic.endswith("markers"):
            assert got[topic] == stamps, topic


def test_replay_is_deterministic(scenario_bag, replayer, tmp_path):
    bag = str(scenario_bag[0])
    a = use_out(replayer, tmp_path / "a").run(bag)
    b = use_out(replayer, tmp_path / "b").run(bag)
    assert a.status == b.status == "ok"
    assert a.metrics == b.metrics and a.counters == b.counters
    assert read_outputs(tmp_path / "a" / a.key) == read_outputs(tmp_path / "b" / b.key)
    latency = ("preprocess_ms", "inference_ms", "postprocess_ms", "engine_ms")

    def table(run: str) -> list[dict]:
        lines = (tmp_path / run / a.key / "frames.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in latency} for x in lines]

    assert table("a") == table("b")


def _decode_2d(msg: Any, names: list[str]) -> tuple[np.ndarray, ...]:
    d = msg.detections
    cx = np.array([x.bbox.center.position.x for x in d], np.float64)
    cy = np.array([x.bbox.center.position.y for x in d], np.float64)
    w = np.array([x.bbox.size_x for x in d], np.float64)
    h = np.array([x.bbox.size_y for x in d], np.float64)
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)
    scores = np.array([x.results[0].hypothesis.score for x in d], np.float32)
    cls = np.array([names.index(x.results[0].hypothesis.class_id) for x in d], np.int32)
    ids = np.array([int(x.id) if x.id else -1 for x in d], np.int64)
    return xyxy.reshape(-1, 4), scores, cls, ids


def test_replay_equals_the_pipeline_fed_directly(scenario_bag, replayer, tmp_path):
    """The frames the scenario rendered, handed straight to the ROS-free
    Pipeline, give exactly the detections, track ids and 3D objects that the
    replay of its bag wrote."""
    from perception.pipeline import CameraFrame
    from perception.pipeline.topology import build_pipeline
    from perception.sim.layout import SimLayout

    bag, frames, rig = scenario_bag
    r = use_out(replayer, tmp_path).run(str(bag))
    assert r.status == "ok", r.reason
    names = list(replayer.detector.class_names)
    pipeline = build_pipeline(replayer.spec, detector=replayer.detector)
    layout = SimLayout()
    direct: dict[tuple[str, int], Any] = {}
    for f in frames:
        batch = [
            CameraFrame(
                camera=m.name,
                image=f.cameras[m.name].image_bgr,
                stamp_ns=f.stamp_ns,
                frame_id=layout.camera_frame(m.name),
                camera_model=m.model,
                depth=f.cameras[m.name].depth,
            )
            for m in rig.cameras
        ]
        for res in pipeline.process(batch):
            direct[(res.camera, res.stamp_ns)] = res
    assert len(direct) == 3 * N_FRAMES
    store = make_typestore()
    outputs = read_outputs(tmp_path / r.key)
    n_objects = 0
    for cam in CAMS:
        for kind in ("detections", "tracks"):
            for t, msgtype, raw in outputs[f"/detector/{cam}/{kind}"]:
                want = getattr(direct[(cam, t)], kind)
                xyxy, scores, cls, ids = _decode_2d(store.deserialize_cdr(raw, msgtype), names)
                np.testing.assert_array_equal(xyxy, want.xyxy)
                np.testing.assert_array_equal(scores, want.scores)
                np.testing.assert_array_equal(cls, want.class_ids)
                np.testing.assert_array_equal(ids, want.track_ids)
        for t, msgtype, raw in outputs[f"/fusion_{cam[4:]}/objects"]:
            want = direct[(cam, t)].objects
            d = store.deserialize_cdr(raw, msgtype).detections
            n_objects += len(d)
            centres = [(x.bbox.center.position.x, x.bbox.center.position.y,
                        x.bbox.center.position.z) for x in d]  # fmt: skip
            np.testing.assert_array_equal(np.array(centres).reshape(-1, 3), want.centers)
            sizes = [(x.bbox.size.x, x.bbox.size.y, x.bbox.size.z) for x in d]
            np.testing.assert_array_equal(np.array(sizes, np.float32).reshape(-1, 3), want.sizes)
            ids = [int(x.id) if x.id else -1 for x in d]
            np.testing.assert_array_equal(np.array(ids, np.int64), want.track_ids)
            yaws = [2 * np.arctan2(x.bbox.center.orientation.z, x.bbox.center.orientation.w)
                    for x in d]  # fmt: skip
            np.testing.assert_allclose(np.array(yaws), want.yaws, atol=1e-6)
    assert n_objects > 0  # the comparison covered 3D objects


def test_messages_serialise_like_the_nodes(scenario_bag):
    """The writer's rosbags messages are byte for byte what
    perception.ros.conversions publishes (skipped without ROS)."""
    pytest.importorskip("vision_msgs.msg", reason="ROS messages not importable")
    from perception.core.fusion.types import Objects3D
    from perception.core.types import Detections
    from perception.replay.writer import MessageFactory
    from perception.ros.conversions import detections_to_msg
    from perception.ros.conversions3d import objects_to_detection3d_array, objects_to_markers

    names = ["car", "pedestrian", "cyclist"]
    det = Detections.from_arrays(
        np.array([[10.5, 20.25, 110.0, 90.0], [0.0, 1.0, 5.5, 7.0]], np.float32),
        np.array([0.9, 0.4], np.float32),
        np.array([1, 7], np.int32),
        np.array([3, -1], np.int64),
        stamp_ns=1_500_000_123,
        frame_id="cam/optical",
    )
    obj = Objects3D.from_arrays(
        np.array([[5.0, 1.0, 0.5], [12.0, -3.0, 0.8]]),
        np.array([[4.0, 1.8, 1.5], [0.6, 0.6, 1.7]]),
        np.array([0.3, -1.2]),
        np.stack([np.eye(3) * 0.1, np.eye(3) * 0.2]),
        np.array([[1.0, 0.0, 0.0], [np.nan, np.nan, np.nan]]),
        np.array([0.8, 0.6]),
        np.array([0, 1]),
        np.array([4, -1]),
        stamp_ns=2_000_000_001,
        frame_id="base_link",
    )
    obb = np.array([[60, 55, 90, 50, 0.3], [3, 4, 5, 6, -1.2]], np.float32)
    rotated = Detections.from_arrays(  # an -obb model's rows: theta in the bbox
        det.xyxy, det.scores, det.class_ids, det.track_ids, stamp_ns=det.stamp_ns,
        frame_id=det.frame_id, obb=obb,
    )  # fmt: skip
    store = make_typestore()
    f = MessageFactory(store)
    pairs = [
        (f.detections(det, names), detections_to_msg(det, names), "Detection2DArray"),
        (f.detections(rotated, names), detections_to_msg(rotated, names), "Detection2DArray"),
        (f.detections(det, names, "id"), detections_to_msg(det, names, "id"), "Detection2DArray"),
        (f.objects(obj, names), objects_to_detection3d_array(obj, names), "Detection3DArray"),
    ]
    for mine, theirs, kind in pairs:
        assert wire(store, theirs, f"vision_msgs/msg/{kind}") == wire(store, mine)
    markers = objects_to_markers(obj, names)
    assert wire(store, markers, "visualization_msgs/msg/MarkerArray") == wire(
        store, f.markers(obj, names)
    )


def wire(store: Any, msg: Any, msgtype: str = "") -> Any:
    """What a subscriber gets from `msg` (rclpy's or rosbags'): serialised,
    read back with rosbags, as nested dicts (compared as values: rclpy leaves
    CDR padding bytes uninitialised)."""
    if msgtype:
        from rclpy.serialization import serialize_message

        raw = serialize_message(msg)
    else:
        msgtype = msg.__msgtype__
        raw = store.serialize_cdr(msg, msgtype)
    return plain(store.deserialize_cdr(raw, msgtype))


def plain(msg: Any) -> Any:
    """A rosbags message as nested dicts and lists (comparable with ==)."""
    import dataclasses

    if dataclasses.is_dataclass(msg):
        return {f.name: plain(getattr(msg, f.name)) for f in dataclasses.fields(msg)}
    if isinstance(msg, np.ndarray):
        return msg.tolist()
    if isinstance(msg, list):
        return [plain(v) for v in msg]
    return msg


# ---------------------------------------------------------------- faults
def _swap_frames(items: list, a: int, b: int) -> list:
    """Frame `a`'s messages are received after frame `b`'s (log times moved)."""
    stamps = sorted({t for _, t, _ in items})
    ta, tb = stamps[a], stamps[b]
    return sorted(([top, tb + 1 if t == ta else t, m] for top, t, m in items), key=lambda x: x[1])


def _late_copy(items: list, topic: str, frame: int) -> list:
    """A copy of one image delivered after everything else."""
    stamps = sorted({t for _, t, _ in items})
    msg = next(m for top, t, m in items if top == topic and t == stamps[frame])
    return [*items, [topic, stamps[-1] + 1, msg]]


def _corrupt(items: list, topic: str, frame: int) -> list:
    stamps = sorted({t for _, t, _ in items})
    for top, t, m in items:
        if top == topic and t == stamps[frame]:
            m.data = m.data[: len(m.data) // 2]
    return items


def test_faults_are_reported_while_the_rest_completes(scenario_bag, replayer, tmp_path):
    from perception.replay.job import run_local

    bag = scenario_bag[0]
    src = tmp_path / "inputs"
    src.mkdir()
    truncated = src / "truncated.mcap"
    data = bag_file(bag).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    (src / "empty.mcap").write_bytes(b"")
    rewrite(bag, src / "no_messages", edit=lambda items: [])
    left = f"{PREFIX}/rgb_left/image"
    rewrite(bag, src / "missing_topic", drop=(left,))
    rewrite(bag, src / "out_of_order",
            edit=lambda items: _late_copy(_swap_frames(items, 3, 4), left, 0))  # fmt: skip
    rewrite(bag, src / "corrupt_image",
            edit=lambda items: _corrupt(items, f"{PREFIX}/rgb_front/image", 5))  # fmt: skip
    (src / "not_a_video.mp4").write_bytes(b"\x00garbage" * 100)
    inputs = expand_inputs([str(bag), str(src)])
    assert len(inputs) == 8
    out = tmp_path / "out"
    results = {Path(r.input).name: r for r in run_local(inputs, use_out(replayer, out).config,
                                                         progress=False)}  # fmt: skip
    status = {k: (r.status, r.reason.split(":")[0]) for k, r in results.items()}
    assert status["drive_a"] == ("ok", "")
    assert status["truncated.mcap"] == ("failed", "truncated")
    assert status["empty.mcap"] == ("failed", "empty")
    assert status["no_messages"] == ("failed", "empty")
    assert status["missing_topic"] == ("failed", "missing_topics")
    assert left in results["missing_topic"].reason
    assert status["not_a_video.mp4"] == ("failed", "unreadable")
    # stamps out of order: put back in order within the window, a late copy dropped
    ooo = results["out_of_order"]
    assert ooo.status == "ok" and ooo.frames == N_FRAMES
    assert ooo.counters["rgb_left"]["input.late"] == 1
    assert ooo.counters["rgb_front"]["input.reordered"] >= 1
    assert "input.late 1" in ooo.reason
    good = read_outputs(out / results["drive_a"].key)
    assert read_outputs(out / ooo.key) == good
    # a corrupt image: that frame is rejected (counted), the others processed
    bad = results["corrupt_image"]
    assert bad.status == "ok" and bad.frames == N_FRAMES
    front = bad.counters["rgb_front"]
    assert (front["rejected"], front["error.truncated"]) == (1, 1)
    rows = (out / bad.key / "frames.jsonl").read_text().splitlines()
    assert len(rows) == 3 * N_FRAMES - 1
    assert "error.truncated 1" in bad.reason
    # the fleet summary lists every input with its reason; failed ones left no folder
    fleet = json.loads((out / "fleet.json").read_text())
    rows = {Path(r["input"]).name: r for r in fleet["inputs"]}
    assert rows["truncated.mcap"]["reason"] == results["truncated.mcap"].reason
    assert fleet["aggregate"]["failed"] == 5 and fleet["aggregate"]["ok"] == 3
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
        results[n].key for n in ("drive_a", "out_of_order", "corrupt_image")
    )


def test_resume_skips_finished_inputs_but_not_leftovers(scenario_bag, replayer, tmp_path,
                                                        monkeypatch):  # fmt: skip
    from perception.replay import job

    bag = scenario_bag[0]
    other = rewrite(bag, tmp_path / "drive_b", edit=lambda items: items[: len(items) // 2])
    out = tmp_path / "out"
    config = use_out(replayer, out, max_frames=4).config
    first = job.run_local([str(bag)], config, progress=False)
    assert [r.status for r in first] == ["ok"]
    # a worker killed while writing drive_b: only its .tmp folder exists
    dead = out / f"{input_key(str(other))}.tmp-deadbeef"
    dead.mkdir()
    (dead / "result.json").write_text("{}")
    built: list[int] = []
    real = job.Replayer
    monkeypatch.setattr(job, "Replayer", lambda c: built.append(1) or real(c))
    again = job.run_local([str(bag), str(other)], replace(config, resume=True), progress=False)
    assert [r.status for r in again] == ["skipped", "ok"]
    assert again[0].metrics == first[0].metrics and again[0].frames == 4
    assert not dead.exists() and built == [1]
    # everything finished: nothing to run, no engine loaded
    third = job.run_local([str(bag), str(other)], replace(config, resume=True), progress=False)
    assert [r.status for r in third] == ["skipped", "skipped"] and built == [1]
    fleet = json.loads((out / "fleet.json").read_text())
    assert fleet["aggregate"]["skipped"] == 2


# ---------------------------------------------------------------- inputs and CLI
def test_sqlite3_bag_and_bare_mcap_file_replay_alike(scenario_bag, replayer, tmp_path):
    bag = scenario_bag[0]
    sqlite = rewrite(bag, tmp_path / "drive_sqlite", storage=StoragePlugin.SQLITE3)
    assert list(sqlite.glob("*.db3"))
    outputs = []
    for item in (bag, sqlite, bag_file(bag)):
        r = use_out(replayer, tmp_path / "out", max_frames=3).run(str(item))
        assert (r.status, r.frames) == ("ok", 3), r.reason
        outputs.append(read_outputs(tmp_path / "out" / r.key))
    assert outputs[0] == outputs[1] == outputs[2]


def test_lidar_fusion_reads_the_cloud_topic(tmp_path):
    """A fusion node in lidar mode gets the bag's PointCloud2 (decoded without ROS)."""
    from perception.sim import Scenario, default_rig
    from perception.sim.bag import write_bag

    rig = default_rig(160, 96)
    write_bag(tmp_path / "lidar_bag", Scenario(4, duration_s=0.3, rate_hz=10.0, rig=rig))
    assert rig.lidar is not None
    t_base_from_lidar = np.eye(4)
    t_base_from_lidar[:3, 3] = rig.lidar.position
    t = np.linalg.inv(rig.camera("rgb_front").T_base_from_cam) @ t_base_from_lidar
    overrides = (
        f"detector.model.path={MODEL}",
        "fusion_front.mode=lidar",
        f"fusion_front.cloud_topic={PREFIX}/lidar",
        f"fusion_front.T_camera_from_cloud={json.dumps(t.ravel().tolist())}",
    )
    config = ReplayConfig(str(PIPELINE), str(tmp_path / "out"), overrides)
    with Replayer(config) as r:
        res = r.run(str(tmp_path / "lidar_bag"))
    assert res.status == "ok", res.reason
    front = res.counters["rgb_front"]
    assert front["fusion.processed"] == 3 and "input.cloud_missing" not in front
    assert len(read_outputs(tmp_path / "out" / res.key)["/fusion_front/objects"]) == 3


def test_video_input_is_the_first_camera(replayer, tmp_path):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (160, 96))
    rng = np.random.default_rng(0)
    for _ in range(4):
        writer.write(rng.integers(0, 255, (96, 160, 3), np.uint8))
    writer.release()
    r = use_out(replayer, tmp_path / "out").run(str(video))
    assert r.status == "ok", r.reason
    assert r.frames == 4 and list(r.counters) == ["rgb_front"]
    topics = read_outputs(tmp_path / "out" / r.key)
    stamps = [t for t, _, _ in topics["/detector/rgb_front/detections"]]
    assert stamps == [0, 200_000_000, 400_000_000, 600_000_000]
    assert r.metrics == {}


def test_expand_inputs_and_keys(tmp_path, scenario_bag):
    bag = scenario_bag[0]
    (tmp_path / "sub").mkdir()
    video = tmp_path / "sub" / "clip.mp4"
    video.write_bytes(b"")
    listing = tmp_path / "drives.txt"
    listing.write_text(f"# drives of Monday\n\n{bag}\nsub/clip.mp4\n  {bag}  \nmissing.mcap\n")
    got = expand_inputs([str(listing)])
    assert got == [str(bag), str(video), str(tmp_path / "missing.mcap")]
    assert expand_inputs([str(tmp_path / "sub")]) == [str(video)]
    assert input_key(str(bag)) == input_key(str(bag) + "/")
    assert input_key(str(bag)).startswith("drive_a-")
    assert input_key("/a/x.mcap") != input_key("/b/x.mcap")
    assert InputResult.from_dict({**InputResult("a", "k", "ok").to_dict(), "new": 1}).key == "k"


def test_cli_replays_and_reports_failures(scenario_bag, tmp_path, capsys):
    from perception.replay.cli import main

    out = tmp_path / "out"
    argv = ["replay", str(scenario_bag[0]), "--out", str(out), "--max-frames", "2",
            "--model", str(MODEL), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    fleet = json.loads((out / "fleet.json").read_text())
    assert [r["frames"] for r in fleet["inputs"]] == [2]
    assert main([*argv, str(tmp_path / "missing.mcap"), "--resume"]) == 1
    assert main(["replay", "x", "--out", str(out), "--set", "detector.nope=1"]) == 2
    assert main(["nope"]) == 2


def test_replay_imports_no_ros(scenario_bag, tmp_path):
    """Replay runs where ROS is not installed (a Ray worker, a laptop)."""
    import subprocess

    code = (
        "import sys; sys.modules['rclpy'] = None\n"
        "from perception.replay.cli import main\n"
        f"rc = main(['replay', {str(scenario_bag[0])!r}, '--out', {str(tmp_path)!r},"
        f" '--max-frames', '1', '--model', {str(MODEL)!r}, '--quiet'])\n"
        "ros = [m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in "
        "('rclpy', 'sensor_msgs', 'vision_msgs', 'std_msgs')]\n"
        "assert not ros, ros\n"
        "sys.exit(rc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]


def test_leftover_tmp_of_another_key_is_removed_by_run_local(tmp_path):
    from perception.replay.writer import remove_leftovers, staging_dir

    tmp = staging_dir(tmp_path, "k1")
    (tmp / "half.mcap").write_bytes(b"x")
    staging_dir(tmp_path, "k2")
    (tmp_path / "k3").mkdir()
    assert sorted(p.name[:2] for p in remove_leftovers(tmp_path)) == ["k1", "k2"]
    assert [p.name for p in tmp_path.iterdir()] == ["k3"]
    shutil.rmtree(tmp_path / "k3")
