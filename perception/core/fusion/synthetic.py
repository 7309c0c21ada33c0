"""Generated scenes with exact ground truth, for tests and benches.

A scene is a set of yaw-only boxes standing on a ground plane z = ground_z in
a z-up "world" frame (think base_link). Depth images are rendered by casting
one ray per pixel through the `CameraModel` (distortion honoured) and keeping
the nearest hit (a per-pixel z-buffer of the boxes' visible faces and the
ground); LiDAR clouds by casting rays from a sensor origin at fixed elevation
angles over 360 degrees of azimuth. Perfect 2D detections are the pixel
extents of each box's visible pixels in the render. No randomness unless a
generator is passed (noise, dropouts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perception.core.camera import CameraModel
from perception.core.types import Detections

__all__ = [
    "OPTICAL_FROM_FLU",
    "SceneBox",
    "cast_rays",
    "detections_from_render",
    "lidar_scan",
    "render_depth",
    "rigid",
]

OPTICAL_FROM_FLU = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
"""Rotation from a forward-left-up frame (base_link, LiDAR) to an optical frame
(x right, y down, z forward)."""


def rigid(rotation: np.ndarray, translation: Sequence[float]) -> np.ndarray:
    """4x4 homogeneous transform."""
    t = np.eye(4)
    t[:3, :3] = rotation
    t[:3, 3] = translation
    return t


@dataclass(frozen=True)
class SceneBox:
    """Ground-truth box: centre (m), size (length along yaw, width, height), yaw (rad)."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float = 0.0
    class_id: int = 0


def _ray_box(origins: np.ndarray, dirs: np.ndarray, box: SceneBox) -> np.ndarray:
    """(N,) ray parameter of the first hit with the box (inf if none)."""
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    rot_t = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # world -> box
    o = (origins - np.asarray(box.center)) @ rot_t.T
    d = dirs @ rot_t.T
    half = 0.5 * np.asarray(box.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
    t1 = np.where(np.isnan(t1), -np.inf, t1)
    t2 = np.where(np.isnan(t2), np.inf, t2)
    tmin = np.minimum(t1, t2).max(axis=1)
    tmax = np.maximum(t1, t2).min(axis=1)
    hit = (tmax >= tmin) & (tmax > 1e-9)
    t = np.where(tmin > 1e-9, tmin, tmax)
    return np.where(hit, t, np.inf)


def cast_rays(
    origins: np.ndarray,
    dirs: np.ndarray,
    boxes: Sequence[SceneBox],
    ground_z: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of each ray: (t (N,), id (N,)) with id = box index, -1 for
    the ground, -2 for nothing (t = inf)."""
    n = dirs.shape[0]
    origins = np.broadcast_to(np.asarray(origins, np.float64), (n, 3))
    best = np.full(n, np.inf)
    ids = np.full(n, -2, np.int64)
    if ground_z is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            tg = (ground_z - origins[:, 2]) / dirs[:, 2]
        tg = np.where(np.isfinite(tg) & (tg > 1e-9), tg, np.inf)
        upd = tg < best
        best[upd], ids[upd] = tg[upd], -1
    for k, box in enumerate(boxes):
        tb = _ray_box(origins, dirs, box)
        upd = tb < best
        best[upd], ids[upd] = tb[upd], k
    return best, ids


def render_depth(
    camera: CameraModel,
    T_world_from_cam: np.ndarray,
    boxes: Sequence[SceneBox],
    ground_z: float | None = None,
    max_depth: float = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(depth (H, W) float32 metres along the optical axis, 0 where nothing
    is hit; ids (H, W) int64 as `cast_rays`). Pixel (u, v) is sampled at its
    centre, integer coordinates (OpenCV convention)."""
    h, w = camera.height, camera.width
    vv, uu = np.mgrid[0:h, 0:w]
    uv = np.stack((uu.ravel(), vv.ravel()), axis=1).astype(np.float64)
    xy = camera.normalized_rays(uv)
    d_cam = np.concatenate((xy, np.ones((xy.shape[0], 1))), axis=1)  # z = 1: t is depth
    t_wc = np.asarray(T_world_from_cam, np.float64)
    dirs = d_cam @ t_wc[:3, :3].T
    t, ids = cast_rays(t_wc[:3, 3], dirs, boxes, ground_z)
    far = ~(t <= max_depth)
    t[far] = 0.0
    ids[far] = -2
    return t.reshape(h, w).astype(np.float32), ids.reshape(h, w)


def detections_from_render(
    ids: np.ndarray,
    boxes: Sequence[SceneBox],
    *,
    min_pixels: int = 20,
    stamp_ns: int = 0,
    frame_id: str = "camera_optical",
    track_ids: Sequence[int] | None = None,
) -> tuple[Detections, np.ndarray]:
    """Perfect 2D detections: pixel extent of each box's visible pixels.
    Returns (detections, box index of each row)."""
    rows, which = [], []
    for k in range(len(boxes)):
        vv, uu = np.nonzero(ids == k)
        if vv.size < min_pixels:
            continue
        rows.append((uu.min() - 0.5, vv.min() - 0.5, uu.max() + 0.5, vv.max() + 0.5))
        which.append(k)
    which_arr = np.asarray(which, np.intp)
    h, w = ids.shape
    if not rows:
        return Detections.empty(stamp_ns=stamp_ns, frame_id=frame_id, image_size=(w, h)), which_arr
    tids = None if track_ids is None else np.asarray(track_ids, np.int64)[which_arr]
    det = Detections.from_arrays(
        np.asarray(rows),
        np.full(len(rows), 0.9),
        [boxes[k].class_id for k in which],
        tids,
        stamp_ns=stamp_ns,
        frame_id=frame_id,
        image_size=(w, h),
    )
    return det, which_arr


def lidar_scan(
    boxes: Sequence[SceneBox],
    ground_z: float,
    *,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    elevations_deg: Sequence[float] = tuple(np.linspace(-15.0, 5.0, 16)),
    n_azimuth: int = 1024,
    max_range: float = 80.0,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(N, 3) float32 returns in the sensor frame (z-up, axes of the world,
    at `origin`), rays without a hit within `max_range` dropped."""
    el = np.radians(np.asarray(elevations_deg, np.float64))
    az = np.linspace(-np.pi, np.pi, int(n_azimuth), endpoint=False)
    e, a = np.meshgrid(el, az, indexing="ij")
    dirs = np.stack((np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)), axis=-1)
    dirs = dirs.reshape(-1, 3)
    o = np.asarray(origin, np.float64)
    t, _ = cast_rays(o, dirs, boxes, ground_z)
    ok = t <= max_range
    t = t[ok]
    if noise_std > 0:
        gen = rng if rng is not None else np.random.default_rng(0)
        t = t + gen.normal(0.0, noise_std, t.shape)
    points: np.ndarray = (dirs[ok] * t[:, None]).astype(np.float32)
    return points
