"""x, y, z of a PointCloud2 buffer as numpy, from plain field descriptions.

The ROS layer passes `msg.data` and the fields as tuples (name, offset,
datatype, count) with the PointField datatype codes; nothing here imports ROS.
Any field layout and point_step work. When x, y, z are consecutive float32 in
native byte order and rows have no padding, the (N, 3) array is a strided view
of the message buffer (no copy); otherwise it is one gather. Points with a
non-finite coordinate (the NaN padding of organised clouds) are dropped and
counted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.core.fusion.errors import PointCloudFormatError

__all__ = ["POINTFIELD_DTYPES", "CloudXYZ", "PointFieldSpec", "cloud_xyz", "make_cloud_buffer"]

POINTFIELD_DTYPES: dict[int, str] = {
    1: "i1",  # INT8
    2: "u1",  # UINT8
    3: "i2",  # INT16
    4: "u2",  # UINT16
    5: "i4",  # INT32
    6: "u4",  # UINT32
    7: "f4",  # FLOAT32
    8: "f8",  # FLOAT64
}
"""sensor_msgs/PointField datatype code -> numpy type code (no byte order)."""

PointFieldSpec = tuple[str, int, int, int]
"""(name, offset, datatype, count) of one PointField."""


@dataclass(frozen=True)
class CloudXYZ:
    """Finite points of one cloud and what was dropped.

    Attributes:
        xyz: (N, 3) float32 points (a view of the buffer when possible).
        n_total: points in the message (height * width).
        n_nonfinite: points dropped for a NaN/inf coordinate.
        zero_copy: True when `xyz` is a view of the input buffer.
    """

    xyz: np.ndarray
    n_total: int
    n_nonfinite: int
    zero_copy: bool


def _field_table(fields: Sequence[Any]) -> dict[str, tuple[int, int, int]]:
    table: dict[str, tuple[int, int, int]] = {}
    for f in fields:
        try:
            name, offset, datatype, count = f
        except (TypeError, ValueError) as exc:
            raise PointCloudFormatError(
                f"fields: expected (name, offset, datatype, count) tuples, got {f!r}"
            ) from exc
        table[str(name)] = (int(offset), int(datatype), int(count))
    return table


def cloud_xyz(
    data: Any,
    fields: Sequence[PointFieldSpec],
    point_step: int,
    row_step: int,
    height: int,
    width: int,
    is_bigendian: bool = False,
    *,
    drop_nonfinite: bool = True,
) -> CloudXYZ:
    """(N, 3) float32 x, y, z of a PointCloud2 given as plain values.

    `data` is any buffer (bytes, bytearray, memoryview, array.array, numpy
    uint8 array); missing x/y/z, a field outside point_step, an unknown
    datatype or a buffer shorter than height*row_step raise
    `PointCloudFormatError`.
    """
    table = _field_table(fields)
    missing = [c for c in ("x", "y", "z") if c not in table]
    if missing:
        raise PointCloudFormatError(
            f"point cloud: expected fields x, y, z, missing {missing}; got {sorted(table)}"
        )
    point_step, row_step, height, width = int(point_step), int(row_step), int(height), int(width)
    if point_step <= 0 or height < 0 or width < 0 or row_step < point_step * width:
        raise PointCloudFormatError(
            f"point cloud: expected point_step > 0 and row_step >= point_step*width, got "
            f"point_step={point_step} row_step={row_step} width={width} height={height}"
        )
    order = ">" if is_bigendian else "<"
    types = []
    for c in ("x", "y", "z"):
        offset, datatype, count = table[c]
        if datatype not in POINTFIELD_DTYPES:
            raise PointCloudFormatError(
                f"point cloud field {c!r}: expected datatype 1..8, got {datatype}"
            )
        if count < 1:
            raise PointCloudFormatError(
                f"point cloud field {c!r}: expected count >= 1, got {count}"
            )
        t = np.dtype(order + POINTFIELD_DTYPES[datatype])
        if offset < 0 or offset + t.itemsize > point_step:
            raise PointCloudFormatError(
                f"point cloud field {c!r}: expected offset within point_step {point_step}, "
                f"got offset {offset} (+{t.itemsize} bytes)"
            )
        types.append((offset, t))
    n_total = height * width
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except TypeError as exc:
        raise PointCloudFormatError(
            f"point cloud data: expected a bytes-like buffer, got {type(data).__name__}"
        ) from exc
    if buf.size < height * row_step:
        raise PointCloudFormatError(
            f"point cloud data: expected at least height*row_step = {height * row_step} bytes, "
            f"got {buf.size}"
        )
    if n_total == 0:
        return CloudXYZ(np.zeros((0, 3), np.float32), 0, 0, True)

    f32 = np.dtype(order + "f4")
    native = (sys.byteorder == "little") != bool(is_bigendian)
    consecutive = (
        all(t == f32 for _, t in types)
        and types[1][0] == types[0][0] + 4
        and types[2][0] == types[0][0] + 8
    )
    if consecutive and native and (row_step == point_step * width or height == 1):
        # strided (N, 3) float32 view of the buffer itself
        xyz = np.ndarray(
            shape=(n_total, 3),
            dtype=np.float32,
            buffer=buf,
            offset=types[0][0],
            strides=(point_step, 4),
        )
        zero_copy = True
    else:
        rows = buf[: height * row_step].reshape(height, row_step)[:, : width * point_step]
        pts = rows.reshape(n_total, point_step) if rows.flags.c_contiguous else None
        if pts is None:
            pts = np.ascontiguousarray(rows).reshape(n_total, point_step)
        xyz = np.empty((n_total, 3), np.float32)
        for i, (offset, t) in enumerate(types):
            col = pts[:, offset : offset + t.itemsize].copy().view(t).reshape(-1)
            xyz[:, i] = col
        zero_copy = False
    if not drop_nonfinite:
        return CloudXYZ(xyz, n_total, 0, zero_copy)
    finite = np.isfinite(xyz).all(axis=1)
    n_bad = n_total - int(np.count_nonzero(finite))
    if n_bad:
        xyz = xyz[finite]
        zero_copy = False
    return CloudXYZ(xyz, n_total, n_bad, zero_copy)


def make_cloud_buffer(
    xyz: np.ndarray,
    *,
    point_step: int = 16,
    offsets: tuple[int, int, int] = (0, 4, 8),
    datatype: int = 7,
    is_bigendian: bool = False,
    extra_fields: Sequence[PointFieldSpec] = (),
    row_padding: int = 0,
    height: int = 1,
) -> tuple[bytes, list[PointFieldSpec], int, int, int, int]:
    """Pack points into a PointCloud2-like buffer (tests, benches, synthetic
    publishers). Returns (data, fields, point_step, row_step, height, width)."""
    pts = np.asarray(xyz)
    n = pts.shape[0]
    if n % height:
        raise ValueError(f"make_cloud_buffer: {n} points do not split into {height} rows")
    width = n // height
    t = np.dtype((">" if is_bigendian else "<") + POINTFIELD_DTYPES[datatype])
    row_step = width * point_step + row_padding
    buf = np.zeros((height, row_step), np.uint8)
    body = buf[:, : width * point_step].reshape(n, point_step)
    for i, off in enumerate(offsets):
        body[:, off : off + t.itemsize] = (
            pts[:, i].astype(t).reshape(-1, 1).view(np.uint8).reshape(n, t.itemsize)
        )
    buf[:, : width * point_step] = body.reshape(height, width * point_step)
    fields = [(c, off, datatype, 1) for c, off in zip("xyz", offsets, strict=True)]
    fields.extend(extra_fields)
    return buf.tobytes(), fields, point_step, row_step, height, width
