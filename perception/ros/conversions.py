"""Conversions between ROS messages and the core numpy types.

This is the one place where ROS message types meet numpy: nodes convert at the
boundary and hand `perception.core` objects around. Boxes are axis-aligned in
original-image pixels; `Detection2D.id` carries the track id ("" = untracked);
the class is written as a string, either the class name or the numeric id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from builtin_interfaces.msg import Time
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
    VisionClass,
)

from perception.core.message_fields import centre_size
from perception.core.message_fields import class_strings as _class_strings
from perception.core.types import UNTRACKED, Detections
from perception.pipeline.types import LATENCY_FIELDS

ClassFormat = Literal["name", "id"]

__all__ = [
    "ClassFormat",
    "detections_to_msg",
    "header_from",
    "label_info_msg",
    "latency_to_msg",
    "msg_to_detections",
    "ns_to_stamp",
    "stamp_to_ns",
]

_NS = 1_000_000_000


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (no float rounding)."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (nanosec always in [0, 1e9))."""
    sec, nsec = divmod(int(ns), _NS)
    return Time(sec=sec, nanosec=nsec)


def header_from(det: Detections) -> Header:
    """Header carrying the detections' capture stamp and frame_id."""
    return Header(stamp=ns_to_stamp(det.stamp_ns), frame_id=det.frame_id)


def detections_to_msg(
    det: Detections,
    class_names: Sequence[str] | None = None,
    class_format: ClassFormat = "name",
    header: Header | None = None,
) -> Detection2DArray:
    """Core detections -> vision_msgs/Detection2DArray.

    The header (stamp and frame_id) is the input image's unless `header` is
    given. Each Detection2D repeats it, carries one hypothesis (class string,
    score) and the track id in `id` ("" when untracked). An id outside
    `class_names` falls back to its number so nothing is lost.
    """
    hdr = header if header is not None else header_from(det)
    n = len(det)
    out = Detection2DArray(header=hdr)
    if n == 0:
        return out
    cx, cy, w, h = centre_size(det)
    scores = det.scores.astype(np.float64).tolist()
    classes = _class_strings(det.class_ids, class_names, class_format)
    tids = det.track_ids.tolist()
    dets = []
    for i in range(n):
        d = Detection2D(header=hdr, id="" if tids[i] == UNTRACKED else str(tids[i]))
        bbox: BoundingBox2D = d.bbox
        bbox.center.position.x = cx[i]
        bbox.center.position.y = cy[i]
        bbox.size_x = w[i]
        bbox.size_y = h[i]
        d.results = [
            ObjectHypothesisWithPose(
                hypothesis=ObjectHypothesis(class_id=classes[i], score=scores[i])
            )
        ]
        dets.append(d)
    out.detections = dets
    return out


def _class_lookup(class_names: Sequence[str] | Mapping[str, int] | None) -> dict[str, int]:
    if class_names is None:
        return {}
    if isinstance(class_names, Mapping):
        return {str(k): int(v) for k, v in class_names.items()}
    return {name: i for i, name in enumerate(class_names)}


def best_hypothesis(results: Sequence[ObjectHypothesisWithPose]) -> ObjectHypothesisWithPose | None:
    """The highest-scoring hypothesis of a detection, or None when it has none."""
    return max(results, key=lambda r: r.hypothesis.score) if results else None


def class_id_of(class_id: str, lookup: Mapping[str, int]) -> int:
    """Class string -> id: a known name, else an integer string, else -1."""
    if class_id in lookup:
        return lookup[class_id]
    try:
        return int(class_id)
    except ValueError:
        return -1


def track_id_of(text: str) -> int:
    """`Detection2D/3D.id` -> track id; "" or non-numeric is untracked (-1)."""
    try:
        return int(text) if text else UNTRACKED
    except ValueError:
        return UNTRACKED


def msg_to_detections(
    msg: Detection2DArray,
    class_names: Sequence[str] | Mapping[str, int] | None = None,
    image_size: tuple[int, int] = (0, 0),
) -> Detections:
    """vision_msgs/Detection2DArray -> core detections.

    Takes the best-scoring hypothesis of each detection. A class string is
    looked up in `class_names` first, then parsed as an integer; anything else
    becomes class -1. A rotated box (theta != 0) is replaced by its axis-aligned
    bounding box. A non-numeric `id` becomes untracked (-1).
    """
    lookup = _class_lookup(class_names)
    n = len(msg.detections)
    xyxy = np.empty((n, 4), np.float64)
    scores = np.zeros(n, np.float32)
    class_ids = np.full(n, -1, np.int32)
    track_ids = np.full(n, UNTRACKED, np.int64)
    for i, d in enumerate(msg.detections):
        b = d.bbox
        cx, cy, w, h = b.center.position.x, b.center.position.y, b.size_x, b.size_y
        theta = b.center.theta
        if theta:
            c, s = abs(np.cos(theta)), abs(np.sin(theta))
            w, h = w * c + h * s, w * s + h * c
        xyxy[i] = (cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5)
        best = best_hypothesis(d.results)
        if best is not None:
            scores[i] = best.hypothesis.score
            class_ids[i] = class_id_of(best.hypothesis.class_id, lookup)
        track_ids[i] = track_id_of(d.id)
    return Detections(
        xyxy=xyxy.astype(np.float32),
        scores=scores,
        class_ids=class_ids,
        track_ids=track_ids,
        stamp_ns=stamp_to_ns(msg.header.stamp),
        frame_id=msg.header.frame_id,
        image_size=image_size,
    )


def label_info_msg(
    class_names: Sequence[str], threshold: float = 0.0, header: Header | None = None
) -> LabelInfo:
    """vision_msgs/LabelInfo with the class map (publish on a transient-local topic)."""
    if len(class_names) > 65536:
        raise ValueError(f"LabelInfo: class ids are uint16, got {len(class_names)} classes")
    return LabelInfo(
        header=header if header is not None else Header(),
        class_map=[VisionClass(class_id=i, class_name=n) for i, n in enumerate(class_names)],
        threshold=float(threshold),
    )


def latency_to_msg(stamp_ns: int, row: Mapping[str, float]) -> Float64MultiArray:
    """One latency row as Float64MultiArray: the stamp in seconds, then the
    stages in `LATENCY_FIELDS` order (also the layout's label)."""
    msg = Float64MultiArray()
    msg.layout.dim = [
        MultiArrayDimension(label=",".join(LATENCY_FIELDS), size=len(LATENCY_FIELDS), stride=1)
    ]
    msg.data = [stamp_ns * 1e-9, *(float(row[k]) for k in LATENCY_FIELDS[1:])]
    return msg
