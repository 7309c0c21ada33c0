"""Camera motion compensation (CMC) for the 2D tracker.

A moving camera shifts every box in the image, which a constant-velocity
filter reads as object motion: after a pan, predictions miss and ids switch.
`CameraMotionEstimator` estimates one global image motion between the
consecutive frames of ONE camera: corners on the previous (grayscale,
downscaled) frame are followed into the current one with pyramidal
Lucas-Kanade optical flow and a 4-parameter similarity (rotation, uniform
scale, translation) is fitted with RANSAC (the "sparse optical flow" method
of BoT-SORT's GMC, here with the boxes of moving objects masked out of the
corner search). Any failure (too few corners or inliers, or inliers a small
share of the followed corners, an implausible
result, a new image size) yields the identity and is counted, so tracking
never gets worse than without compensation.

`warp_boxes_cxcywh` applies such a 2x3 affine to boxes (cx, cy, w, h); the
tracker uses it (via `Tracker.update(det, camera_motion=A)`) to move its
Kalman states and last observations into the new frame's pixels.

Everything depends on the pixels only (OpenCV's RANSAC is seeded per call), so
the same frames give the same motion: the pipeline stays deterministic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = [
    "CameraMotionEstimator",
    "CameraMotionStats",
    "affine_scale",
    "identity_affine",
    "warp_boxes_cxcywh",
]

_LOG = logging.getLogger(__name__)


def identity_affine() -> np.ndarray:
    """(2, 3) float64 identity motion."""
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def affine_scale(affine: np.ndarray) -> float:
    """Uniform scale of a 2x3 affine (sqrt of the 2x2 part's determinant)."""
    a = np.asarray(affine, np.float64)
    det = float(a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0])
    return float(np.sqrt(abs(det))) if det != 0.0 else 1.0


