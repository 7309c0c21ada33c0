"""Instance masks and keypoints <-> standard ROS messages.

The detector publishes, next to each `vision_msgs/Detection2DArray`, the
segmentation and pose outputs of its rows in standard messages, each with
the array's header (the input image's stamp and frame_id) and indexed by the
array's detection order, so a consumer matches them by stamp and reads them
without a custom message package:

- masks: `sensor_msgs/Image`, mono16, the image's size: pixel value ``i + 1``
  is ``detections[i]`` of the same-stamp array, 0 no instance. Where masks
  overlap the earlier row (the higher score) wins. A row's track id, when
  tracked, is that Detection2D's `id`. Rows beyond 65535 (never, with the
  detector's `max_detections`) have no pixels.
- keypoints: `sensor_msgs/PointCloud2`, organised, height = rows of the
  array, width = keypoints per row (17 for COCO persons), float32 fields
  ``x``, ``y`` (original-image pixels) and ``confidence`` (0..1); a
  keypoint with no value (a lost track) has NaN x, y and confidence 0.
  PointCloud2 is the standard stamped, self-describing table of points:
  `sensor_msgs_py.point_cloud2.read_points` or one numpy view reads it.

The decoding side (`masks_from_id_image`) is numpy only; it rebuilds
`InstanceMasks` for the rows a consumer kept (its indices into the array).
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header

from perception.core.images import ImageDecodeError, image_to_array
from perception.core.types import Detections, InstanceMasks

__all__ = [
    "KEYPOINT_FIELDS",
    "MAX_MASK_ID",
    "cloud_to_keypoints",
    "id_image_from_msg",
    "keypoints_to_cloud",
    "masks_from_id_image",
    "masks_to_image_msg",
]

MAX_MASK_ID = 65535
"""Largest instance id a mono16 image holds (rows beyond have no pixels)."""

KEYPOINT_FIELDS = ("x", "y", "confidence")
"""Fields of the keypoints PointCloud2, float32 each, in this order."""


def masks_to_image_msg(det: Detections, header: Header) -> Image | None:
    """The mono16 instance-id image of `det`'s masks (value i + 1 = row i),
    or None when `det` has no masks."""
    masks = det.masks
    if masks is None:
        return None
    n = min(len(masks), MAX_MASK_ID)
    ids = masks[:n].to_id_image(np.arange(1, n + 1, dtype=np.int64), np.uint16)
    h, w = ids.shape
    msg = Image(header=header, height=h, width=w, encoding="mono16", is_bigendian=0, step=2 * w)
    msg.data = np.ascontiguousarray(ids, dtype="<u2").tobytes()
    return msg


def id_image_from_msg(msg: Image, max_pixels: int | None = None) -> np.ndarray:
    """(H, W) uint16 instance ids of a mono16 / 16UC1 message; raises
    `ImageDecodeError` (with a `kind`) for any other encoding or bad size."""
    if msg.encoding not in ("mono16", "16UC1"):
        raise ImageDecodeError(
            "encoding", f"instance-id image: expected mono16, got {msg.encoding!r}"
        )
    ids: np.ndarray = image_to_array(msg, max_pixels)
    return ids


def masks_from_id_image(ids: np.ndarray, rows: np.ndarray | None = None) -> InstanceMasks:
    """Masks of array rows `rows` (indices into the array the id image goes
    with; default all ids 1..max) from an (H, W) instance-id image: mask k is
    where the image holds ``rows[k] + 1``, stored inside its tight extent
    (a row without pixels gets an empty mask). One pass over the image's
    instance pixels, not one per row."""
    img = np.asarray(ids)
    if img.ndim != 2:
        raise ValueError(f"instance-id image: expected (H, W), got shape {img.shape}")
    h, w = img.shape
    ys, xs = np.nonzero(img)
    vals = img[ys, xs].astype(np.int64)
    if rows is None:
        rows = np.arange(int(vals.max()) if vals.size else 0)
    want = np.asarray(rows, np.int64).reshape(-1) + 1
    n = want.size
    boxes = np.zeros((n, 4), np.int32)
    crops: list[np.ndarray] = [np.zeros((0, 0), bool)] * n
    if vals.size and n:
        order = np.argsort(vals, kind="stable")
        vals, ys, xs = vals[order], ys[order], xs[order]
        starts = np.searchsorted(vals, want, side="left")
        ends = np.searchsorted(vals, want, side="right")
        for k in range(n):
            a, b = int(starts[k]), int(ends[k])
            if a == b:
                continue
            x0, x1 = int(xs[a:b].min()), int(xs[a:b].max()) + 1
            y0, y1 = int(ys[a:b].min()), int(ys[a:b].max()) + 1
            boxes[k] = (x0, y0, x1, y1)
            crops[k] = img[y0:y1, x0:x1] == want[k]
    return InstanceMasks(boxes, tuple(crops), (w, h))


def keypoints_to_cloud(det: Detections, header: Header) -> PointCloud2 | None:
    """`det.keypoints` as an organised PointCloud2 (row i = detection i), or
    None when `det` has none."""
    kps = det.keypoints
    if kps is None:
        return None
    n, k = int(kps.shape[0]), int(kps.shape[1])
    msg = PointCloud2(header=header, height=n, width=k, is_bigendian=False, is_dense=False)
    msg.fields = [
        PointField(name=name, offset=4 * j, datatype=PointField.FLOAT32, count=1)
        for j, name in enumerate(KEYPOINT_FIELDS)
    ]
    msg.point_step = 12
    msg.row_step = 12 * k
    msg.is_dense = bool(np.isfinite(kps).all())
    msg.data = np.ascontiguousarray(kps, dtype="<f4").tobytes()
    return msg


def cloud_to_keypoints(msg: PointCloud2) -> np.ndarray:
    """(N, K, 3) float32 x, y, confidence from a keypoints PointCloud2 (any
    field order or padding, as long as the three fields are float32);
    ValueError for anything else."""
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in KEYPOINT_FIELDS if n not in fields]
    if missing:
        raise ValueError(f"keypoints cloud: missing fields {missing}")
    if any(fields[n].datatype != PointField.FLOAT32 for n in KEYPOINT_FIELDS):
        raise ValueError("keypoints cloud: expected float32 x, y, confidence")
    n, k, step = int(msg.height), int(msg.width), int(msg.point_step)
    if step < 12 or int(msg.row_step) < step * k:
        raise ValueError(
            f"keypoints cloud: point_step {step} / row_step {msg.row_step} too small for {k}"
        )
    if any(fields[f].offset + 4 > step for f in KEYPOINT_FIELDS):
        raise ValueError("keypoints cloud: a field lies beyond point_step")
    need = int(msg.row_step) * n
    data = msg.data
    if len(data) < need:
        raise ValueError(f"keypoints cloud: {len(data)} bytes, {n}x{k} points need {need}")
    raw = np.frombuffer(data, np.uint8, count=need).reshape(n, int(msg.row_step))
    points = raw[:, : step * k].reshape(n, k, step)
    order = ">f4" if msg.is_bigendian else "<f4"
    out = np.empty((n, k, 3), np.float32)
    for j, name in enumerate(KEYPOINT_FIELDS):
        off = int(fields[name].offset)
        out[:, :, j] = np.ascontiguousarray(points[:, :, off : off + 4]).view(order)[:, :, 0]
    return out
