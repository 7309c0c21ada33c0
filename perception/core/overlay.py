"""AR overlay drawing on top of `drawing.py`: motion trails and predicted boxes.

`TrailHistory` keeps, per track id, the last few box centres with their
stamps. Memory is bounded twice: `max_points` per track and `max_tracks`
tracks (tracks unseen for `max_age_s` are forgotten first), so a long run or a
flood of short-lived ids cannot grow it. Trails are drawn as polylines in the
track's colour (`drawing.color_for`), predicted boxes as dashed rectangles, so
a viewer can tell measured from extrapolated geometry. 3D boxes
(`draw_boxes3d`) are projected through a `CameraModel`, their edges clipped to
the camera's viewing frustum first, so a box partly behind the camera draws
its visible part instead of mirrored garbage. Pure numpy + OpenCV.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from perception.core.drawing import color_for, draw_detections
from perception.core.errors import InputImageError
from perception.core.types import Detections

if TYPE_CHECKING:
    from perception.core.camera import CameraModel
    from perception.core.fusion.types import Objects3D

__all__ = [
    "BOX_EDGES",
    "TrailHistory",
    "box3d_edges",
    "draw_boxes3d",
    "draw_overlay",
    "draw_predicted",
    "draw_trails",
]

_NS = 1_000_000_000


class TrailHistory:
    """Bounded per-track history of box centres (stamp_ns, x, y)."""

    def __init__(self, max_points: int = 30, max_tracks: int = 256, max_age_s: float = 2.0) -> None:
        if not isinstance(max_points, int) or max_points < 2:
            raise ValueError(f"max_points: expected an int >= 2, got {max_points!r}")
        if not isinstance(max_tracks, int) or max_tracks < 1:
            raise ValueError(f"max_tracks: expected an int >= 1, got {max_tracks!r}")
        if not (isinstance(max_age_s, (int, float)) and math.isfinite(max_age_s) and max_age_s > 0):
            raise ValueError(f"max_age_s: expected a finite number > 0, got {max_age_s!r}")
        self.max_points = max_points
        self.max_tracks = max_tracks
        self.max_age_s = float(max_age_s)
        # id -> deque of (stamp_ns, x, y); ordered by last update (oldest first)
        self._tracks: OrderedDict[int, deque[tuple[int, float, float]]] = OrderedDict()
        self._newest: int | None = None

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, track_id: int) -> bool:
        return int(track_id) in self._tracks

    def clear(self) -> None:
        self._tracks.clear()
        self._newest = None

    def update(self, det: Detections) -> None:
        """Append the centre of every tracked, finite box of `det`.

        A point not newer than a track's last point is ignored (late or
        repeated messages keep trails monotonic in time). A stamp older than
        the newest by more than `max_age_s` (a clock reset) clears the history.
        """
        stamp = det.stamp_ns
        if self._newest is not None and self._newest - stamp > self.max_age_s * _NS:
            self.clear()
        ok = det.is_tracked & det.finite_mask()
        centres = det.centers[ok].astype(np.float64)
        for tid, (x, y) in zip(det.track_ids[ok].tolist(), centres.tolist(), strict=True):
            pts = self._tracks.get(tid)
            if pts is None:
                pts = deque(maxlen=self.max_points)
                self._tracks[tid] = pts
            elif pts[-1][0] >= stamp:
                continue
            pts.append((stamp, x, y))
            self._tracks.move_to_end(tid)
        self._newest = stamp if self._newest is None else max(self._newest, stamp)
        horizon = self._newest - int(self.max_age_s * _NS)
        while self._tracks:
            tid, pts = next(iter(self._tracks.items()))
            if len(self._tracks) > self.max_tracks or pts[-1][0] < horizon:
                del self._tracks[tid]
            else:
                break

    def points(self, track_id: int, until_ns: int | None = None) -> np.ndarray:
        """(K, 2) float32 centres of one track, oldest first, at or before
        `until_ns` (None = all), so an older image gets the trail it had."""
        pts = self._tracks.get(int(track_id))
        if not pts:
            return np.zeros((0, 2), np.float32)
        sel = [(x, y) for s, x, y in pts if until_ns is None or s <= until_ns]
        return np.asarray(sel, np.float32).reshape(-1, 2)

    def track_ids(self) -> list[int]:
        return list(self._tracks)

    def total_points(self) -> int:
        return sum(len(p) for p in self._tracks.values())


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise InputImageError(f"expected an (H, W, 3) BGR image, got shape {shape}")
    if image.dtype != np.uint8:
        raise InputImageError(f"expected dtype uint8, got {image.dtype}")


def draw_trails(
    image: np.ndarray,
    trails: TrailHistory,
    track_ids: Sequence[int] | None = None,
    *,
    until_ns: int | None = None,
    thickness: int = 2,
    copy: bool = True,
) -> np.ndarray:
    """Polyline of each track's recent centres (all tracks, or `track_ids`),
    in the track's colour."""
    import cv2

    _check_image(image)
    out = image.copy() if copy else image
    ids = trails.track_ids() if track_ids is None else [int(t) for t in track_ids]
    for tid in ids:
        pts = trails.points(tid, until_ns)
        if pts.shape[0] < 2:
            continue
        poly = np.round(pts).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [poly], False, color_for(tid), thickness, cv2.LINE_AA)
    return out