def warp_boxes_cxcywh(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Boxes (N, 4 as cx, cy, w, h) moved by a 2x3 affine: centres mapped
    exactly, sizes scaled by the affine's uniform scale (a box stays upright)."""
    a = np.asarray(affine, np.float64)
    b = np.asarray(boxes, np.float64)
    out = np.empty_like(b)
    out[:, :2] = b[:, :2] @ a[:, :2].T + a[:, 2]
    out[:, 2:] = b[:, 2:] * affine_scale(a)
    return out


@dataclass
class CameraMotionStats:
    """What the estimator did, frame by frame."""

    frames: int = 0
    estimated: int = 0
    failed_features: int = 0
    failed_fit: int = 0
    failed_implausible: int = 0
    restarts: int = 0

    @property
    def failed(self) -> int:
        return self.failed_features + self.failed_fit + self.failed_implausible

    def as_dict(self) -> dict[str, int]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["failed"] = self.failed
        return out


class CameraMotionEstimator:
    """Global motion between consecutive frames of one camera (see module doc).

    `estimate(image, boxes)` returns the (2, 3) affine that maps pixel
    coordinates of the previous frame given to this one onto the new image
    (the identity on the first frame and on any failure). `boxes` (N, 4 as
    x1, y1, x2, y2, optional) are the objects of the new frame: corners on
    them are not used for the next estimate, because moving objects are not
    the background.
    """

    def __init__(
        self,
        work_width: int = 320,
        max_corners: int = 150,
        min_inliers: int = 12,
        min_inlier_ratio: float = 0.3,
        max_scale_change: float = 0.2,
        max_rotation_rad: float = 0.2,
        flow_window: int = 11,
        flow_levels: int = 3,
    ) -> None:
        """`work_width`: frames are shrunk by an integer factor to about this
        width before anything else (the cost is then nearly independent of
        the camera resolution); the other arguments bound the corner search,
        the optical flow and what counts as a plausible motion."""
        if work_width < 16:
            raise ValueError(f"work_width: expected >= 16, got {work_width}")
        self.work_width = int(work_width)
        self.max_corners = int(max_corners)
        self.min_inliers = int(min_inliers)
        self.min_inlier_ratio = float(min_inlier_ratio)
        self.max_scale_change = float(max_scale_change)
        self.max_rotation_rad = float(max_rotation_rad)
        self.flow_window = int(flow_window)
        self.flow_levels = int(flow_levels)
        self.stats = CameraMotionStats()
        self.downscale = 1
        self._prev: np.ndarray | None = None
        self._prev_pts: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None

    def reset(self) -> None:
        """Forget the previous frame (the next one yields the identity)."""
        self._prev = None
        self._prev_pts = None
        self._shape = None

    def estimate(self, image: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        """Motion from the previous frame to `image` (HxW gray or HxWx3 BGR)."""
        import cv2

        self.stats.frames += 1
        affine = identity_affine()
        if self._prev is not None and self._shape != image.shape[:2]:
            self.stats.restarts += 1
            self._prev = None
        if self._prev is None:
            self.downscale = max(1, round(image.shape[1] / self.work_width))
        gray = self._gray(cv2, image)
        if self._prev is not None:
            affine = self._fit(cv2, self._prev, self._prev_pts, gray)
        self._prev = gray
        self._prev_pts = self._corners(cv2, gray, boxes)
        self._shape = image.shape[:2]
        return affine

    # ------------------------------------------------------------ internals
    def _gray(self, cv2: Any, image: np.ndarray) -> np.ndarray:
        """Shrink first, then convert to gray (cheaper than the other order)."""
        img = np.asarray(image)
        if img.dtype != np.uint8:
            img = np.clip(img, 0, 255).astype(np.uint8)
        if self.downscale > 1:
            h, w = img.shape[:2]
            size = (max(1, w // self.downscale), max(1, h // self.downscale))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return np.ascontiguousarray(img)

    def _corners(self, cv2: Any, gray: np.ndarray, boxes: np.ndarray | None) -> np.ndarray | None:
        mask = np.full(gray.shape, 255, np.uint8)
        h, w = gray.shape
        # a thin border: corners there leave the image at the next frame
        m = max(1, min(h, w) // 50)
        mask[:m, :] = 0
        mask[-m:, :] = 0
        mask[:, :m] = 0
        mask[:, -m:] = 0
        if boxes is not None and len(boxes):
            b = np.asarray(boxes, np.float64) / self.downscale
            b = b[np.isfinite(b).all(axis=1)]
            x1 = np.clip(np.floor(b[:, 0]), 0, w).astype(int)
            y1 = np.clip(np.floor(b[:, 1]), 0, h).astype(int)
            x2 = np.clip(np.ceil(b[:, 2]), 0, w).astype(int)
            y2 = np.clip(np.ceil(b[:, 3]), 0, h).astype(int)
            for a, b_, c, d in zip(x1.tolist(), y1.tolist(), x2.tolist(), y2.tolist(), strict=True):
                mask[b_:d, a:c] = 0
        pts = cv2.goodFeaturesToTrack(
            gray,
            maxCorners=self.max_corners,
            qualityLevel=0.01,
            minDistance=max(3, min(h, w) // 60),
            blockSize=3,
            mask=mask,
        )
        return None if pts is None else pts.astype(np.float32)

    def _fit(
        self, cv2: Any, prev: np.ndarray, prev_pts: np.ndarray | None, gray: np.ndarray
    ) -> np.ndarray:
        stats = self.stats
        if prev_pts is None or len(prev_pts) < self.min_inliers:
            stats.failed_features += 1
            return identity_affine()
        win = (self.flow_window, self.flow_window)
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(
            prev, gray, prev_pts, None, winSize=win, maxLevel=self.flow_levels
        )
        if nxt is None or status is None:
            stats.failed_features += 1
            return identity_affine()
        ok = status.reshape(-1).astype(bool)
        if int(ok.sum()) < self.min_inliers:
            stats.failed_features += 1
            return identity_affine()
        src = prev_pts.reshape(-1, 2)[ok]
        dst = nxt.reshape(-1, 2)[ok]
        m, inliers = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.5, maxIters=500
        )
        need = max(self.min_inliers, self.min_inlier_ratio * len(src))
        if m is None or inliers is None or int(inliers.sum()) < need:
            stats.failed_fit += 1
            return identity_affine()
        m = np.asarray(m, np.float64)
        scale = affine_scale(m)
        angle = float(np.arctan2(m[1, 0], m[0, 0]))
        if (
            not np.isfinite(m).all()
            or abs(scale - 1.0) > self.max_scale_change
            or abs(angle) > self.max_rotation_rad
        ):
            stats.failed_implausible += 1
            return identity_affine()
        # back to full-resolution pixels: x_full = d * x_small
        m[:, 2] *= self.downscale
        stats.estimated += 1
        return m
