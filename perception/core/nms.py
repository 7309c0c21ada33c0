"""Non-maximum suppression in numpy: greedy, class-aware, vectorised per kept box.

Greedy NMS is sequential by nature; this implementation loops once per *kept*
box (not per candidate) and suppresses all lower-scored overlapping boxes of
the same group at once. Boxes of different groups (classes, images) never
suppress each other: they are shifted apart by a per-group coordinate offset,
computed in float64 so the shift costs no precision (a float32 offset of a
few hundred thousand pixels would).

Oriented boxes (`nms_rotated`) use Ultralytics' rule instead: probabilistic
IoU (`probiou`, the Bhattacharyya overlap of the boxes' Gaussians) and
Fast-NMS (a box is dropped when any higher-scored box of its class overlaps
it, suppressed or not), as its predictor does for OBB models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["batched_nms", "box_iou", "nms", "nms_rotated", "per_class_values", "probiou"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes `a` (N, 4) and `b` (M, 4); empty boxes give 0.
    Array-likes are accepted, an empty list as zero boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float | np.ndarray,
    groups: np.ndarray | None = None,
    max_keep: int | None = None,
) -> np.ndarray:
    """Greedy NMS; returns indices of kept boxes, highest score first.

    A box is suppressed when its IoU with a higher-scored kept box of the same
    group is strictly greater than the threshold (torchvision's rule).
    `iou_threshold` is a scalar or one value per box (the suppressing box's
    value applies, e.g. a per-class threshold). `groups` (int, per box) makes
    it class-aware/batched. Ties in score keep the lower index first.
    """
    n = int(scores.shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float64)
    if groups is not None:
        g = np.asarray(groups)[order].astype(np.float64)
        span = float(max(b[:, 2:].max() - min(b[:, :2].min(), 0.0), 0.0)) + 1.0
        b = b + (g * span)[:, None]
    thr = np.broadcast_to(np.asarray(iou_threshold, dtype=np.float64), (n,))
    thr = thr[order] if thr.strides[0] else thr
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    limit = n if max_keep is None else max(int(max_keep), 0)
    keep: list[int] = []
    idx = np.arange(n)
    while idx.size and len(keep) < limit:
        i = idx[0]
        keep.append(i)
        rest = idx[1:]
        if not rest.size:
            break
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        union = area[i] + area[rest] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        idx = rest[iou <= thr[i]]
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float | Mapping[int, float] | Sequence[float] | np.ndarray,
    *,
    image_ids: np.ndarray | None = None,
    agnostic: bool = False,
    max_det: int | None = None,
) -> np.ndarray:
    """Class-aware NMS over candidates of one or several images.

    Returns kept indices sorted by score (descending); with `image_ids`, at
    most `max_det` per image. `iou_threshold` may be one value or per class
    (mapping class id -> value, or a sequence indexed by class id).
    `agnostic=True` lets boxes of different classes suppress each other.
    """
    n = int(scores.shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    class_ids = np.asarray(class_ids)
    thr: float | np.ndarray
    if isinstance(iou_threshold, (int, float, np.floating)):
        thr = float(iou_threshold)
    else:
        thr = per_class_values(iou_threshold, class_ids, name="iou_threshold")
    groups: np.ndarray | None = None if agnostic else class_ids.astype(np.int64)
    if image_ids is not None:
        image_ids = np.asarray(image_ids).astype(np.int64)
        ncls = int(class_ids.max()) + 1 if not agnostic else 1
        groups = image_ids * ncls + (0 if groups is None else groups)
        keep = nms(boxes, scores, thr, groups)
        if max_det is not None:
            # keep is score-sorted: a stable per-image rank caps each image.
            img = image_ids[keep]
            order = np.argsort(img, kind="stable")
            starts = np.searchsorted(img[order], img[order], side="left")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size) - starts
            keep = keep[rank < max_det]
        return keep
    return nms(boxes, scores, thr, groups, max_keep=max_det)


def per_class_values(
    values: Mapping[int, float] | Sequence[float] | np.ndarray,
    class_ids: np.ndarray,
    *,
    name: str,
    default: float | None = None,
) -> np.ndarray:
    """Look up a per-class setting for each candidate (float64 array).

    A mapping may omit classes when `default` is given; a sequence must cover
    every class id that occurs.
    """
    if isinstance(values, Mapping):
        top = int(class_ids.max()) + 1 if class_ids.size else 0
        table = np.full(max(top, 1), np.nan if default is None else default, dtype=np.float64)
        for k, v in values.items():
            if int(k) < table.size:
                table[int(k)] = float(v)
        out: np.ndarray = table[class_ids]
        if np.isnan(out).any():
            missing = sorted(set(class_ids[np.isnan(out)].tolist()))
            raise ValueError(
                f"{name}: expected a value for every class, missing class ids {missing}"
            )
        return out
    table = np.asarray(values, dtype=np.float64).reshape(-1)
    if class_ids.size and int(class_ids.max()) >= table.size:
        raise ValueError(
            f"{name}: expected one value per class (>= {int(class_ids.max()) + 1}), "
            f"got {table.size}"
        )
    values_per_row: np.ndarray = table[class_ids]
    return values_per_row


def _covariance(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian of xywhr boxes (N, 5): covariance [[a, c], [c, b]]."""
    a = r[:, 2] ** 2 / 12.0
    b = r[:, 3] ** 2 / 12.0
    cos, sin = np.cos(r[:, 4]), np.sin(r[:, 4])
    return a * cos**2 + b * sin**2, a * sin**2 + b * cos**2, (a - b) * cos * sin


def probiou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """(N, M) probabilistic IoU of oriented boxes cx, cy, w, h, theta (radians)
    `a` (N, 5) and `b` (M, 5), as Ultralytics' ``batch_probiou``
    (https://arxiv.org/pdf/2106.06072v1.pdf); computed in float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 5)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 5)
    a1, b1, c1 = (v[:, None] for v in _covariance(a))
    a2, b2, c2 = (v[None, :] for v in _covariance(b))
    dx = a[:, None, 0] - b[None, :, 0]
    dy = a[:, None, 1] - b[None, :, 1]
    sa, sb, sc = a1 + a2, b1 + b2, c1 + c2
    det = sa * sb - sc**2
    t1 = (sa * dy**2 + sb * dx**2) / (det + eps) * 0.25
    t2 = (sc * (-dx) * dy) / (det + eps) * 0.5
    prod = np.clip(a1 * b1 - c1**2, 0, None) * np.clip(a2 * b2 - c2**2, 0, None)
    t3 = np.log(det / (4 * np.sqrt(prod) + eps) + eps) * 0.5
    bd = np.clip(t1 + t2 + t3, eps, 100.0)
    hd = np.sqrt(1.0 - np.exp(-bd) + eps)
    out: np.ndarray = 1.0 - hd
    return out


def nms_rotated(
    rboxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float | Mapping[int, float] | Sequence[float] | np.ndarray,
    *,
    agnostic: bool = False,
    max_det: int | None = None,
    block: int = 1024,
) -> np.ndarray:
    """Class-aware NMS of oriented boxes (N, 5) cx, cy, w, h, theta; returns
    kept indices, highest score first.

    Ultralytics' OBB rule: `probiou` and Fast-NMS, i.e. a box is suppressed
    when a higher-scored box of its class (any class with `agnostic`)
    overlaps it by more than the threshold, whether or not that box was
    itself suppressed. `iou_threshold` is one value or per class (the
    suppressing box's value applies). Ties in score keep the lower index
    first. Memory is `block` x N, not N x N.
    """
    n = int(scores.shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    class_ids = np.asarray(class_ids)
    order = np.argsort(-scores, kind="stable")
    r = np.asarray(rboxes, dtype=np.float64)[order]
    cls = class_ids[order]
    if isinstance(iou_threshold, (int, float, np.floating)):
        thr = np.full(n, float(iou_threshold))
    else:
        thr = per_class_values(iou_threshold, cls, name="iou_threshold")
    suppressed = np.zeros(n, dtype=bool)
    for start in range(0, n - 1, block):
        stop = min(start + block, n - 1)
        iou = probiou(r[start:stop], r[start + 1 :])  # rows i, columns j = start+1...
        later = np.arange(start + 1, n)[None, :] > np.arange(start, stop)[:, None]
        hit = later & (iou > thr[start:stop, None])
        if not agnostic:
            hit &= cls[start:stop, None] == cls[None, start + 1 :]
        suppressed[start + 1 :] |= hit.any(axis=0)
    keep = order[~suppressed]
    return keep if max_det is None else keep[: max(int(max_det), 0)]
