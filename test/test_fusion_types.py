"""Objects3D: validation, indexing, frame transforms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception.core.fusion.errors import FusionInputError
from perception.core.fusion.synthetic import OPTICAL_FROM_FLU, rigid
from perception.core.fusion.types import Objects3D


def _objs(n: int = 3) -> Objects3D:
    return Objects3D.from_arrays(
        np.arange(n * 3, dtype=float).reshape(n, 3) + 1.0,
        np.tile([4.0, 2.0, 1.5], (n, 1)),
        np.linspace(-1, 1, n),
        covariances=np.tile(np.diag([0.1, 0.2, 0.3]), (n, 1, 1)),
        scores=np.full(n, 0.8),
        class_ids=np.arange(n),
        track_ids=np.arange(n) + 10,
        stamp_ns=5,
        frame_id="base_link",
    )


def test_from_arrays_defaults_and_indexing() -> None:
    o = Objects3D.from_arrays([[1, 2, 3]], [[1, 1, 1]])
    assert o.yaws.tolist() == [0.0] and not o.has_velocity.any() and o.track_ids[0] == -1
    objs = _objs()
    sub = objs[np.array([True, False, True])]
    assert len(sub) == 2 and sub.track_ids.tolist() == [10, 12] and sub.frame_id == "base_link"
    assert len(objs[1]) == 1 and len(objs[-1]) == 1
    both = Objects3D.concatenate([objs, sub])
    assert len(both) == 5
    with pytest.raises(ValueError, match="stamp_ns, frame_id"):
        Objects3D.concatenate([objs, Objects3D.empty(stamp_ns=6, frame_id="base_link")])
    q = objs.quaternions()
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0)
    assert np.isclose(2 * math.atan2(q[0, 2], q[0, 3]), objs.yaws[0])


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"centers": np.zeros((2, 3), np.float32)}, TypeError, "dtype float64"),
        ({"sizes": np.ones((2, 2), np.float32)}, ValueError, "shape"),
        ({"centers": np.full((1, 3), np.nan)}, FusionInputError, "finite"),
        ({"sizes": np.zeros((1, 3), np.float32)}, FusionInputError, "> 0"),
        ({"velocities": np.array([[1.0, np.nan, 0.0]], np.float32)}, FusionInputError, "NaN"),
    ],
)
def test_validation(kwargs: dict, exc: type, match: str) -> None:
    base = Objects3D.from_arrays([[1.0, 2.0, 3.0]], [[1.0, 1.0, 1.0]])
    args = {name: getattr(base, name) for name in (
        "centers", "sizes", "yaws", "covariances", "velocities", "scores", "class_ids",
        "track_ids")}  # fmt: skip
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        Objects3D(**args)


def test_transform_optical_box_to_base_link() -> None:
    """A yaw-0 box of the optical frame (x right, y down, z forward extents)
    becomes, for a level camera, a yaw-0 box of base_link with the extents
    permuted (length = optical z, width = optical x, height = optical y)."""
    cam = Objects3D.from_arrays(
        [[1.0, 0.5, 10.0]],
        [[0.6, 1.6, 0.8]],
        covariances=[np.diag([0.01, 0.02, 0.09])],
        velocities=[[0.0, 0.0, 1.0]],
        frame_id="cam",
    )
    t_base_from_cam = rigid(OPTICAL_FROM_FLU.T, (0.2, 0.0, 1.5))
    base = cam.transformed(t_base_from_cam, "base_link")
    assert base.frame_id == "base_link"
    assert np.allclose(base.centers, [[10.2, -1.0, 1.0]])
    assert np.allclose(base.sizes, [[0.8, 0.6, 1.6]])
    assert np.isclose(base.yaws[0] % math.pi, 0.0, atol=1e-6) or np.isclose(
        base.yaws[0] % math.pi, math.pi, atol=1e-6
    )
    assert np.allclose(np.diag(base.covariances[0]), [0.09, 0.01, 0.02], atol=1e-7)
    assert np.allclose(base.velocities, [[1.0, 0.0, 0.0]])
    # corners agree before and after the transform
    c_cam = cam.corners()[0]
    c_base = base.corners()[0]
    moved = c_cam @ t_base_from_cam[:3, :3].T + t_base_from_cam[:3, 3]
    assert np.allclose(np.sort(moved, axis=0), np.sort(c_base, axis=0), atol=1e-5)


def test_transform_yaw_rotation() -> None:
    objs = _objs(1)
    yaw_t = 0.5
    c, s = math.cos(yaw_t), math.sin(yaw_t)
    t = rigid(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]), (1.0, 2.0, 0.0))
    out = objs.transformed(t, "odom")
    assert np.isclose(out.yaws[0], objs.yaws[0] + yaw_t, atol=1e-6)
    assert np.allclose(out.sizes, objs.sizes)
    with pytest.raises(FusionInputError, match="4x4"):
        objs.transformed(np.eye(3), "odom")
