"""AR overlay drawing on top of `drawing.py`: motion trails and predicted boxes.

`TrailHistory` keeps, per track id, the last few box centres with their
stamps. Memory is bounded twice: `max_points` per track and `max_tracks`
tracks (tracks unseen for `max_age_s` are forgotten first), so a long run or a
flood of short-lived ids cannot grow it. Trails are drawn as polylines in the
track's colour (`drawing.color_for`), predicted boxes as dashed rectangles, so
a viewer can tell measured from extrapolated geometry. Pure numpy + OpenCV.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence

import numpy as np

from perception.core.drawing import color_for, draw_detections
from perception.core.errors import InputImageError
from perception.core.types import Detections

__all__ = ["TrailHistory", "draw_overlay", "draw_predicted", "draw_trails"]

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
    img: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], color, thickness: int, dash: int
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
