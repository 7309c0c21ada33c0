"""Autoware adapter: 3D tracks as autoware_perception_msgs DetectedObjects /
TrackedObjects, without depending on that package.

The mapping is pure Python + numpy and returns plain dicts that mirror the
message fields one to one (`to_tracked_objects`, `to_detected_objects`), so
it is tested without Autoware installed. `build_tracked_objects_msg` /
`build_detected_objects_msg` turn those dicts into real messages and are the
only code that imports `autoware_perception_msgs`; when it is not importable
they raise `AutowareUnavailableError` with the reason, and a node that was
asked for Autoware output should call `require_autoware()` at start-up so the
option is refused before anything runs.

Conventions (Autoware's):
- positions and covariances are in the header's frame (e.g. map or base_link);
- `twist_with_covariance` is in the OBJECT's frame (x forward along yaw), so
  a world-frame velocity is rotated by -yaw;
- covariances are 6x6 row-major over (x, y, z, roll, pitch, yaw) / (vx, vy,
  vz, wx, wy, wz), flattened to 36 floats;
- `object_id` is a 16-byte UUID; here uuid5 of (namespace, frame, track id), so
  the same track keeps the same UUID across restarts of the publisher and two
  cameras (frames) never collide.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.core.errors import PerceptionError

__all__ = [
    "CLASS_TO_LABEL",
    "LABEL",
    "ORIENTATION",
    "SHAPE_BOUNDING_BOX",
    "AutowareUnavailableError",
    "Tracks3D",
    "build_detected_objects_msg",
    "build_tracked_objects_msg",
    "label_for",
    "require_autoware",
    "to_detected_objects",
    "to_tracked_objects",
    "track_uuid",
]

LABEL: dict[str, int] = {
    "UNKNOWN": 0,
    "CAR": 1,
    "TRUCK": 2,
    "BUS": 3,
    "TRAILER": 4,
    "MOTORCYCLE": 5,
    "BICYCLE": 6,
    "PEDESTRIAN": 7,
}
"""autoware_perception_msgs/ObjectClassification label constants."""

CLASS_TO_LABEL: dict[str, int] = {
    "car": LABEL["CAR"],
    "truck": LABEL["TRUCK"],
    "bus": LABEL["BUS"],
    "trailer": LABEL["TRAILER"],
    "motorcycle": LABEL["MOTORCYCLE"],
    "motorbike": LABEL["MOTORCYCLE"],
    "bicycle": LABEL["BICYCLE"],
    "person": LABEL["PEDESTRIAN"],
    "pedestrian": LABEL["PEDESTRIAN"],
}
"""Detector class names (COCO and common synonyms) -> Autoware labels; any
other name is UNKNOWN."""

SHAPE_BOUNDING_BOX = 0
"""autoware_perception_msgs/Shape.BOUNDING_BOX."""

ORIENTATION: dict[str, int] = {"UNAVAILABLE": 0, "SIGN_UNKNOWN": 1, "AVAILABLE": 2}
"""*ObjectKinematics.orientation_availability constants."""

_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "perception/track")


class AutowareUnavailableError(PerceptionError, ImportError):
    """Autoware output was requested but autoware_perception_msgs is not importable."""


def require_autoware() -> Any:
    """The autoware_perception_msgs.msg module, or a typed refusal with the reason."""
    try:
        import autoware_perception_msgs.msg as aw
    except ImportError as exc:
        raise AutowareUnavailableError(
            "Autoware output requested, but autoware_perception_msgs is not importable "
            f"({exc}); install/source it (e.g. ros-<distro>-autoware-perception-msgs) "
            "or turn the Autoware output off"
        ) from exc
    return aw


def label_for(class_name: str, mapping: Mapping[str, int] | None = None) -> int:
    """Autoware label of a detector class name (case-insensitive); UNKNOWN if unmapped."""
    table = CLASS_TO_LABEL if mapping is None else mapping
    return int(table.get(str(class_name).strip().lower(), LABEL["UNKNOWN"]))


def track_uuid(track_id: int, frame_id: str = "") -> bytes:
    """16 bytes, deterministic in (frame_id, track_id)."""
    return uuid.uuid5(_UUID_NAMESPACE, f"{frame_id}/{int(track_id)}").bytes


@dataclass(frozen=True)
class Tracks3D:
    """Plain 3D track data (what a 3D tracker knows), one row per object.

    Attributes:
        positions: (N, 3) box centres, metres, in `frame_id`.
        sizes: (N, 3) length (along yaw), width, height, metres.
        yaws: (N,) heading about z, radians.
        class_names: N detector class names.
        track_ids: (N,) int ids (ignored for detected objects).
        velocities: (N, 3) world-frame velocity m/s, or None when unknown.
        position_covs: (N, 3, 3) position covariance, or None.
        velocity_covs: (N, 3, 3) world-frame velocity covariance, or None.
        yaw_vars: (N,) yaw variance rad^2, or None.
        scores: (N,) existence / class probability in [0, 1], or None (= 1).
        frame_id: frame of positions and covariances.
        stamp_ns: time of the state.
        orientation: one of ORIENTATION's keys.
    """

    positions: np.ndarray
    sizes: np.ndarray
    yaws: np.ndarray
    class_names: Sequence[str]
    track_ids: np.ndarray
    velocities: np.ndarray | None = None
    position_covs: np.ndarray | None = None
    velocity_covs: np.ndarray | None = None
    yaw_vars: np.ndarray | None = None
    scores: np.ndarray | None = None
    frame_id: str = ""
    stamp_ns: int = 0
    orientation: str = "SIGN_UNKNOWN"

    @classmethod
    def from_arrays(cls, **kw: Any) -> Tracks3D:
        """Build with dtype conversion and shape checks naming expected vs actual."""

        def arr(name: str, shape: tuple[int, ...]) -> np.ndarray | None:
            v = kw.get(name)
            if v is None:
                return None
            a = np.asarray(v, np.float64)
            if a.shape[1:] != shape[1:] or a.ndim != len(shape):
                want = ("N", *shape[1:])
                raise ValueError(f"Tracks3D.{name}: expected shape {want}, got {a.shape}")
            return a

        pos = arr("positions", (0, 3))
        if pos is None:
            raise ValueError("Tracks3D.positions: expected an (N, 3) array, got None")
        n = pos.shape[0]
        out = {
            "positions": pos,
            "sizes": arr("sizes", (0, 3)),
            "yaws": arr("yaws", (0,)),
            "velocities": arr("velocities", (0, 3)),
            "position_covs": arr("position_covs", (0, 3, 3)),
            "velocity_covs": arr("velocity_covs", (0, 3, 3)),
            "yaw_vars": arr("yaw_vars", (0,)),
            "scores": arr("scores", (0,)),
        }
        if out["sizes"] is None:
            raise ValueError("Tracks3D.sizes: expected an (N, 3) array, got None")
        if out["yaws"] is None:
            out["yaws"] = np.zeros(n)
        for name, a in out.items():
            if a is not None and a.shape[0] != n:
                raise ValueError(
                    f"Tracks3D.{name}: expected {n} rows (as positions), got {a.shape[0]}"
                )
        names = [str(c) for c in kw.get("class_names", ["unknown"] * n)]
        if len(names) != n:
            raise ValueError(f"Tracks3D.class_names: expected {n} names, got {len(names)}")
        tids = np.asarray(kw.get("track_ids", np.arange(n)), np.int64).reshape(-1)
        if tids.shape[0] != n:
            raise ValueError(f"Tracks3D.track_ids: expected {n} ids, got {tids.shape[0]}")
        orientation = kw.get("orientation", "SIGN_UNKNOWN")
        if orientation not in ORIENTATION:
            raise ValueError(
                f"Tracks3D.orientation: expected one of {list(ORIENTATION)}, got {orientation!r}"
            )
        arrays: dict[str, Any] = out  # None entries are allowed by the fields that take them
        return cls(
            class_names=names,
            track_ids=tids,
            frame_id=str(kw.get("frame_id", "")),
            stamp_ns=int(kw.get("stamp_ns", 0)),
            orientation=orientation,
            **arrays,
        )

    def __len__(self) -> int:
        return int(self.positions.shape[0])


def _quat_from_yaw(yaw: float) -> dict[str, float]:
    return {"x": 0.0, "y": 0.0, "z": math.sin(yaw / 2.0), "w": math.cos(yaw / 2.0)}


def _cov6(top: np.ndarray | None, yaw_var: float | None = None) -> list[float]:
    """36 floats: `top` (3x3) in the linear block, yaw variance at [5, 5]."""
    c = np.zeros((6, 6))
    if top is not None:
        c[:3, :3] = top
    if yaw_var is not None:
        c[5, 5] = yaw_var
    return [float(v) for v in c.reshape(-1)]


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _common(t: Tracks3D, i: int, mapping: Mapping[str, int] | None) -> dict[str, Any]:
    """Fields DetectedObject and TrackedObject share (classification, pose, twist, shape)."""
    yaw = float(t.yaws[i])
    score = 1.0 if t.scores is None else float(np.clip(t.scores[i], 0.0, 1.0))
    pos_cov = None if t.position_covs is None else t.position_covs[i]
    yaw_var = None if t.yaw_vars is None else float(t.yaw_vars[i])
    pose = {
        "pose": {
            "position": dict(zip("xyz", (float(v) for v in t.positions[i]), strict=True)),
            "orientation": _quat_from_yaw(yaw),
        },
        "covariance": _cov6(pos_cov, yaw_var),
    }
    if t.velocities is not None:
        r = _rot_z(yaw).T  # world -> object frame
        v_obj = r @ t.velocities[i]
        v_cov = None if t.velocity_covs is None else r @ t.velocity_covs[i] @ r.T
        linear = dict(zip("xyz", (float(v) for v in v_obj), strict=True))
    else:
        v_cov = None
        linear = {"x": 0.0, "y": 0.0, "z": 0.0}
    twist = {
        "twist": {"linear": linear, "angular": {"x": 0.0, "y": 0.0, "z": 0.0}},
        "covariance": _cov6(v_cov),
    }
    length, width, height = (float(v) for v in t.sizes[i])
    return {
        "existence_probability": score,
        "classification": [{"label": label_for(t.class_names[i], mapping), "probability": score}],
        "pose_with_covariance": pose,
        "twist_with_covariance": twist,
        "shape": {
            "type": SHAPE_BOUNDING_BOX,
            "footprint": {"points": []},
            "dimensions": {"x": length, "y": width, "z": height},
        },
    }


def to_detected_objects(
    tracks: Tracks3D, mapping: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Plain dict mirroring autoware_perception_msgs/DetectedObjects."""
    objects = []
    for i in range(len(tracks)):
        c = _common(tracks, i, mapping)
        objects.append(
            {
                "existence_probability": c["existence_probability"],
                "classification": c["classification"],
                "kinematics": {
                    "pose_with_covariance": c["pose_with_covariance"],
                    "has_position_covariance": tracks.position_covs is not None,
                    "orientation_availability": ORIENTATION[tracks.orientation],
                    "twist_with_covariance": c["twist_with_covariance"],
                    "has_twist": tracks.velocities is not None,
                    "has_twist_covariance": tracks.velocity_covs is not None,
                },
                "shape": c["shape"],
            }
        )
    return {
        "header": {"stamp_ns": tracks.stamp_ns, "frame_id": tracks.frame_id},
        "objects": objects,
    }


