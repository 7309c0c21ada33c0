"""`Objects3D`: the 3D boxes of one frame as a structure of numpy arrays.

Same design as `Detections`: frozen, validated on construction, canonical
dtypes, boolean-mask indexing. Box convention (matches vision_msgs
BoundingBox3D with a yaw-only orientation): `centers` in `frame_id`, `sizes`
are the extents along the box's own x, y, z axes, and the box is rotated by
`yaws` radians about the frame's +z axis. In a z-up frame (base_link, a LiDAR
frame) that is the usual yaw; in a camera optical frame (z forward) the depth
lifter emits yaw 0, i.e. boxes aligned with the optical axes. `transformed()`
moves boxes between frames and re-expresses them as yaw-only boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from perception.core.fusion.errors import FusionInputError

__all__ = ["Objects3D", "yaw_quaternions"]

_FIELDS = (
    ("centers", np.float64, (3,)),
    ("sizes", np.float32, (3,)),
    ("yaws", np.float32, ()),
    ("covariances", np.float32, (3, 3)),
    ("velocities", np.float32, (3,)),
    ("scores", np.float32, ()),
    ("class_ids", np.int32, ()),
    ("track_ids", np.int64, ()),
)


def _check(name: str, value: Any, dtype: type, tail: tuple[int, ...], n: int | None) -> int:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"Objects3D.{name}: expected numpy.ndarray, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(
            f"Objects3D.{name}: expected dtype {np.dtype(dtype).name}, got {value.dtype.name}"
        )
    if value.ndim != 1 + len(tail) or value.shape[1:] != tail:
        raise ValueError(f"Objects3D.{name}: expected shape {('N', *tail)}, got {value.shape}")
    if n is not None and value.shape[0] != n:
        raise ValueError(f"Objects3D.{name}: expected {n} rows (as centers), got {value.shape[0]}")
    return int(value.shape[0])


def yaw_quaternions(yaws: np.ndarray) -> np.ndarray:
    """(N, 4) float64 quaternions (x, y, z, w) of rotations by `yaws` about +z."""
    half = 0.5 * np.asarray(yaws, np.float64)
    q = np.zeros((half.shape[0], 4), np.float64)
    q[:, 2] = np.sin(half)
    q[:, 3] = np.cos(half)
    return q


@dataclass(frozen=True, eq=False)
class Objects3D:
    """3D objects of one frame.

    Attributes:
        centers: (N, 3) float64 box centres in metres, in `frame_id`.
        sizes: (N, 3) float32 extents (m) along the box axes, all > 0.
        yaws: (N,) float32 rotation (rad) about the frame's +z axis.
        covariances: (N, 3, 3) float32 covariance of the centre (m^2).
        velocities: (N, 3) float32 m/s in `frame_id`; NaN rows: unknown
            (single-frame measurements have no velocity; never a made-up zero).
        scores: (N,) float32 confidence (from the 2D detection or the track).
        class_ids: (N,) int32 class index (as the 2D detector's).
        track_ids: (N,) int64 track id, -1 untracked.
        stamp_ns: capture time in nanoseconds.
        frame_id: frame of centers/velocities/covariances.

    Build from loose arrays with `Objects3D.from_arrays`.
    """

    centers: np.ndarray
    sizes: np.ndarray
    yaws: np.ndarray
    covariances: np.ndarray
    velocities: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray
    stamp_ns: int = 0
    frame_id: str = ""

    def __post_init__(self) -> None:
        n: int | None = None
        for name, dtype, tail in _FIELDS:
            n = _check(name, getattr(self, name), dtype, tail, n)
        if not np.isfinite(self.centers).all():
            raise FusionInputError("Objects3D.centers: expected finite values, got NaN/inf")
        if not (np.isfinite(self.sizes).all() and (self.sizes > 0).all()):
            raise FusionInputError("Objects3D.sizes: expected finite values > 0")
        if not np.isfinite(self.yaws).all() or not np.isfinite(self.covariances).all():
            raise FusionInputError("Objects3D.yaws/covariances: expected finite values")
        vel_finite = np.isfinite(self.velocities)
        if (vel_finite.any(axis=1) != vel_finite.all(axis=1)).any():
            raise FusionInputError(
                "Objects3D.velocities: expected each row all finite or all NaN (unknown)"
            )
        if isinstance(self.stamp_ns, bool) or not isinstance(self.stamp_ns, (int, np.integer)):
            raise TypeError(f"Objects3D.stamp_ns: expected int, got {type(self.stamp_ns).__name__}")
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        if not isinstance(self.frame_id, str):
            raise TypeError(f"Objects3D.frame_id: expected str, got {type(self.frame_id).__name__}")

    # ------------------------------------------------------------- builders
    @classmethod
    def from_arrays(
        cls,
        centers: Any,
        sizes: Any,
        yaws: Any | None = None,
        covariances: Any | None = None,
        velocities: Any | None = None,
        scores: Any | None = None,
        class_ids: Any | None = None,
        track_ids: Any | None = None,
        *,
        stamp_ns: int = 0,
        frame_id: str = "",
    ) -> Objects3D:
        """Build from array-likes; omitted fields: yaw 0, covariance 0, velocity
        unknown (NaN), score 1, class 0, untracked."""
        c = np.asarray(centers, np.float64).reshape(-1, 3)
        n = c.shape[0]
        return cls(
            centers=c,
            sizes=np.asarray(sizes, np.float32).reshape(-1, 3),
            yaws=(
                np.zeros(n, np.float32) if yaws is None else np.asarray(yaws, np.float32)
            ).reshape(-1),
            covariances=(
                np.zeros((n, 3, 3), np.float32)
                if covariances is None
                else np.asarray(covariances, np.float32).reshape(-1, 3, 3)
            ),
            velocities=(
                np.full((n, 3), np.nan, np.float32)
                if velocities is None
                else np.asarray(velocities, np.float32).reshape(-1, 3)
            ),
            scores=(
                np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32)
            ).reshape(-1),
            class_ids=(
                np.zeros(n, np.int32) if class_ids is None else np.asarray(class_ids, np.int32)
            ).reshape(-1),
            track_ids=(
                np.full(n, -1, np.int64) if track_ids is None else np.asarray(track_ids, np.int64)
            ).reshape(-1),
            stamp_ns=stamp_ns,
            frame_id=frame_id,
        )

    @classmethod
    def empty(cls, *, stamp_ns: int = 0, frame_id: str = "") -> Objects3D:
        return cls.from_arrays(
            np.zeros((0, 3)), np.zeros((0, 3)), stamp_ns=stamp_ns, frame_id=frame_id
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Objects3D]) -> Objects3D:
        """Join objects of the same stamp and frame."""
        if not parts:
            raise ValueError("Objects3D.concatenate: expected at least one Objects3D, got none")
        first = parts[0]
        for p in parts[1:]:
            if (p.stamp_ns, p.frame_id) != (first.stamp_ns, first.frame_id):
                raise ValueError(
                    "Objects3D.concatenate: expected one (stamp_ns, frame_id) "
                    f"{(first.stamp_ns, first.frame_id)}, got {(p.stamp_ns, p.frame_id)}"
                )
        arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name, _, _ in _FIELDS}
        return cls(**arrays, stamp_ns=first.stamp_ns, frame_id=first.frame_id)

    # ------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(self.centers.shape[0])

    def __getitem__(self, index: Any) -> Objects3D:
        """Rows selected by a boolean mask, an index array or a slice."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"Objects3D index {index} out of range for length {n}")
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool and index.shape != (len(self),):
                raise IndexError(
                    f"Objects3D boolean mask: expected shape ({len(self)},), got {index.shape}"
                )
        return replace(self, **{name: getattr(self, name)[index] for name, _, _ in _FIELDS})

    def with_track_ids(self, track_ids: Any) -> Objects3D:
        return replace(self, track_ids=np.asarray(track_ids, np.int64).reshape(-1))

    @property
    def has_velocity(self) -> np.ndarray:
        """(N,) bool: rows with a known velocity."""
        known: np.ndarray = np.isfinite(self.velocities).all(axis=1)
        return known

    def quaternions(self) -> np.ndarray:
        """(N, 4) orientation quaternions (x, y, z, w), for the ROS message."""
        return yaw_quaternions(self.yaws)

    def corners(self) -> np.ndarray:
        """(N, 8, 3) float64 box corners (for markers and tests)."""
        signs = np.array(
            [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64
        )
        half = 0.5 * self.sizes.astype(np.float64)[:, None, :] * signs[None]
        c, s = np.cos(self.yaws.astype(np.float64)), np.sin(self.yaws.astype(np.float64))
        x = c[:, None] * half[..., 0] - s[:, None] * half[..., 1]
        y = s[:, None] * half[..., 0] + c[:, None] * half[..., 1]
        corners: np.ndarray = np.stack((x, y, half[..., 2]), axis=-1) + self.centers[:, None, :]
        return corners

    def transformed(self, transform: np.ndarray, frame_id: str) -> Objects3D:
        """Objects expressed in another frame: `transform` is the 4x4 matrix
        mapping points of this frame into `frame_id`.

        Centres, velocities and covariances are transformed exactly. The box
        is re-expressed as a yaw-only box of the new frame: the box axis
        closest to the new +z becomes its height and the yaw comes from the
        first remaining axis (exact when the rotation keeps z up to a
        permutation of axes, as for a level camera; an approximation for a
        tilted mount)."""
        t = np.asarray(transform, np.float64)
        if t.shape != (4, 4) or not np.isfinite(t).all():
            raise FusionInputError(f"transform: expected a finite 4x4 matrix, got shape {t.shape}")
        rot, trans = t[:3, :3], t[:3, 3]
        centers = self.centers @ rot.T + trans
        vel = self.velocities.astype(np.float64) @ rot.T
        cov = np.einsum("ij,njk,lk->nil", rot, self.covariances.astype(np.float64), rot)
        n = len(self)
        yaw = self.yaws.astype(np.float64)
        c, s = np.cos(yaw), np.sin(yaw)
        # box axes (columns) in the old frame, then in the new one: (N, 3, 3)
        axes = np.zeros((n, 3, 3))
        axes[:, 0, 0], axes[:, 1, 0] = c, s
        axes[:, 0, 1], axes[:, 1, 1] = -s, c
        axes[:, 2, 2] = 1.0
        axes = np.einsum("ij,njk->nik", rot, axes)
        up = np.argmax(np.abs(axes[:, 2, :]), axis=1)  # box axis along new z
        rows = np.arange(n)
        h1 = np.where(up == 0, 1, 0)  # the two horizontal box axes
        h2 = 3 - up - h1
        # length axis: the one closer to the new x, so |yaw| <= 45 degrees
        # for nearly axis-aligned boxes (a box is the same under 90-degree
        # turns with its sizes swapped; this picks one representation)
        swap = np.abs(axes[rows, 0, h2]) > np.abs(axes[rows, 0, h1])
        first = np.where(swap, h2, h1)
        second = np.where(swap, h1, h2)
        a = axes[rows, :, first]
        new_yaw = np.arctan2(a[:, 1], a[:, 0])
        new_yaw = (new_yaw + np.pi / 2) % np.pi - np.pi / 2  # symmetric under pi
        sizes = self.sizes
        new_sizes = np.stack(
            (sizes[rows, first], sizes[rows, second], sizes[rows, up]), axis=1
        ).astype(np.float32)
        return replace(
            self,
            centers=centers,
            sizes=new_sizes,
            yaws=new_yaw.astype(np.float32),
            covariances=cov.astype(np.float32),
            velocities=vel.astype(np.float32),
            frame_id=frame_id,
        )

    def __repr__(self) -> str:
        return (
            f"Objects3D(n={len(self)}, stamp_ns={self.stamp_ns}, frame_id={self.frame_id!r}, "
            f"tracked={int((self.track_ids >= 0).sum())})"
        )
