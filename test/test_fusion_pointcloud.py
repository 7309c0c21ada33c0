"""PointCloud2 buffers to xyz: layouts, zero copy, NaN/inf, missing fields."""

from __future__ import annotations

import numpy as np
import pytest

from perception.core.fusion.errors import FusionInputError, PointCloudFormatError
from perception.core.fusion.pointcloud import cloud_xyz, make_cloud_buffer


def _pts(n: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-50, 50, (n, 3)).astype(np.float32)


def test_standard_layout_is_zero_copy() -> None:
    pts = _pts()
    intensity = [("intensity", 12, 7, 1)]
    data, fields, step, row_step, h, w = make_cloud_buffer(pts, extra_fields=intensity)
    buf = bytearray(data)
    cloud = cloud_xyz(buf, fields, step, row_step, h, w)
    assert cloud.zero_copy and cloud.n_total == 1000 and cloud.n_nonfinite == 0
    assert np.array_equal(cloud.xyz, pts)
    assert cloud.xyz.dtype == np.float32 and cloud.xyz.shape == (1000, 3)
    buf[0:4] = np.float32(123.0).tobytes()  # a view: the buffer shows through
    assert cloud.xyz[0, 0] == np.float32(123.0)


@pytest.mark.parametrize(
    "layout",
    [
        {"point_step": 32, "offsets": (16, 20, 24)},  # Ouster-like: other fields first
        {"point_step": 13, "offsets": (1, 5, 9)},  # packed, unaligned
        {"point_step": 28, "offsets": (0, 8, 16), "datatype": 8},  # float64
        {"point_step": 16, "offsets": (8, 0, 4)},  # permuted x/y/z
        {"point_step": 16, "offsets": (0, 4, 8), "is_bigendian": True},
        {"point_step": 16, "offsets": (0, 4, 8), "row_padding": 8, "height": 10},
        {"point_step": 8, "offsets": (0, 2, 4), "datatype": 3},  # int16 (scaled sensors)
    ],
)
def test_any_field_layout(layout: dict) -> None:
    pts = _pts()
    if layout.get("datatype") == 3:
        pts = np.round(pts)
    data, fields, step, row_step, h, w = make_cloud_buffer(pts, **layout)
    cloud = cloud_xyz(data, fields, step, row_step, h, w, layout.get("is_bigendian", False))
    assert np.allclose(cloud.xyz, pts, atol=1e-5) and cloud.xyz.dtype == np.float32
    assert cloud.n_total == 1000


def test_nan_inf_points_dropped_and_counted() -> None:
    pts = _pts()
    pts[10, 0] = np.nan
    pts[20, 1] = np.inf
    pts[30, 2] = -np.inf
    pts[40] = np.nan  # organised-cloud padding
    data, fields, step, row_step, h, w = make_cloud_buffer(pts, height=10)
    cloud = cloud_xyz(data, fields, step, row_step, h, w)
    assert cloud.n_nonfinite == 4 and cloud.xyz.shape == (996, 3)
    assert np.isfinite(cloud.xyz).all() and not cloud.zero_copy
    keep = cloud_xyz(data, fields, step, row_step, h, w, drop_nonfinite=False)
    assert keep.xyz.shape == (1000, 3) and keep.n_nonfinite == 0


def test_empty_cloud() -> None:
    data, fields, step, _, _, _ = make_cloud_buffer(np.zeros((0, 3), np.float32))
    cloud = cloud_xyz(data, fields, step, 0, 1, 0)
    assert cloud.xyz.shape == (0, 3) and cloud.n_total == 0
    cloud = cloud_xyz(b"", fields, 16, 0, 0, 0)
    assert cloud.xyz.shape == (0, 3)


def test_missing_fields_and_bad_layouts_are_typed_errors() -> None:
    pts = _pts(10)
    data, fields, step, row_step, h, w = make_cloud_buffer(pts)
    no_z = [f for f in fields if f[0] != "z"]
    with pytest.raises(PointCloudFormatError, match=r"missing \['z'\]"):
        cloud_xyz(data, no_z, step, row_step, h, w)
    with pytest.raises(PointCloudFormatError, match=r"missing \['x', 'y', 'z'\]"):
        cloud_xyz(data, [("rgb", 0, 7, 1)], step, row_step, h, w)
    with pytest.raises(PointCloudFormatError, match="offset within point_step"):
        cloud_xyz(data, [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 14, 7, 1)], step, row_step, h, w)
    with pytest.raises(PointCloudFormatError, match=r"datatype 1\.\.8"):
        cloud_xyz(data, [("x", 0, 9, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], step, row_step, h, w)
    with pytest.raises(PointCloudFormatError, match="at least"):
        cloud_xyz(data[:-1], fields, step, row_step, h, w)
    with pytest.raises(PointCloudFormatError, match="row_step"):
        cloud_xyz(data, fields, step, step, h, w)
    with pytest.raises(PointCloudFormatError, match="tuples"):
        cloud_xyz(data, ["x", "y", "z"], step, row_step, h, w)
    assert issubclass(PointCloudFormatError, FusionInputError)
