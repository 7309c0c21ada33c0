"""The ROS-free pipeline gives exactly what the ROS nodes publish.

A generated scenario (3 cameras, registered depth) goes once through real
nodes (detector with tracking, one depth-fusion node per camera with 3D
tracking and prediction; frames paced so that none is skipped) and once
through `perception.pipeline.Pipeline` in a subprocess that never imports
rclpy. Detections, track ids and 3D objects (and the predictions, asked for
the same target times the fusion nodes used) must be identical; only values
that pass through a message field of another representation (yaw as a
quaternion) get a float tolerance.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not importable; run ./dev test")

from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import Detection2DArray, Detection3DArray

from perception.ros.conversions import msg_to_detections, stamp_to_ns
from perception.ros.conversions3d import detection3d_array_to_objects
from perception.ros.qos import OUTPUTS
from perception.ros.testing import spin_until

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "default_detector.onnx"
SEED, FRAMES, RATE_HZ = 5, 8, 10.0

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _scenario():
    from perception.sim.scenario import Scenario

    return Scenario(seed=SEED, duration_s=FRAMES / RATE_HZ, rate_hz=RATE_HZ)


def _fusion_params(mount, class_names: list[str]) -> dict:
    return {
        "mode": "depth",
        "target_frame": "base_link",
        "class_names": class_names,
        "tracking": True,
        "predicted_output": True,
        "prediction_max_horizon_s": 10.0,
        "T_target_from_camera": [float(v) for v in np.asarray(mount.T_base_from_cam).ravel()],
    }


# The ROS-free side: runs in a subprocess so that rclpy cannot be imported by accident.
_ROS_FREE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from perception.config import (
        DetectorParams, FusionParams, Tracker3DParams, TrackerParams,
    )
    from perception.core.camera import CameraModel
    from perception.pipeline import CameraFrame, DetectionStage, FusionStage, Pipeline
    from perception.pipeline import build_detector
    from perception.pipeline.config import fusion_settings

    spec = json.load(open(sys.argv[1]))
    data = np.load(sys.argv[2])
    det_params = DetectorParams.from_flat(spec["detector"])
    detector = build_detector(
        det_params.model, score_threshold=det_params.score_threshold,
        iou_threshold=det_params.iou_threshold, max_detections=det_params.max_detections,
    )
    cams = spec["cameras"]
    stage = DetectionStage(detector, cams, tracker=TrackerParams().to_config())
    fusion = {
        c: FusionStage(fusion_settings(FusionParams.from_flat(spec["fusion"][c]),
                                       Tracker3DParams()))
        for c in cams
    }
    pipe = Pipeline(stage, fusion)
    models = {c: CameraModel.from_camera_info_fields(**spec["info"][c]) for c in cams}
    out = {}
    for i, stamp in enumerate(spec["stamps"]):
        frames = [
            CameraFrame(
                camera=c, image=data[f"img_{i}_{c}"], stamp_ns=stamp, frame_id=spec["frame_ids"][c],
                camera_model=models[c], depth=data[f"depth_{i}_{c}"],
                predict_to_ns=spec["predict_to"].get(f"{i}_{c}"),
            )
            for c in cams
        ]
        for r in pipe.process(frames):
            key = f"{i}_{r.camera}"
            out[key + "_det_xyxy"] = r.detections.xyxy
            out[key + "_det_scores"] = r.detections.scores
            out[key + "_det_cls"] = r.detections.class_ids
            out[key + "_trk_xyxy"] = r.tracks.xyxy
            out[key + "_trk_ids"] = r.tracks.track_ids
            for name, obj in (("obj", r.objects), ("pred", r.predicted)):
                if obj is not None:
                    out[f"{key}_{name}_centers"] = obj.centers
                    out[f"{key}_{name}_sizes"] = obj.sizes
                    out[f"{key}_{name}_yaws"] = obj.yaws
                    out[f"{key}_{name}_ids"] = obj.track_ids
                    out[f"{key}_{name}_cls"] = obj.class_ids
    ros = sorted(m for m in sys.modules if m == "rclpy" or m.startswith("rclpy."))
    assert not ros, f"the ROS-free pipeline imported {ros}"
    np.savez(sys.argv[3], **out)
    """
)


