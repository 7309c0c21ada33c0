"""Autoware adapter: pure mapping of 3D tracks to DetectedObjects/TrackedObjects
fields (no autoware_perception_msgs needed), refusal when the package is
absent, and the message builder against a duck-typed stand-in module."""

from __future__ import annotations

import math
import sys
import types
import uuid

import numpy as np
import pytest

from perception.ros.autoware import (
    LABEL,
    ORIENTATION,
    SHAPE_BOUNDING_BOX,
    AutowareUnavailableError,
    Tracks3D,
    build_detected_objects_msg,
    build_tracked_objects_msg,
    label_for,
    require_autoware,
    to_detected_objects,
    to_tracked_objects,
    track_uuid,
)

NS = 1_000_000_000


def _tracks(**over) -> Tracks3D:
    kw = {
        "positions": [[10.0, 2.0, 0.5], [-3.0, 4.0, 0.9]],
        "sizes": [[4.5, 1.8, 1.5], [0.6, 0.6, 1.7]],
        "yaws": [math.pi / 2, 0.0],
        "class_names": ["car", "person"],
        "track_ids": [7, 12],
        "velocities": [[0.0, 2.0, 0.0], [0.01, 0.0, 0.0]],
        "position_covs": [np.diag([1.0, 2.0, 3.0]), np.eye(3) * 0.1],
        "velocity_covs": [np.diag([1.0, 4.0, 0.0]), np.eye(3)],
        "yaw_vars": [0.05, 0.2],
        "scores": [0.8, 1.3],
        "frame_id": "map",
        "stamp_ns": 12 * NS + 5,
        **over,
    }
    return Tracks3D.from_arrays(**kw)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("car", LABEL["CAR"]),
        ("Truck", LABEL["TRUCK"]),
        ("bus", LABEL["BUS"]),
        ("person", LABEL["PEDESTRIAN"]),
        ("bicycle", LABEL["BICYCLE"]),
        ("motorcycle", LABEL["MOTORCYCLE"]),
        (" motorbike ", LABEL["MOTORCYCLE"]),
        ("dog", LABEL["UNKNOWN"]),
        ("", LABEL["UNKNOWN"]),
    ],
)
def test_labels_follow_autoware_constants(name, label):
    assert label_for(name) == label


def test_label_constants_are_autowares():
    assert LABEL == {
        "UNKNOWN": 0,
        "CAR": 1,
        "TRUCK": 2,
        "BUS": 3,
        "TRAILER": 4,
        "MOTORCYCLE": 5,
        "BICYCLE": 6,
        "PEDESTRIAN": 7,
    }
    assert label_for("dog", {"dog": 42}) == 42


def test_uuids_are_deterministic_16_bytes_and_distinct():
    a = track_uuid(7, "map")
    assert a == track_uuid(7, "map") and len(a) == 16
    assert uuid.UUID(bytes=a).version == 5
    assert len({a, track_uuid(8, "map"), track_uuid(7, "cam1")}) == 3


def test_tracked_objects_mapping():
    out = to_tracked_objects(_tracks())
    assert out["header"] == {"stamp_ns": 12 * NS + 5, "frame_id": "map"}
    car, person = out["objects"]
    assert car["object_id"] == track_uuid(7, "map")
    assert car["classification"] == [{"label": LABEL["CAR"], "probability": 0.8}]
    assert person["existence_probability"] == 1.0  # clipped to [0, 1]
    kin = car["kinematics"]
    pose = kin["pose_with_covariance"]["pose"]
    assert pose["position"] == {"x": 10.0, "y": 2.0, "z": 0.5}
    q = pose["orientation"]
    assert (q["z"], q["w"]) == pytest.approx((math.sin(math.pi / 4), math.cos(math.pi / 4)))
    cov = np.array(kin["pose_with_covariance"]["covariance"]).reshape(6, 6)
    np.testing.assert_allclose(np.diag(cov), [1.0, 2.0, 3.0, 0.0, 0.0, 0.05])
    # Twist is in the object frame: heading +y at 2 m/s is 2 m/s forward.
    lin = kin["twist_with_covariance"]["twist"]["linear"]
    assert (lin["x"], lin["y"], lin["z"]) == pytest.approx((2.0, 0.0, 0.0), abs=1e-12)
    tcov = np.array(kin["twist_with_covariance"]["covariance"]).reshape(6, 6)
    np.testing.assert_allclose(np.diag(tcov)[:3], [4.0, 1.0, 0.0], atol=1e-12)
    assert kin["orientation_availability"] == ORIENTATION["SIGN_UNKNOWN"]
    assert kin["is_stationary"] is False
    assert person["kinematics"]["is_stationary"] is True  # 1 cm/s
    assert len(kin["acceleration_with_covariance"]["covariance"]) == 36
    assert car["shape"] == {
        "type": SHAPE_BOUNDING_BOX,
        "footprint": {"points": []},
        "dimensions": {"x": 4.5, "y": 1.8, "z": 1.5},
    }


