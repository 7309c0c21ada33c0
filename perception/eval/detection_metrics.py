"""Detection AP@IoU (VOC style: area under the interpolated precision-recall
curve, all points), per class over a set of images.

Why here and not a dependency: pycocotools/torchmetrics are not installed on
the targets, and the demo report and the default-detector training both need
the same, small, well-defined metric. Ground truth may carry "ignore" boxes
(objects too small or too occluded to demand): a detection matched to one of
them is neither a true nor a false positive, as VOC's "difficult" flag.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from perception.core.nms import box_iou

__all__ = ["average_precision", "average_precision_per_class", "match_detections"]

Pred = tuple[np.ndarray, np.ndarray, np.ndarray]  # xyxy (N,4), scores (N,), class ids (N,)
Truth = tuple[np.ndarray, ...]  # xyxy (M,4), class ids (M,)[, ignore xyxy (K,4)]


def match_detections(
    det_xyxy: np.ndarray,
    det_scores: np.ndarray,
    gt_xyxy: np.ndarray,
    iou_threshold: float = 0.5,
    ignore_xyxy: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy matching of one image and one class, highest score first.

    Returns one label per detection: 1 true positive, 0 false positive,
    -1 ignored (no free GT match but IoU >= threshold with an ignore box).
    A GT box is matched at most once (later duplicates are false positives).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold: expected in (0, 1], got {iou_threshold}")
    det_xyxy = np.asarray(det_xyxy, np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    if len(det_scores) != len(det_xyxy):
        raise ValueError(f"det_scores: expected {len(det_xyxy)} values, got {len(det_scores)}")
    gt_xyxy = np.asarray(gt_xyxy, np.float64).reshape(-1, 4)
    labels = np.zeros(len(det_xyxy), np.int8)
    if len(det_xyxy) == 0:
        return labels
    order = np.argsort(-det_scores, kind="stable")
    ious = box_iou(det_xyxy, gt_xyxy)
    ign = (
        box_iou(det_xyxy, ignore_xyxy).max(axis=1)
        if ignore_xyxy is not None and len(ignore_xyxy)
        else np.zeros(len(det_xyxy))
    )
    taken = np.zeros(len(gt_xyxy), bool)
    for d in order:
        if len(gt_xyxy):
            cand = np.where(taken, -1.0, ious[d])
            g = int(np.argmax(cand))
            if cand[g] >= iou_threshold:
                taken[g] = True
                labels[d] = 1
                continue
        if ign[d] >= iou_threshold:
            labels[d] = -1
    return labels


def average_precision(scores: npt.ArrayLike, tp: npt.ArrayLike, n_gt: int) -> float:
    """VOC all-point AP from pooled detections: scores, TP flags (1/0), and the
    number of GT boxes. NaN when there is no GT (undefined, not zero)."""
    if n_gt < 0:
        raise ValueError(f"n_gt: expected >= 0, got {n_gt}")
    if n_gt == 0:
        return float("nan")
    score = np.asarray(scores, np.float64).reshape(-1)
    flag = np.asarray(tp, np.float64).reshape(-1)
    if len(flag) != len(score):
        raise ValueError(f"tp: expected {len(score)} flags, got {len(flag)}")
    if len(score) == 0:
        return 0.0
    flag = flag[np.argsort(-score, kind="stable")]
    ctp = np.cumsum(flag)
    cfp = np.cumsum(1.0 - flag)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def average_precision_per_class(
    predictions: Sequence[Pred],
    truths: Sequence[Truth],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """(num_classes,) AP@iou_threshold over images; NaN for classes without
    GT. `predictions[i]` = (xyxy, scores, class_ids) of image i; `truths[i]`
    = (xyxy, class_ids) or (xyxy, class_ids, ignore_xyxy) where ignore boxes
    (any class) excuse the detections that overlap them."""
    if len(predictions) != len(truths):
        raise ValueError(
            f"truths: expected one per prediction ({len(predictions)}), got {len(truths)}"
        )
    scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    flags: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    n_gt = np.zeros(num_classes, np.int64)
    for (dx, ds, dc), truth in zip(predictions, truths, strict=True):
        gx, gc = truth[0], np.asarray(truth[1]).reshape(-1)
        ignore = truth[2] if len(truth) > 2 else None
        dc = np.asarray(dc).reshape(-1)
        dx = np.asarray(dx, np.float64).reshape(-1, 4)
        ds = np.asarray(ds, np.float64).reshape(-1)
        gx = np.asarray(gx, np.float64).reshape(-1, 4)
        for c in range(num_classes):
            dm, gm = dc == c, gc == c
            n_gt[c] += int(gm.sum())
            if not dm.any():
                continue
            labels = match_detections(dx[dm], ds[dm], gx[gm], iou_threshold, ignore)
            keep = labels >= 0
            scores[c].append(ds[dm][keep])
            flags[c].append(labels[keep].astype(np.float64))
    out = np.empty(num_classes, np.float64)
    for c in range(num_classes):
        s = np.concatenate(scores[c]) if scores[c] else np.zeros(0)
        f = np.concatenate(flags[c]) if flags[c] else np.zeros(0)
        out[c] = average_precision(s, f, int(n_gt[c]))
    return out