def to_tracked_objects(
    tracks: Tracks3D,
    mapping: Mapping[str, int] | None = None,
    stationary_speed: float = 0.1,
) -> dict[str, Any]:
    """Plain dict mirroring autoware_perception_msgs/TrackedObjects; a track is
    `is_stationary` when its speed is below `stationary_speed` m/s."""
    objects = []
    for i in range(len(tracks)):
        c = _common(tracks, i, mapping)
        speed = 0.0 if tracks.velocities is None else float(np.linalg.norm(tracks.velocities[i]))
        objects.append(
            {
                "object_id": track_uuid(int(tracks.track_ids[i]), tracks.frame_id),
                "existence_probability": c["existence_probability"],
                "classification": c["classification"],
                "kinematics": {
                    "pose_with_covariance": c["pose_with_covariance"],
                    "twist_with_covariance": c["twist_with_covariance"],
                    "acceleration_with_covariance": {
                        "accel": {
                            "linear": {"x": 0.0, "y": 0.0, "z": 0.0},
                            "angular": {"x": 0.0, "y": 0.0, "z": 0.0},
                        },
                        "covariance": [0.0] * 36,
                    },
                    "orientation_availability": ORIENTATION[tracks.orientation],
                    "is_stationary": tracks.velocities is not None and speed < stationary_speed,
                },
                "shape": c["shape"],
            }
        )
    return {
        "header": {"stamp_ns": tracks.stamp_ns, "frame_id": tracks.frame_id},
        "objects": objects,
    }