def test_detected_objects_mapping_flags_what_is_unknown():
    out = to_detected_objects(
        _tracks(velocities=None, velocity_covs=None, position_covs=None, orientation="AVAILABLE")
    )
    kin = out["objects"][0]["kinematics"]
    assert "object_id" not in out["objects"][0]
    assert kin["has_position_covariance"] is False
    assert kin["has_twist"] is False and kin["has_twist_covariance"] is False
    assert kin["orientation_availability"] == ORIENTATION["AVAILABLE"]
    cov = np.array(kin["pose_with_covariance"]["covariance"]).reshape(6, 6)
    assert cov[:3, :3].sum() == 0.0 and cov[5, 5] == pytest.approx(0.05)
    with_vel = to_detected_objects(_tracks())["objects"][0]["kinematics"]
    assert with_vel["has_twist"] and with_vel["has_twist_covariance"]
    assert to_detected_objects(_tracks(positions=np.zeros((0, 3)), sizes=np.zeros((0, 3)),
                                       yaws=[], class_names=[], track_ids=[], velocities=None,
                                       position_covs=None, velocity_covs=None, yaw_vars=None,
                                       scores=None))["objects"] == []  # fmt: skip


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"positions": [[1.0, 2.0]] * 2}, r"positions: expected shape \('N', 3\), got \(2, 2\)"),
        ({"sizes": [[1.0, 1.0, 1.0]]}, "sizes: expected 2 rows"),
        ({"class_names": ["car"]}, "class_names: expected 2 names, got 1"),
        ({"track_ids": [1]}, "track_ids: expected 2 ids, got 1"),
        ({"orientation": "MAYBE"}, "orientation: expected one of"),
        ({"position_covs": np.zeros((2, 3))}, r"position_covs: expected shape \('N', 3, 3\)"),
    ],
)
def test_tracks3d_rejects_bad_shapes(over, match):
    with pytest.raises(ValueError, match=match):
        _tracks(**over)


def test_refused_with_a_clear_message_when_autoware_is_not_importable(monkeypatch):
    monkeypatch.setitem(sys.modules, "autoware_perception_msgs", None)
    monkeypatch.setitem(sys.modules, "autoware_perception_msgs.msg", None)
    with pytest.raises(
        AutowareUnavailableError, match="autoware_perception_msgs is not importable"
    ):
        require_autoware()
    with pytest.raises(AutowareUnavailableError, match="turn the Autoware output off"):
        build_tracked_objects_msg(_tracks())
    with pytest.raises(ImportError):  # also an ImportError for callers that catch that
        build_detected_objects_msg(_tracks())


def _standin_module() -> types.ModuleType:
    """Duck-typed stand-in of autoware_perception_msgs.msg with the real
    geometry_msgs / unique_identifier_msgs sub-messages."""
    pytest.importorskip("geometry_msgs.msg", reason="needs the ROS message packages")
    pytest.importorskip("unique_identifier_msgs.msg", reason="needs the ROS message packages")
    from geometry_msgs.msg import (
        AccelWithCovariance,
        Polygon,
        PoseWithCovariance,
        TwistWithCovariance,
        Vector3,
    )
    from unique_identifier_msgs.msg import UUID

    def message(name: str, **fields):
        def init(self, **kw):
            for k, factory in fields.items():
                setattr(self, k, kw.get(k, factory()))

        return type(name, (), {"__init__": init})

    m = types.ModuleType("autoware_perception_msgs.msg")
    m.ObjectClassification = message("ObjectClassification", label=int, probability=float)
    m.Shape = message("Shape", type=int, footprint=Polygon, dimensions=Vector3)
    m.DetectedObjectKinematics = message(
        "DetectedObjectKinematics",
        pose_with_covariance=PoseWithCovariance,
        has_position_covariance=bool,
        orientation_availability=int,
        twist_with_covariance=TwistWithCovariance,
        has_twist=bool,
        has_twist_covariance=bool,
    )
    m.TrackedObjectKinematics = message(
        "TrackedObjectKinematics",
        pose_with_covariance=PoseWithCovariance,
        twist_with_covariance=TwistWithCovariance,
        acceleration_with_covariance=AccelWithCovariance,
        orientation_availability=int,
        is_stationary=bool,
    )
    m.DetectedObject = message(
        "DetectedObject",
        existence_probability=float,
        classification=list,
        kinematics=m.DetectedObjectKinematics,
        shape=m.Shape,
    )
    m.TrackedObject = message(
        "TrackedObject",
        object_id=UUID,
        existence_probability=float,
        classification=list,
        kinematics=m.TrackedObjectKinematics,
        shape=m.Shape,
    )
    m.DetectedObjects = message("DetectedObjects", header=lambda: None, objects=list)
    m.TrackedObjects = message("TrackedObjects", header=lambda: None, objects=list)
    return m


def test_builders_fill_real_sub_messages(monkeypatch):
    msg_mod = _standin_module()
    pkg = types.ModuleType("autoware_perception_msgs")
    pkg.msg = msg_mod
    monkeypatch.setitem(sys.modules, "autoware_perception_msgs", pkg)
    monkeypatch.setitem(sys.modules, "autoware_perception_msgs.msg", msg_mod)

    tracked = build_tracked_objects_msg(_tracks())
    assert tracked.header.frame_id == "map"
    assert (tracked.header.stamp.sec, tracked.header.stamp.nanosec) == (12, 5)
    car = tracked.objects[0]
    assert bytes(car.object_id.uuid) == track_uuid(7, "map")
    assert car.classification[0].label == LABEL["CAR"]
    kin = car.kinematics
    assert kin.pose_with_covariance.pose.position.x == 10.0
    assert kin.pose_with_covariance.covariance[35] == pytest.approx(0.05)
    assert kin.twist_with_covariance.twist.linear.x == pytest.approx(2.0)
    assert car.shape.dimensions.x == 4.5 and car.shape.type == SHAPE_BOUNDING_BOX

    detected = build_detected_objects_msg(_tracks())
    dkin = detected.objects[1].kinematics
    assert dkin.has_twist and dkin.pose_with_covariance.pose.position.y == 4.0
    assert detected.objects[1].classification[0].label == LABEL["PEDESTRIAN"]
