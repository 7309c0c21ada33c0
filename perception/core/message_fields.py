"""Core types from and to the fields of ROS messages, without ROS.

The functions take any object with the message's fields: rclpy messages in
the nodes (`perception.ros.conversions*` re-export them) and rosbags
messages in replay, which reads and writes bags without ROS. So both build
the same values from the same data.

Every field that comes from the wire is range-checked here before it reaches
a numpy array or a core type: an id of thirty 9s, a class id past int32, a
NaN size or a stamp whose nanoseconds exceed a second would otherwise raise
an OverflowError deep in a callback or wrap silently when republished. A bad
value raises `MessageFieldError`, whose `kind` names the counter a node
increments; the array conversions catch it per row, drop the row and count it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from perception.core.camera import CameraModel
from perception.core.errors import PerceptionError
from perception.core.fusion.pointcloud import CloudXYZ, cloud_xyz
from perception.core.types import UNTRACKED, Detections

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "MAX_COORD",
    "MessageFieldError",
    "camera_model_from_info",
    "centre_size",
    "class_id_value",
    "class_strings",
    "cloud_from_msg",
    "count_rejected",
    "int_or_none",
    "obb_fields",
    "stamp_ns_of",
    "stamp_parts",
    "track_id_value",
]

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
NS_PER_S = 1_000_000_000

MAX_COORD = 1.0e7
"""Largest |coordinate| or size accepted from a box message (pixels in 2D,
metres in 3D): far beyond any camera or scene, and small enough that areas
and IoUs stay finite in float32."""

_MAX_DIGITS = 40
"""Longer decimal strings are out of every id range: decided without int()."""
_HUGE: int = int("1" + "0" * _MAX_DIGITS)


class MessageFieldError(PerceptionError, ValueError):
    """A message field outside what its type allows; `kind` is the counter it
    belongs to ("stamp", "id", "class_id", "box", "size", "score", "covariance")."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def count_rejected(rejected: MutableMapping[str, int] | None, kind: str, n: int = 1) -> None:
    """rejected[kind] += n when the caller asked for counts."""
    if rejected is not None:
        rejected[kind] = rejected.get(kind, 0) + n


def stamp_ns_of(sec: Any, nanosec: Any) -> int:
    """builtin_interfaces/Time fields -> integer nanoseconds, exact.

    Raises MessageFieldError("stamp") unless sec is in [0, int32 max] and
    nanosec in [0, 1e9) (the rule `perception.core.cdr` applies to camera
    headers): a nanosec of 4e9, which the uint32 on the wire allows, would
    move the time by seconds and overflow the seconds when republished."""
    s, n = int(sec), int(nanosec)
    if not 0 <= s <= INT32_MAX or not 0 <= n < NS_PER_S:
        raise MessageFieldError(
            "stamp",
            f"stamp sec={s} nanosec={n}: expected sec in [0, 2^31) and nanosec in [0, 1e9)",
        )
    return s * NS_PER_S + n


