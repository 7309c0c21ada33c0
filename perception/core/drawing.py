"""Drawing detections and tracks on images (overlays for nodes, the CLI and demos).

Colours are a fixed function of the track id (or class id when untracked),
so an object keeps its colour from frame to frame and across cameras.
Segmentation, pose and oriented-box outputs are drawn as well: translucent
instance masks, skeletons and rotated boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perception.core.types import Detections

__all__ = ["COCO_SKELETON", "color_for", "draw_detections", "obb_corners"]

_PALETTE = np.array(
    [
        (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
        (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
        (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0),
        (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255),
    ],
    dtype=np.uint8,
)  # fmt: skip


def color_for(key: int) -> tuple[int, int, int]:
    """BGR colour for a track or class id (stable, distinct neighbours)."""
    c = _PALETTE[(int(key) * 7) % len(_PALETTE)]
    return int(c[0]), int(c[1]), int(c[2])


COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip
"""Limbs of the 17 COCO person keypoints (Ultralytics' pose models) as index
pairs; other keypoint counts are drawn as points only."""


def obb_corners(obb: np.ndarray) -> np.ndarray:
    """(N, 5) cx, cy, w, h, theta (radians, from +x towards +y, Ultralytics'
    xywhr) -> (N, 4, 2) corner pixels in drawing order."""
    o = np.asarray(obb, np.float64).reshape(-1, 5)
    c, s = np.cos(o[:, 4]), np.sin(o[:, 4])
    hw, hh = 0.5 * o[:, 2], 0.5 * o[:, 3]
    ax = np.stack((hw * c, hw * s), axis=1)  # half the width, along the box's x
    ay = np.stack((-hh * s, hh * c), axis=1)  # half the height, along its y
    ctr = o[:, :2]
    corners: np.ndarray = np.stack(
        (ctr + ax + ay, ctr + ax - ay, ctr - ax - ay, ctr - ax + ay), axis=1
    )
    return corners


def _blend_masks(
    out: np.ndarray, det: Detections, colors: list[tuple[int, int, int]], alpha: float
) -> None:
    """Each instance's pixels tinted with its colour (earlier rows on top,
    as in `InstanceMasks.to_id_image`); the work is per mask crop, not per frame."""
    masks = det.masks
    if masks is None or alpha <= 0.0:
        return
    h, w = out.shape[:2]
    if masks.image_size != (w, h):
        return  # masks of another image size: not drawn (boxes still are)
    a = np.float32(alpha)
    for i in range(len(masks) - 1, -1, -1):
        crop = masks.crops[i]
        if not crop.any():
            continue
        x0, y0, x1, y1 = (int(v) for v in masks.boxes[i])
        region = out[y0:y1, x0:x1]
        px = region[crop].astype(np.float32)
        px += a * (np.asarray(colors[i], np.float32) - px)
        region[crop] = px.astype(np.uint8)


def _draw_keypoints(
    out: np.ndarray,
    kps: np.ndarray,
    color: tuple[int, int, int],
    threshold: float,
    thickness: int,
) -> None:
    """One instance's keypoints ((K, 3) x, y, confidence) above `threshold`
    and, for the 17 COCO keypoints, the limbs between them."""
    import cv2

    h, w = out.shape[:2]
    ok = np.isfinite(kps).all(axis=1) & (kps[:, 2] >= threshold)
    ok &= (np.abs(kps[:, 0]) < 4 * w) & (np.abs(kps[:, 1]) < 4 * h)  # absurd values: skipped
    pts = np.round(np.nan_to_num(kps[:, :2])).astype(np.int32)
    if kps.shape[0] == 17:
        for a, b in COCO_SKELETON:
            if ok[a] and ok[b]:
                p, q = tuple(pts[a].tolist()), tuple(pts[b].tolist())
                cv2.line(out, p, q, color, thickness, cv2.LINE_AA)
    radius = max(2, thickness + 1)
    for k in np.flatnonzero(ok):
        cv2.circle(out, tuple(pts[k].tolist()), radius, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, tuple(pts[k].tolist()), radius, color, 1, cv2.LINE_AA)


def draw_detections(
    image: np.ndarray,
    det: Detections,
    class_names: Sequence[str] | None = None,
    *,
    thickness: int = 2,
    copy: bool = True,
    mask_alpha: float = 0.4,
    keypoint_threshold: float = 0.5,
) -> np.ndarray:
    """Boxes with "class score" (and "#id" when tracked) on a BGR uint8 image.

    What the model gave is drawn too: instance masks tinted with the box's
    colour (`mask_alpha`, 0 = off), oriented boxes as rotated rectangles
    instead of their axis-aligned hull, keypoints above `keypoint_threshold`
    with the COCO skeleton for 17-keypoint pose models.

    Returns a new image unless `copy=False`, which draws in place (the caller
    owns the buffer). Boxes are clipped by OpenCV, so any coordinates are safe.
    """
    import cv2

    out = image.copy() if copy else image
    if len(det) == 0:
        return out
    names = class_names or ()
    finite = det.finite_mask()
    colors = [
        color_for(t if t >= 0 else c)
        for t, c in zip(det.track_ids.tolist(), det.class_ids.tolist(), strict=True)
    ]
    _blend_masks(out, det, colors, mask_alpha)
    boxes = np.round(det.xyxy).astype(np.int32)
    h, w = out.shape[:2]
    lim = 4 * max(h, w)
    obb = det.obb
    rotated = np.zeros(len(det), bool)
    corners = np.zeros((len(det), 4, 2), np.int32)
    if obb is not None:
        rotated = np.isfinite(obb).all(axis=1)
        corners = np.round(np.clip(np.nan_to_num(obb_corners(obb)), -lim, lim)).astype(np.int32)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.4, min(out.shape[:2]) / 1200.0)
    for i in np.flatnonzero(finite):
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        cls, tid = int(det.class_ids[i]), int(det.track_ids[i])
        color = colors[i]
        if rotated[i]:
            cv2.polylines(out, [corners[i].reshape(-1, 1, 2)], True, color, thickness, cv2.LINE_AA)
        else:
            cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        if det.keypoints is not None:
            _draw_keypoints(out, det.keypoints[i], color, keypoint_threshold, thickness)
        name = names[cls] if 0 <= cls < len(names) else str(cls)
        label = f"{name} {det.scores[i]:.2f}" + (f" #{tid}" if tid >= 0 else "")
        (tw, th), base = cv2.getTextSize(label, font, scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty + base - 2), color, -1)
        cv2.putText(out, label, (x1 + 1, ty - 2), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
