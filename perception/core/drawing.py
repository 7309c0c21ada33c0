"""Drawing detections and tracks on images (overlays for nodes, the CLI and demos).

Colours are a fixed function of the track id (or class id when untracked),
so an object keeps its colour from frame to frame and across cameras.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perception.core.types import Detections

__all__ = ["color_for", "draw_detections"]

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


def draw_detections(
    image: np.ndarray,
    det: Detections,
    class_names: Sequence[str] | None = None,
    *,
    thickness: int = 2,
    copy: bool = True,
) -> np.ndarray:
    """Boxes with "class score" (and "#id" when tracked) on a BGR uint8 image.

    Returns a new image unless `copy=False`, which draws in place (the caller
    owns the buffer). Boxes are clipped by OpenCV, so any coordinates are safe.
    """
    import cv2

    out = image.copy() if copy else image
    if len(det) == 0:
        return out
    names = class_names or ()
    finite = det.finite_mask()
    boxes = np.round(det.xyxy).astype(np.int32)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.4, min(out.shape[:2]) / 1200.0)
    for i in np.flatnonzero(finite):
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        cls, tid = int(det.class_ids[i]), int(det.track_ids[i])
        color = color_for(tid if tid >= 0 else cls)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        name = names[cls] if 0 <= cls < len(names) else str(cls)
        label = f"{name} {det.scores[i]:.2f}" + (f" #{tid}" if tid >= 0 else "")
        (tw, th), base = cv2.getTextSize(label, font, scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty + base - 2), color, -1)
        cv2.putText(out, label, (x1 + 1, ty - 2), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