# ------------------------------------------------------------ real messages
def _fill(msg: Any, data: Mapping[str, Any]) -> None:
    """Set message fields from a nested dict (sub-messages filled in place)."""
    for key, value in data.items():
        if isinstance(value, Mapping):
            _fill(getattr(msg, key), value)
        else:
            setattr(msg, key, value)


def _header(data: Mapping[str, Any]) -> Any:
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    sec, nsec = divmod(int(data["stamp_ns"]), 1_000_000_000)
    return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=data["frame_id"])


def _object_msg(aw: Any, cls_name: str, kin_name: str, obj: Mapping[str, Any]) -> Any:
    msg = getattr(aw, cls_name)()
    msg.existence_probability = obj["existence_probability"]
    msg.classification = [
        aw.ObjectClassification(label=c["label"], probability=c["probability"])
        for c in obj["classification"]
    ]
    kin = getattr(aw, kin_name)()
    _fill(kin, obj["kinematics"])
    msg.kinematics = kin
    _fill(msg.shape, {k: v for k, v in obj["shape"].items() if k != "footprint"})
    if "object_id" in obj:
        msg.object_id.uuid = list(obj["object_id"])
    return msg


def build_detected_objects_msg(tracks: Tracks3D, mapping: Mapping[str, int] | None = None) -> Any:
    """autoware_perception_msgs/DetectedObjects (raises AutowareUnavailableError)."""
    aw = require_autoware()
    data = to_detected_objects(tracks, mapping)
    out = aw.DetectedObjects(header=_header(data["header"]))
    out.objects = [
        _object_msg(aw, "DetectedObject", "DetectedObjectKinematics", o) for o in data["objects"]
    ]
    return out


def build_tracked_objects_msg(tracks: Tracks3D, mapping: Mapping[str, int] | None = None) -> Any:
    """autoware_perception_msgs/TrackedObjects (raises AutowareUnavailableError)."""
    aw = require_autoware()
    data = to_tracked_objects(tracks, mapping)
    out = aw.TrackedObjects(header=_header(data["header"]))
    out.objects = [
        _object_msg(aw, "TrackedObject", "TrackedObjectKinematics", o) for o in data["objects"]
    ]
    return out
