"""3D message conversions: CameraInfo, PointCloud2, Detection3DArray, MarkerArray.

The ROS side of 3D fusion: messages become core objects once
(`CameraModel`, `CloudXYZ`; the field mapping is ROS-free in
`perception.core.message_fields`, shared with replay), and `Objects3D` become standard outputs:
vision_msgs/Detection3DArray (pose with covariance, size, class, score, track
id in `id`) and visualization_msgs/MarkerArray (box, id label, velocity arrow)
for RViz and Foxglove.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from vision_msgs.msg import (
    Detection3D,
    Detection3DArray,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
)
from visualization_msgs.msg import Marker, MarkerArray

from perception.core.drawing import color_for
from perception.core.fusion.types import Objects3D, yaw_quaternions
from perception.core.message_fields import (
    MAX_COORD,
    MessageFieldError,
    camera_model_from_info,
    cloud_from_msg,
    count_rejected,
)
from perception.ros.conversions import (
    ClassFormat,
    _class_lookup,
    _class_strings,
    best_hypothesis,
    class_id_of,
    ns_to_stamp,
    stamp_to_ns,
    track_id_of,
)

__all__ = [
    "camera_model_from_info",
    "cloud_from_msg",
    "detection3d_array_to_objects",
    "objects_to_detection3d_array",
    "objects_to_markers",
]


def _header(obj: Objects3D) -> Header:
    return Header(stamp=ns_to_stamp(obj.stamp_ns), frame_id=obj.frame_id)


def objects_to_detection3d_array(
    obj: Objects3D,
    class_names: Sequence[str] | None = None,
    class_format: ClassFormat = "name",
) -> Detection3DArray:
    """Objects3D -> vision_msgs/Detection3DArray in `obj.frame_id`.

    The centre covariance fills the position block of the 6x6 pose
    covariance (the orientation block stays 0: not estimated); the track id
    goes to `id` ("" when untracked).
    """
    hdr = _header(obj)
    out = Detection3DArray(header=hdr)
    n = len(obj.centers)
    if n == 0:
        return out
    quats = yaw_quaternions(obj.yaws)
    classes = _class_strings(obj.class_ids, class_names, class_format)
    cov6 = np.zeros((n, 6, 6), np.float64)
    cov6[:, :3, :3] = obj.covariances
    dets = []
    for i in range(n):
        d = Detection3D(header=hdr, id="" if obj.track_ids[i] < 0 else str(int(obj.track_ids[i])))
        c = obj.centers[i]
        d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.position.z = (
            float(c[0]), float(c[1]), float(c[2]),
        )  # fmt: skip
        q = quats[i]
        o = d.bbox.center.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in q)
        s = obj.sizes[i]
        d.bbox.size.x, d.bbox.size.y, d.bbox.size.z = float(s[0]), float(s[1]), float(s[2])
        hyp = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=classes[i], score=float(obj.scores[i]))
        )
        hyp.pose.pose = d.bbox.center
        hyp.pose.covariance = cov6[i].reshape(-1).tolist()
        d.results = [hyp]
        dets.append(d)
    out.detections = dets
    return out


def detection3d_array_to_objects(
    msg: Detection3DArray,
    class_names: Sequence[str] | Mapping[str, int] | None = None,
    rejected: MutableMapping[str, int] | None = None,
) -> Objects3D:
    """vision_msgs/Detection3DArray -> Objects3D in the array's frame (the
    inverse of `objects_to_detection3d_array`).

    Takes the best-scoring hypothesis of each detection: its class string is
    looked up in `class_names`, then parsed as an integer, else -1; its pose
    covariance position block becomes the centre covariance (zeros when the
    covariance is not 36 numbers). The yaw is the rotation about +z of the box
    orientation (exact for the yaw-only boxes this package publishes). A
    non-numeric `id` is untracked; velocities are unknown (the message has
    none).

    Never raises on a detection's fields: a row with an id outside int64, a
    class id outside [-1, int32 max], a non-finite score, orientation or
    covariance, a centre beyond `MAX_COORD` or a size that is not in
    (0, MAX_COORD] is dropped and counted in `rejected[kind]`. Only a header
    stamp out of range raises MessageFieldError ("stamp").
    """
    stamp_ns = stamp_to_ns(msg.header.stamp)
    lookup = _class_lookup(class_names)
    rows: list[list[float]] = []
    covs: list[np.ndarray] = []
    class_ids: list[int] = []
    track_ids: list[int] = []
    zero = np.zeros((3, 3), np.float64)
    for d in msg.detections:
        try:
            best = best_hypothesis(d.results)
            cls = -1 if best is None else class_id_of(best.hypothesis.class_id, lookup)
            tid = track_id_of(d.id)
        except MessageFieldError as exc:
            count_rejected(rejected, exc.kind)
            continue
        c, o, s = d.bbox.center.position, d.bbox.center.orientation, d.bbox.size
        block = zero
        if best is not None and len(best.pose.covariance) == 36:
            block = np.asarray(best.pose.covariance, np.float64).reshape(6, 6)[:3, :3]
        score = 0.0 if best is None else float(best.hypothesis.score)
        rows.append([c.x, c.y, c.z, s.x, s.y, s.z, o.x, o.y, o.z, o.w, score])
        covs.append(block)
        class_ids.append(cls)
        track_ids.append(tid)
    n = len(rows)
    raw = np.asarray(rows, np.float64).reshape(n, 11)
    centers, sizes, quat, scores = raw[:, 0:3], raw[:, 3:6], raw[:, 6:10], raw[:, 10]
    cov = np.asarray(covs, np.float64).reshape(n, 3, 3)
    with np.errstate(invalid="ignore", over="ignore"):
        qx, qy, qz, qw = quat.T
        yaws = np.arctan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))
        cov_ok = (np.abs(cov) <= np.finfo(np.float32).max).all(axis=(1, 2))
    keep = np.ones(n, bool)
    for kind, bad in (
        ("score", ~np.isfinite(scores)),
        ("box", ~((np.abs(centers) <= MAX_COORD).all(axis=1) & np.isfinite(yaws))),
        ("size", ~((sizes > 0) & (sizes <= MAX_COORD)).all(axis=1)),
        ("covariance", ~cov_ok),
    ):
        bad &= keep
        if bad.any():
            count_rejected(rejected, kind, int(bad.sum()))
        keep &= ~bad
    return Objects3D.from_arrays(
        centers[keep],
        sizes[keep],
        yaws[keep],
        cov[keep],
        None,
        scores[keep],
        np.asarray(class_ids, np.int64).reshape(n)[keep],
        np.asarray(track_ids, np.int64).reshape(n)[keep],
        stamp_ns=stamp_ns,
        frame_id=msg.header.frame_id,
    )


def objects_to_markers(
    obj: Objects3D,
    class_names: Sequence[str] | None = None,
    namespace: str = "perception",
    lifetime_s: float = 0.5,
) -> MarkerArray:
    """Boxes, id/class labels and velocity arrows; starts with DELETEALL so
    objects that disappeared do not linger in RViz."""
    hdr = _header(obj)
    life = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1.0) * 1e9))
    markers = [Marker(header=hdr, ns=namespace, action=Marker.DELETEALL)]
    quats = yaw_quaternions(obj.yaws)
    names = class_names or ()
    for i in range(len(obj.centers)):
        tid, cls = int(obj.track_ids[i]), int(obj.class_ids[i])
        b, g, r = color_for(tid if tid >= 0 else cls)
        color = ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=0.5)
        c = obj.centers[i]
        box = Marker(header=hdr, ns=f"{namespace}/boxes", id=i, type=Marker.CUBE,
                     action=Marker.ADD, color=color, lifetime=life)  # fmt: skip
        box.pose.position.x, box.pose.position.y, box.pose.position.z = (float(v) for v in c)
        o = box.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in quats[i])
        box.scale.x, box.scale.y, box.scale.z = (float(v) for v in obj.sizes[i])
        markers.append(box)
        name = names[cls] if 0 <= cls < len(names) else str(cls)
        text = Marker(header=hdr, ns=f"{namespace}/labels", id=i, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, lifetime=life,
                      text=f"{name} #{tid}" if tid >= 0 else name)  # fmt: skip
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.pose.position.x, text.pose.position.y = float(c[0]), float(c[1])
        text.pose.position.z = float(c[2] + obj.sizes[i][2] * 0.5 + 0.3)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.4
        markers.append(text)
        v = obj.velocities[i]
        if np.isfinite(v).all():
            arrow = Marker(header=hdr, ns=f"{namespace}/velocity", id=i, type=Marker.ARROW,
                           action=Marker.ADD, lifetime=life)  # fmt: skip
            arrow.color = ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0)
            arrow.points = [
                Point(x=float(c[0]), y=float(c[1]), z=float(c[2])),
                Point(x=float(c[0] + v[0]), y=float(c[1] + v[1]), z=float(c[2] + v[2])),
            ]
            arrow.pose.orientation.w = 1.0
            arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.1, 0.2, 0.2
            markers.append(arrow)
    return MarkerArray(markers=markers)