def _dashed_line(
    img: np.ndarray,
    p0: tuple[int, int],
    p1: tuple[int, int],
    color: tuple[int, int, int],
    thickness: int,
    dash: int,
) -> None:
    import cv2

    x0, y0 = p0
    x1, y1 = p1
    length = math.hypot(x1 - x0, y1 - y0)
    if length == 0:
        return
    n = max(1, int(length // dash))
    for k in range(0, n, 2):
        a, b = k / n, min(1.0, (k + 1) / n)
        cv2.line(
            img,
            (round(x0 + (x1 - x0) * a), round(y0 + (y1 - y0) * a)),
            (round(x0 + (x1 - x0) * b), round(y0 + (y1 - y0) * b)),
            color,
            thickness,
            cv2.LINE_AA,
        )


def draw_predicted(
    image: np.ndarray,
    det: Detections,
    *,
    thickness: int = 1,
    dash: int = 8,
    copy: bool = True,
) -> np.ndarray:
    """Predicted boxes as dashed rectangles in the track's colour (no label:
    the measured box, drawn by `draw_detections`, carries it)."""
    _check_image(image)
    if not isinstance(dash, int) or dash < 1:
        raise ValueError(f"dash: expected an int >= 1, got {dash!r}")
    out = image.copy() if copy else image
    if len(det) == 0:
        return out
    h, w = out.shape[:2]
    lim = 4 * max(h, w)  # keep absurd coordinates from making millions of dashes
    boxes = np.clip(np.round(det.xyxy), -lim, lim)
    for i in np.flatnonzero(det.finite_mask()):
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        tid, cls = int(det.track_ids[i]), int(det.class_ids[i])
        color = color_for(tid if tid >= 0 else cls)
        for p0, p1 in (
            ((x1, y1), (x2, y1)),
            ((x2, y1), (x2, y2)),
            ((x2, y2), (x1, y2)),
            ((x1, y2), (x1, y1)),
        ):
            _dashed_line(out, p0, p1, color, thickness, dash)
    return out


def draw_overlay(
    image: np.ndarray,
    det: Detections,
    class_names: Sequence[str] | None = None,
    *,
    trails: TrailHistory | None = None,
    dashed: Detections | None = None,
    until_ns: int | None = None,
    copy: bool = True,
) -> np.ndarray:
    """Everything the AR overlay shows: trails (points up to `until_ns`) under
    the boxes, the boxes with class, score and id (`draw_detections`), then
    `dashed` boxes (predicted ones, or the measured ones when `det` is the
    prediction)."""
    _check_image(image)
    out = image.copy() if copy else image
    if trails is not None:
        ids = det.track_ids[det.is_tracked].tolist()
        draw_trails(out, trails, ids, until_ns=until_ns, copy=False)
    draw_detections(out, det, class_names, copy=False)
    if dashed is not None:
        draw_predicted(out, dashed, copy=False)
    return out


# ------------------------------------------------------------------ 3D boxes

BOX_EDGES: tuple[tuple[int, int], ...] = tuple(
    (i, i | bit) for i in range(8) for bit in (4, 2, 1) if not i & bit
)
"""The 12 edges of a box as pairs of `Objects3D.corners()` indices (corner
index = 4*[x>0] + 2*[y>0] + [z>0]: two corners share an edge when their
indices differ in one bit)."""

_NEAR_M = 1e-3
_FOV_MARGIN = 0.05  # fraction of the field of view added on each side
_FOV_CAP = 20.0  # |x/z|, |y/z| cap (~87 degrees) for very wide fisheye bounds


def _frustum(camera: CameraModel, near: float) -> np.ndarray:
    """(5, 3) rows (a, b, c) of the half-spaces a*x + b*y + c*z >= 0 (and z >=
    near) bounding what the camera sees, slightly enlarged: clipping to them
    keeps the lens model inside its valid range and pixels finite."""
    xmin, xmax, ymin, ymax = camera.fov_bounds()
    mx, my = _FOV_MARGIN * (xmax - xmin), _FOV_MARGIN * (ymax - ymin)
    xmin, xmax = max(xmin - mx, -_FOV_CAP), min(xmax + mx, _FOV_CAP)
    ymin, ymax = max(ymin - my, -_FOV_CAP), min(ymax + my, _FOV_CAP)
    return np.array(
        [
            [0.0, 0.0, 1.0],  # z >= near (offset handled by the caller)
            [1.0, 0.0, -xmin],  # x/z >= xmin
            [-1.0, 0.0, xmax],  # x/z <= xmax
            [0.0, 1.0, -ymin],
            [0.0, -1.0, ymax],
        ]
    )


def _clip_segments(
    p0: np.ndarray, p1: np.ndarray, planes: np.ndarray, near: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Liang-Barsky in 3D: (M, 3) segments p0->p1 clipped to the half-spaces;
    returns the clipped endpoints and a (M,) mask of segments with a part left."""
    offsets = np.zeros(len(planes))
    offsets[0] = -near
    f0 = p0 @ planes.T + offsets  # (M, P) >= 0 inside
    f1 = p1 @ planes.T + offsets
    keep = ~((f0 < 0) & (f1 < 0)).any(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = f0 / (f0 - f1)  # where the segment crosses each plane
    enter = (f0 < 0) & (f1 >= 0)
    leave = (f0 >= 0) & (f1 < 0)
    t0 = np.max(np.where(enter, t, 0.0), axis=1, initial=0.0)
    t1 = np.min(np.where(leave, t, 1.0), axis=1, initial=1.0)
    keep &= t0 <= t1
    d = p1 - p0
    return p0 + t0[:, None] * d, p0 + t1[:, None] * d, keep


def box3d_edges(
    camera: CameraModel,
    objects: Objects3D,
    *,
    transform: np.ndarray | None = None,
    near: float = _NEAR_M,
    samples: int | None = None,
) -> list[list[np.ndarray]]:
    """Per object, the visible parts of its 12 edges as (K, 2) float64 pixel
    polylines (K >= 2; an edge entirely outside the view is left out).

    `objects` are in the camera optical frame, or in another frame when
    `transform` (4x4, that frame -> optical) is given: the CORNERS are
    transformed, which is exact for any box orientation (unlike
    `Objects3D.transformed`, which re-expresses boxes as yaw-only). Edges are
    clipped in 3D to z >= `near` and to the slightly enlarged field of view,
    then projected with the camera's distortion; a distorted camera gets
    `samples` points per edge (default 16) since straight edges bend.
    """
    if not (isinstance(near, (int, float)) and math.isfinite(near) and near > 0):
        raise ValueError(f"near: expected a finite number > 0, got {near!r}")
    if samples is None:
        samples = 16 if camera.has_distortion else 2
    if not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples: expected an int >= 2, got {samples!r}")
    n = len(objects)
    if n == 0:
        return []
    corners = objects.corners()  # (N, 8, 3)
    if transform is not None:
        t = np.asarray(transform, np.float64)
        if t.shape != (4, 4) or not np.isfinite(t).all():
            raise ValueError(f"transform: expected a finite 4x4 matrix, got shape {t.shape}")
        corners = corners @ t[:3, :3].T + t[:3, 3]
    idx = np.array(BOX_EDGES)
    p0 = corners[:, idx[:, 0]].reshape(-1, 3)
    p1 = corners[:, idx[:, 1]].reshape(-1, 3)
    a, b, keep = _clip_segments(p0, p1, _frustum(camera, float(near)), float(near))
    s = np.linspace(0.0, 1.0, samples)
    pts = a[:, None, :] + s[None, :, None] * (b - a)[:, None, :]  # (M, S, 3)
    # guard against rounding just below the near plane at clipped endpoints
    pts[..., 2] = np.maximum(pts[..., 2], float(near))
    uv = camera.project(pts.reshape(-1, 3)).reshape(-1, samples, 2)
    keep &= np.isfinite(uv).all(axis=(1, 2))
    out: list[list[np.ndarray]] = []
    for i in range(n):
        rows = range(i * len(BOX_EDGES), (i + 1) * len(BOX_EDGES))
        out.append([uv[r] for r in rows if keep[r]])
    return out


def draw_boxes3d(
    image: np.ndarray,
    camera: CameraModel,
    objects: Objects3D,
    class_names: Sequence[str] | None = None,
    *,
    transform: np.ndarray | None = None,
    near: float = _NEAR_M,
    thickness: int = 2,
    copy: bool = True,
) -> np.ndarray:
    """Projected 3D boxes (see `box3d_edges`): the visible part of each edge
    in the track's colour (`color_for`, class colour when untracked) and a
    "class #id" label at the top-left of the drawn outline."""
    import cv2

    _check_image(image)
    out = image.copy() if copy else image
    h, w = out.shape[:2]
    if (camera.width, camera.height) != (w, h):
        raise InputImageError(
            f"image size {w}x{h} does not match the camera model's {camera.width}x{camera.height}"
        )
    names = class_names or ()
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.4, min(h, w) / 1200.0)
    for i, edges in enumerate(box3d_edges(camera, objects, transform=transform, near=near)):
        if not edges:
            continue
        tid, cls = int(objects.track_ids[i]), int(objects.class_ids[i])
        color = color_for(tid if tid >= 0 else cls)
        polys = [np.round(e).astype(np.int32).reshape(-1, 1, 2) for e in edges]
        cv2.polylines(out, polys, False, color, thickness, cv2.LINE_AA)
        allpts = np.concatenate(edges)
        x = int(np.clip(np.round(allpts[:, 0].min()), 0, w - 1))
        y = int(np.clip(np.round(allpts[:, 1].min()), 0, h - 1))
        name = names[cls] if 0 <= cls < len(names) else str(cls)
        label = f"{name} #{tid}" if tid >= 0 else name
        (_, th), base = cv2.getTextSize(label, font, scale, 1)
        ty = y - 2 if y - th - base - 2 >= 0 else y + th + base + 2
        cv2.putText(out, label, (x + 1, ty - 2), font, scale, color, 1, cv2.LINE_AA)
    return out