def stamp_parts(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) of builtin_interfaces/Time, exact.

    Raises MessageFieldError("stamp") for a time before 1970 or one whose
    seconds do not fit int32 (after 2038-01-19: it would wrap on the wire)."""
    sec, nsec = divmod(int(ns), NS_PER_S)
    if not 0 <= sec <= INT32_MAX:
        raise MessageFieldError(
            "stamp", f"stamp {int(ns)} ns: its seconds {sec} do not fit builtin_interfaces/Time"
        )
    return sec, nsec


def int_or_none(text: str) -> int | None:
    """A decimal integer string as int (any size, decided cheaply), else None."""
    s = text.strip()
    if len(s) > _MAX_DIGITS:
        body = s[1:] if s[:1] in "+-" else s
        if body.isascii() and body.isdigit():
            return -_HUGE if s[0] == "-" else _HUGE
        return None
    try:
        return int(s)
    except ValueError:
        return None


def class_id_value(text: str, lookup: Mapping[str, int]) -> int:
    """ObjectHypothesis.class_id -> class id: a known name, else an integer
    string, else -1 (a class this node has no name for).

    Raises MessageFieldError("class_id") for a number outside [-1, int32 max]."""
    value = lookup.get(text)
    if value is None:
        value = int_or_none(text)
        if value is None:
            return -1
    if not -1 <= value <= INT32_MAX:
        shown = text if len(text) <= 24 else text[:24] + "..."
        raise MessageFieldError("class_id", f"class_id {shown!r}: expected an int32 >= -1")
    return value


def track_id_value(text: str) -> int:
    """Detection2D/3D.id -> track id: "" , "-1" or non-numeric is untracked (-1).

    Raises MessageFieldError("id") for a number outside [-1, int64 max]."""
    if not text:
        return UNTRACKED
    value = int_or_none(text)
    if value is None:
        return UNTRACKED
    if not UNTRACKED <= value <= INT64_MAX:
        shown = text if len(text) <= 24 else text[:24] + "..."
        raise MessageFieldError("id", f"id {shown!r}: expected a track id in [-1, int64 max]")
    return value


def class_strings(
    class_ids: np.ndarray, class_names: Sequence[str] | None, class_format: str
) -> list[str]:
    """Class ids as ObjectHypothesis.class_id strings: the name ("name") or the
    number ("id"); an id outside `class_names` falls back to its number."""
    if class_format == "id" or not class_names:
        return [str(int(c)) for c in class_ids]
    if class_format != "name":
        raise ValueError(f"class_format: expected 'name' or 'id', got {class_format!r}")
    n = len(class_names)
    return [class_names[c] if 0 <= c < n else str(int(c)) for c in class_ids.tolist()]


def centre_size(det: Detections) -> tuple[list[float], list[float], list[float], list[float]]:
    """BoundingBox2D centre x, y and size x, y of every box (float64: exact for
    float32 corners, so the round trip is lossless)."""
    xyxy = det.xyxy.astype(np.float64)
    cx: list[float] = ((xyxy[:, 0] + xyxy[:, 2]) * 0.5).tolist()
    cy: list[float] = ((xyxy[:, 1] + xyxy[:, 3]) * 0.5).tolist()
    w: list[float] = (xyxy[:, 2] - xyxy[:, 0]).tolist()
    h: list[float] = (xyxy[:, 3] - xyxy[:, 1]).tolist()
    return cx, cy, w, h


def camera_model_from_info(msg: Any) -> CameraModel:
    """sensor_msgs/CameraInfo -> CameraModel (raises CalibrationError with a reason)."""
    return CameraModel.from_camera_info_fields(
        width=int(msg.width),
        height=int(msg.height),
        distortion_model=msg.distortion_model,
        d=np.asarray(msg.d, np.float64),
        k=np.asarray(msg.k, np.float64),
        r=np.asarray(msg.r, np.float64),
        p=np.asarray(msg.p, np.float64),
        frame_id=msg.header.frame_id,
    )


def cloud_from_msg(msg: Any) -> CloudXYZ:
    """sensor_msgs/PointCloud2 (any field layout) -> finite xyz points, zero-copy
    where the layout allows; raises PointCloudFormatError with a reason."""
    fields = [(f.name, int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields]
    return cloud_xyz(
        msg.data,
        fields,
        int(msg.point_step),
        int(msg.row_step),
        int(msg.height),
        int(msg.width),
        bool(msg.is_bigendian),
    )


def obb_fields(
    obb: np.ndarray, cx: list[float], cy: list[float], w: list[float], h: list[float]
) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    """BoundingBox2D fields from oriented boxes: centre, size and theta of
    each finite row (Ultralytics' xywhr: theta from image +x towards +y, i.e.
    about the optical frame's z axis, right-handed); rows with a non-finite
    oriented box keep their axis-aligned box at theta 0."""
    o = obb.astype(np.float64)
    ok = np.isfinite(o).all(axis=1)
    cols = [np.asarray(v, np.float64) for v in (cx, cy, w, h)]
    theta = np.zeros(len(o))
    for j in range(4):
        cols[j][ok] = o[ok, j]
    theta[ok] = o[ok, 4]
    out_cx, out_cy, out_w, out_h = (c.tolist() for c in cols)
    return out_cx, out_cy, out_w, out_h, theta.tolist()
