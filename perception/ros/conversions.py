"""Conversions between ROS messages and the core numpy types.

This is the one place where ROS message types meet numpy: nodes convert at the
boundary and hand `perception.core` objects around. Boxes are in
original-image pixels (axis-aligned, or rotated by `BoundingBox2D.center.theta`
for oriented-box models); `Detection2D.id` carries the track id ("" = untracked);
the class is written as a string, either the class name or the numeric id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
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

from perception.core.message_fields import (
    MAX_COORD,
    MessageFieldError,
    centre_size,
    class_id_value,
    count_rejected,
    obb_fields,
    stamp_ns_of,
    stamp_parts,
    track_id_value,
)
from perception.core.message_fields import class_strings as _class_strings
from perception.core.types import UNTRACKED, Detections
from perception.pipeline.types import LATENCY_FIELDS

ClassFormat = Literal["name", "id"]

__all__ = [
    "ClassFormat",
    "MessageFieldError",
    "detections_to_msg",
    "header_from",
    "label_info_msg",
    "latency_to_msg",
    "msg_to_detections",
    "msg_to_detections_rows",
    "ns_to_stamp",
    "stamp_to_ns",
]

_NS = 1_000_000_000


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (no float rounding).

    Raises MessageFieldError (kind "stamp") for nanosec >= 1e9 or a sec
    outside int32: such a stamp cannot be republished without wrapping."""
    return stamp_ns_of(stamp.sec, stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (nanosec always in [0, 1e9)).

    Raises MessageFieldError (kind "stamp") when the seconds do not fit the
    message's int32 instead of letting them wrap on the wire."""
    sec, nsec = stamp_parts(ns)
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
    `class_names` falls back to its number so nothing is lost. Oriented boxes
    (`det.obb`) go into the bbox as centre, size and `center.theta`.
    """
    hdr = header if header is not None else header_from(det)
    n = len(det)
    out = Detection2DArray(header=hdr)
    if n == 0:
        return out
    cx, cy, w, h = centre_size(det)
    theta = [0.0] * n
    if det.obb is not None:
        cx, cy, w, h, theta = obb_fields(det.obb, cx, cy, w, h)
    scores = det.scores.astype(np.float64).tolist()
    classes = _class_strings(det.class_ids, class_names, class_format)
    tids = det.track_ids.tolist()
    dets = []
    for i in range(n):
        d = Detection2D(header=hdr, id="" if tids[i] == UNTRACKED else str(tids[i]))
        bbox: BoundingBox2D = d.bbox
        bbox.center.position.x = cx[i]
        bbox.center.position.y = cy[i]
        bbox.center.theta = theta[i]
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
    """The highest-scoring hypothesis of a detection, or None when it has none
    (a NaN score never wins over a number)."""
    if not results:
        return None
    return max(results, key=lambda r: _score_key(r.hypothesis.score))


def _score_key(score: float) -> float:
    return score if score == score else -math.inf  # NaN sorts last


def class_id_of(class_id: str, lookup: Mapping[str, int]) -> int:
    """Class string -> id: a known name, else an integer string, else -1.
    Raises MessageFieldError ("class_id") for a number outside [-1, int32 max]."""
    return class_id_value(class_id, lookup)


def track_id_of(text: str) -> int:
    """`Detection2D/3D.id` -> track id; "" or non-numeric is untracked (-1).
    Raises MessageFieldError ("id") for a number outside [-1, int64 max]."""
    return track_id_value(text)


def msg_to_detections(
    msg: Detection2DArray,
    class_names: Sequence[str] | Mapping[str, int] | None = None,
    image_size: tuple[int, int] = (0, 0),
    rejected: MutableMapping[str, int] | None = None,
) -> Detections:
    """vision_msgs/Detection2DArray -> core detections.

    Takes the best-scoring hypothesis of each detection. A class string is
    looked up in `class_names` first, then parsed as an integer; anything else
    becomes class -1. A rotated box (theta != 0) becomes its axis-aligned
    bounding box in `xyxy`; when any row is rotated, `obb` holds every row's
    centre, size and theta (an oriented-box model's output). A non-numeric
    `id` becomes untracked (-1).

    Never raises on a detection's fields: a row with an id outside int64, a
    class id outside [-1, int32 max], a non-finite score, a non-finite or
    negative size or a coordinate beyond `MAX_COORD` is dropped and counted
    in `rejected[kind]` (kinds as `MessageFieldError.kind`). Only a header
    stamp out of range raises MessageFieldError ("stamp"): the whole message
    has no usable time.
    """
    return msg_to_detections_rows(msg, class_names, image_size, rejected)[0]


def msg_to_detections_rows(
    msg: Detection2DArray,
    class_names: Sequence[str] | Mapping[str, int] | None = None,
    image_size: tuple[int, int] = (0, 0),
    rejected: MutableMapping[str, int] | None = None,
) -> tuple[Detections, np.ndarray]:
    """`msg_to_detections`, and for each row kept its index in
    `msg.detections` ((N,) int64): what the same-stamp instance-id image and
    keypoints cloud are indexed by (see perception.ros.masks)."""
    stamp_ns = stamp_to_ns(msg.header.stamp)
    lookup = _class_lookup(class_names)
    rows: list[tuple[float, float, float, float, float, float]] = []
    classes: list[int] = []
    tracks: list[int] = []
    src: list[int] = []
    for j, d in enumerate(msg.detections):
        try:
            best = best_hypothesis(d.results)
            cls = -1 if best is None else class_id_value(best.hypothesis.class_id, lookup)
            tid = track_id_value(d.id)
        except MessageFieldError as exc:
            count_rejected(rejected, exc.kind)
            continue
        b = d.bbox
        score = 0.0 if best is None else float(best.hypothesis.score)
        rows.append((b.center.position.x, b.center.position.y, b.size_x, b.size_y,
                     b.center.theta, score))  # fmt: skip
        classes.append(cls)
        tracks.append(tid)
        src.append(j)
    n = len(rows)
    raw = np.asarray(rows, np.float64).reshape(n, 6)
    cx, cy, w, h, theta, score = raw.T
    keep = np.ones(n, bool)
    with np.errstate(invalid="ignore"):
        for kind, bad in (
            ("score", ~np.isfinite(score)),
            ("size", ~((w >= 0) & (w <= MAX_COORD) & (h >= 0) & (h <= MAX_COORD))),
            ("box", ~((np.abs(cx) <= MAX_COORD) & (np.abs(cy) <= MAX_COORD) & np.isfinite(theta))),
        ):
            bad &= keep
            if bad.any():
                count_rejected(rejected, kind, int(bad.sum()))
            keep &= ~bad
    rotated = keep & (theta != 0)
    obb = None
    if rotated.any():
        obb = np.stack([cx, cy, w, h, theta], axis=1)[keep].astype(np.float32)
        c, s = np.abs(np.cos(theta[rotated])), np.abs(np.sin(theta[rotated]))
        wr, hr = w[rotated], h[rotated]
        w[rotated], h[rotated] = wr * c + hr * s, wr * s + hr * c
    with np.errstate(invalid="ignore", over="ignore"):  # dropped rows may be inf
        xyxy = np.stack([cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5], axis=1)
    det = Detections(
        xyxy=xyxy[keep].astype(np.float32),
        scores=score[keep].astype(np.float32),
        class_ids=np.asarray(classes, np.int64).reshape(n)[keep].astype(np.int32),
        track_ids=np.asarray(tracks, np.int64).reshape(n)[keep],
        stamp_ns=stamp_ns,
        frame_id=msg.header.frame_id,
        image_size=image_size,
        obb=obb,
    )
    return det, np.asarray(src, np.int64).reshape(n)[keep]


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