def test_ros_free_pipeline_equals_the_ros_nodes(ros_context, executor, tmp_path):
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} missing")
    from perception.ros.detector_node import DetectorNode
    from perception.ros.fusion_node import FusionNode
    from perception.sim.layout import SimLayout, camera_info_fields

    scenario = _scenario()
    layout = SimLayout(role="ego")
    cams = [m.name for m in scenario.rig.cameras]
    frames = [scenario.frame(i) for i in range(FRAMES)]
    # stamps near the wall clock: the fusion nodes predict to their clock's now
    base_ns = time.time_ns() - 1_000_000_000
    stamps = [base_ns + f.stamp_ns for f in frames]
    det_flat = {"model.path": str(MODEL), "tracking": True, "max_age_ms": 0.0, "overlay": False}
    overrides = {**det_flat, "camera_names": cams}
    for c in cams:
        overrides[f"cameras.{c}.topic"] = f"/eq/{c}/image"
        overrides[f"cameras.{c}.qos.reliability"] = "reliable"
        overrides[f"cameras.{c}.qos.depth"] = 10
    detector = DetectorNode(
        "eq_detector",
        context=ros_context,
        parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
    )
    executor.add_node(detector)
    names = list(detector.pipeline.stage.detector.class_names)
    fusion_flat, fusion_nodes = {}, {}
    for m in scenario.rig.cameras:
        c = m.name
        fusion_flat[c] = _fusion_params(m, names)
        ros_params = {
            **fusion_flat[c],
            "detections_topic": f"/eq_detector/{c}/tracks",
            "camera_info_topic": f"/eq/{c}/camera_info",
            "depth_topic": f"/eq/{c}/depth",
            "qos_reliability": "reliable",
        }
        fusion_nodes[c] = FusionNode(
            f"eq_fusion_{c}",
            context=ros_context,
            parameter_overrides=[Parameter(k, value=v) for k, v in ros_params.items()],
        )
        executor.add_node(fusion_nodes[c])

    from rclpy.node import Node

    probe = Node("eq_probe", context=ros_context)
    executor.add_node(probe)
    pubs = {
        (c, kind): probe.create_publisher(t, f"/eq/{c}/{kind}", OUTPUTS)
        for c in cams
        for kind, t in (("image", Image), ("depth", Image), ("camera_info", CameraInfo))
    }
    got: dict[str, dict] = {"det": {}, "trk": {}, "obj": {}, "pred": {}}
    predicted: dict[str, list] = {c: [] for c in cams}  # stamped with the target time

    def keep(kind: str, cam: str, msg) -> None:
        if kind == "pred":
            predicted[cam].append(msg)
        else:
            got[kind][(cam, stamp_to_ns(msg.header.stamp))] = msg

    for c in cams:
        for kind, topic, t in (
            ("det", f"/eq_detector/{c}/detections", Detection2DArray),
            ("trk", f"/eq_detector/{c}/tracks", Detection2DArray),
            ("obj", f"/eq_fusion_{c}/objects", Detection3DArray),
            ("pred", f"/eq_fusion_{c}/objects_predicted", Detection3DArray),
        ):
            probe.create_subscription(t, topic, lambda m, k=kind, c=c: keep(k, c, m), OUTPUTS)
    assert spin_until(
        executor,
        lambda: (
            all(p.get_subscription_count() for p in pubs.values())
            and all(probe.count_publishers(f"/eq_fusion_{c}/objects") for c in cams)
        ),
        20.0,
    )
    msgs = {}
    for i, f in enumerate(frames):
        for topic, msg in _messages(f, stamps[i], scenario, layout):
            msgs[(i, topic)] = msg
    # calibration first, until every fusion node has it
    for c in cams:
        pubs[(c, "camera_info")].publish(msgs[(0, f"{c}/camera_info")])
    assert spin_until(
        executor, lambda: all(n.stage.camera is not None for n in fusion_nodes.values()), 20.0
    )
    for i, stamp in enumerate(stamps):
        for c in cams:
            pubs[(c, "depth")].publish(msgs[(i, f"{c}/depth")])
        for c in cams:
            pubs[(c, "image")].publish(msgs[(i, f"{c}/image")])
        assert spin_until(
            executor,
            lambda s=stamp, i=i: all((c, s) in got["obj"] and len(predicted[c]) > i for c in cams),
            30.0,
        ), f"frame {i}: outputs missing"
    for c in cams:
        for i, s in enumerate(stamps):
            got["pred"][(c, s)] = predicted[c][i]
    counters = detector.pipeline.stage.counters()
    assert all(counters[c]["processed"] == FRAMES and counters[c]["skipped"] == 0 for c in cams)

    # the same frames through the ROS-free pipeline, in a process without rclpy
    arrays = {}
    for i, f in enumerate(frames):
        for c in cams:
            arrays[f"img_{i}_{c}"] = f.cameras[c].image_bgr
            arrays[f"depth_{i}_{c}"] = np.ascontiguousarray(f.cameras[c].depth, np.float32)
    np.savez(tmp_path / "frames.npz", **arrays)
    info = {
        c: {**camera_info_fields(m.model), "frame_id": layout.camera_frame(c)}
        for c, m in zip(cams, scenario.rig.cameras, strict=True)
    }
    spec = {
        "detector": det_flat,
        "cameras": cams,
        "fusion": fusion_flat,
        "info": info,
        "stamps": stamps,
        "frame_ids": {c: layout.camera_frame(c) for c in cams},
        "predict_to": {
            f"{i}_{c}": stamp_to_ns(got["pred"][(c, s)].header.stamp)
            for i, s in enumerate(stamps)
            for c in cams
        },
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    script = tmp_path / "ros_free.py"
    script.write_text(_ROS_FREE)
    res = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "spec.json"), str(tmp_path / "frames.npz"),
         str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    ref = np.load(tmp_path / "out.npz")

    n_tracks = n_objects = 0
    for i, s in enumerate(stamps):
        for c in cams:
            key = f"{i}_{c}"
            det = msg_to_detections(got["det"][(c, s)], names)
            np.testing.assert_array_equal(det.xyxy, ref[key + "_det_xyxy"])
            np.testing.assert_array_equal(det.scores, ref[key + "_det_scores"])
            np.testing.assert_array_equal(det.class_ids, ref[key + "_det_cls"])
            trk = msg_to_detections(got["trk"][(c, s)], names)
            np.testing.assert_array_equal(trk.xyxy, ref[key + "_trk_xyxy"])
            np.testing.assert_array_equal(trk.track_ids, ref[key + "_trk_ids"])
            n_tracks += int((trk.track_ids >= 0).sum())
            for name in ("obj", "pred"):
                obj = detection3d_array_to_objects(got[name][(c, s)], names)
                np.testing.assert_array_equal(obj.track_ids, ref[f"{key}_{name}_ids"])
                np.testing.assert_array_equal(obj.class_ids, ref[f"{key}_{name}_cls"])
                np.testing.assert_array_equal(obj.centers, ref[f"{key}_{name}_centers"])
                np.testing.assert_array_equal(obj.sizes, ref[f"{key}_{name}_sizes"])
                np.testing.assert_allclose(obj.yaws, ref[f"{key}_{name}_yaws"], atol=1e-6)
            n_objects += len(ref[f"{key}_obj_ids"])
    assert n_tracks > 20 and n_objects > 20, (n_tracks, n_objects)  # not a vacuous comparison
    print(f"equal: {FRAMES} frames x {len(cams)} cameras, {n_tracks} tracks, {n_objects} objects")
    for n in [detector, probe, *fusion_nodes.values()]:
        executor.remove_node(n)
        n.destroy_node()


def _messages(frame, stamp_ns, scenario, layout):
    """(short topic, message): image, depth and CameraInfo of every camera."""
    from perception.sim.ros_publisher import frame_messages

    out = []
    for topic, msg in frame_messages(
        frame, stamp_ns, scenario, layout, depth=True, ground_truth=False
    ):
        for m in scenario.rig.cameras:
            c = m.name
            if topic == layout.image_topic(c):
                out.append((f"{c}/image", msg))
            elif topic == layout.camera_info_topic(c):
                out.append((f"{c}/camera_info", msg))
            elif topic == layout.depth_topic(c):
                out.append((f"{c}/depth", msg))
    return out
