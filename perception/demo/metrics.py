"""Scores of a demo run against the scenario's ground truth: detection AP@0.5,
CLEAR-MOT / identity metrics (motmetrics), 3D centre and size error, latency
percentiles.

Pure numpy (motmetrics imported lazily); no ROS imports, so the maths can be
tested and reused without a running pipeline.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perception.core.nms import box_iou
from perception.eval.detection_metrics import average_precision

__all__ = [
    "CLASSES",
    "COCO_TO_DEMO",
    "Box2D",
    "average_precision",
    "centre_errors",
    "detection_ap",
    "latency_summary",
    "map_class",
    "size_errors",
    "tracking_metrics",
]

log = logging.getLogger(__name__)

CLASSES = ("car", "pedestrian", "cyclist")
"""The scenario's classes; detector classes are mapped onto them for scoring."""

COCO_TO_DEMO = {
    "car": "car",
    "truck": "car",
    "bus": "car",
    "person": "pedestrian",
    "pedestrian": "pedestrian",
    "bicycle": "cyclist",
    "motorcycle": "cyclist",
    "cyclist": "cyclist",
}


def map_class(name: str) -> str | None:
    """Detector class name -> scenario class (None: not scored)."""
    return COCO_TO_DEMO.get(name)


@dataclass(frozen=True)
class Box2D:
    """One 2D box of one frame: ground truth (score = visibility) or output."""

    xyxy: tuple[float, float, float, float]
    cls: str
    score: float = 1.0
    ident: str = ""


@dataclass
class _ClassAcc:
    scores: list[float] = field(default_factory=list)
    tp: list[bool] = field(default_factory=list)
    n_gt: int = 0


def _split_gt(gt: Sequence[Box2D], min_visibility: float) -> tuple[list[Box2D], list[Box2D]]:
    valid = [g for g in gt if g.score >= min_visibility]
    ignored = [g for g in gt if g.score < min_visibility]
    return valid, ignored


def detection_ap(
    frames: Iterable[tuple[Sequence[Box2D], Sequence[Box2D]]],
    min_visibility: float = 0.3,
    iou_threshold: float = 0.5,
    classes: Sequence[str] = CLASSES,
) -> dict[str, float]:
    """AP@iou per class and their mean over (ground truth, detections) frames.

    Ground truth below `min_visibility` is neither required nor penalised: a
    detection whose best match is such a box is left out of the ranking.
    Detections must already carry scenario class names (see `map_class`).
    """
    acc = {c: _ClassAcc() for c in classes}
    for gt, dets in frames:
        for c in classes:
            valid, ignored = _split_gt([g for g in gt if g.cls == c], min_visibility)
            mine = sorted((d for d in dets if d.cls == c), key=lambda d: -d.score)
            acc[c].n_gt += len(valid)
            if not mine:
                continue
            dxy = np.array([d.xyxy for d in mine])
            iou_v = box_iou(dxy, np.array([g.xyxy for g in valid]).reshape(-1, 4))
            iou_i = box_iou(dxy, np.array([g.xyxy for g in ignored]).reshape(-1, 4))
            used = np.zeros(len(valid), bool)
            for k, d in enumerate(mine):
                best, j = 0.0, -1
                if len(valid):
                    cand = np.where(used, -1.0, iou_v[k])
                    j = int(np.argmax(cand))
                    best = float(cand[j])
                if best >= iou_threshold:
                    used[j] = True
                    acc[c].scores.append(d.score)
                    acc[c].tp.append(True)
                elif iou_i.shape[1] and float(iou_i[k].max()) >= iou_threshold:
                    continue  # a barely visible object: neither hit nor false alarm
                else:
                    acc[c].scores.append(d.score)
                    acc[c].tp.append(False)
    out = {c: average_precision(a.scores, a.tp, a.n_gt) for c, a in acc.items()}
    present = [v for v in out.values() if not np.isnan(v)]
    out["mean"] = float(np.mean(present)) if present else float("nan")
    out.update({f"n_gt.{c}": float(a.n_gt) for c, a in acc.items()})
    return out


def _import_motmetrics() -> Any:
    if not hasattr(np, "asfarray"):  # motmetrics 1.4 calls np.asfarray, gone in numpy 2
        setattr(np, "asfarray", np.asarray)  # noqa: B010
    import motmetrics

    return motmetrics


def tracking_metrics(
    sequences: Mapping[str, Iterable[tuple[Sequence[Box2D], Sequence[Box2D]]]],
    min_visibility: float = 0.3,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """MOTA, IDF1, ID switches (class-agnostic) over several cameras' sequences
    of (ground truth, tracks) frames. Tracks overlapping only barely visible
    ground truth are removed before matching, as in the AP."""
    mm = _import_motmetrics()
    accs, names = [], []
    for name, frames in sequences.items():
        acc = mm.MOTAccumulator(auto_id=True)
        gt_ids: dict[str, int] = {}
        hyp_ids: dict[str, int] = {}
        for gt, hyp in frames:
            valid, ignored = _split_gt(gt, min_visibility)
            if ignored and hyp:
                hxy = np.array([h.xyxy for h in hyp])
                iv = box_iou(hxy, np.array([g.xyxy for g in valid]).reshape(-1, 4))
                ii = box_iou(hxy, np.array([g.xyxy for g in ignored]))
                best_v = iv.max(axis=1) if iv.shape[1] else np.zeros(len(hyp))
                keep = ~((ii.max(axis=1) >= iou_threshold) & (best_v < iou_threshold))
                hyp = [h for h, k in zip(hyp, keep, strict=True) if k]
            gxy = np.array([g.xyxy for g in valid], np.float64).reshape(-1, 4)
            hxy = np.array([h.xyxy for h in hyp], np.float64).reshape(-1, 4)
            dist = 1.0 - box_iou(gxy, hxy)
            dist[dist > 1.0 - iou_threshold] = np.nan
            gid = [gt_ids.setdefault(g.ident, len(gt_ids)) for g in valid]
            hid = [hyp_ids.setdefault(h.ident, len(hyp_ids)) for h in hyp]
            acc.update(gid, hid, dist)  # integer ids: string ids break motmetrics on pandas 3
        accs.append(acc)
        names.append(name)
    if not accs:
        return {"mota": float("nan"), "idf1": float("nan"), "id_switches": 0.0}
    mh = mm.metrics.create()
    with contextlib.redirect_stdout(io.StringIO()):  # motmetrics prints its timings
        summary = mh.compute_many(
            accs,
            names=names,
            metrics=["mota", "idf1", "num_switches", "num_false_positives", "num_misses",
                     "num_objects", "mostly_tracked"],
            generate_overall=True,
        )  # fmt: skip
    row = summary.loc["OVERALL"]
    return {
        "mota": float(row["mota"]),
        "idf1": float(row["idf1"]),
        "id_switches": float(row["num_switches"]),
        "false_positives": float(row["num_false_positives"]),
        "misses": float(row["num_misses"]),
        "gt_objects": float(row["num_objects"]),
        "mostly_tracked": float(row["mostly_tracked"]),
    }


def _rows(a: np.ndarray, cols: int) -> np.ndarray:
    arr = np.asarray(a, np.float64)
    return arr.reshape(-1, arr.shape[-1] if arr.ndim == 2 else cols)


def _greedy_pairs(
    gt: np.ndarray, out: np.ndarray, max_distance: float
) -> list[tuple[int, int, float]]:
    """(output row, gt row, centre distance) pairs, closest first, each row
    used once, within `max_distance` (centres: the first three columns)."""
    if len(out) == 0 or len(gt) == 0:
        return []
    d = np.linalg.norm(out[:, None, :3] - gt[None, :, :3], axis=2)
    used_o, used_g = set(), set()
    pairs = []
    for flat in np.argsort(d, axis=None):
        i, j = divmod(int(flat), d.shape[1])
        if d[i, j] > max_distance:
            break
        if i in used_o or j in used_g:
            continue
        used_o.add(i)
        used_g.add(j)
        pairs.append((i, j, float(d[i, j])))
    return pairs


def centre_errors(
    frames: Iterable[tuple[np.ndarray, np.ndarray]], max_distance: float = 2.0
) -> dict[str, float]:
    """Distances between output 3D centres and the nearest ground-truth centre
    (greedy, closest pairs first, within `max_distance` m) over (gt (N,3),
    outputs (M,3)) frames; unmatched outputs are counted, not scored. Rows
    may carry more columns after the centre (sizes: see `size_errors`)."""
    errors: list[float] = []
    unmatched = 0
    total = 0
    for gt, out in frames:
        gt, out = _rows(gt, 3), _rows(out, 3)
        total += len(out)
        pairs = _greedy_pairs(gt, out, max_distance)
        errors += [d for _, _, d in pairs]
        unmatched += len(out) - len(pairs)
    arr = np.asarray(errors)
    return {
        "median_m": float(np.median(arr)) if len(arr) else float("nan"),
        "p95_m": float(np.percentile(arr, 95)) if len(arr) else float("nan"),
        "matched": float(len(arr)),
        "unmatched": float(unmatched),
        "objects": float(total),
    }


def _extents(sizes: np.ndarray) -> np.ndarray:
    """(N, 3) box sizes -> (longer horizontal, shorter horizontal, height):
    the same box whichever horizontal axis its yaw calls the length."""
    return np.stack(
        (np.maximum(sizes[:, 0], sizes[:, 1]), np.minimum(sizes[:, 0], sizes[:, 1]), sizes[:, 2]),
        axis=1,
    )


def size_errors(
    frames: Iterable[tuple[np.ndarray, np.ndarray]], max_distance: float = 2.0
) -> dict[str, float]:
    """Size error of the 3D boxes matched as in `centre_errors` over (gt (N,6),
    outputs (M,6)) frames of (centre, size) rows: the norm of the difference
    of (longer horizontal, shorter horizontal, height) extents, and the
    median absolute error of each extent."""
    errors: list[float] = []
    diffs: list[np.ndarray] = []
    for gt, out in frames:
        gt, out = _rows(gt, 6), _rows(out, 6)
        if gt.shape[1] < 6 or out.shape[1] < 6:
            raise ValueError(
                f"size_errors: expected (centre, size) rows of 6 values, got {gt.shape[1]} "
                f"and {out.shape[1]}"
            )
        pairs = _greedy_pairs(gt, out, max_distance)
        if not pairs:
            continue
        i = np.array([p[0] for p in pairs])
        j = np.array([p[1] for p in pairs])
        d = _extents(out[i, 3:6]) - _extents(gt[j, 3:6])
        diffs.append(np.abs(d))
        errors += np.linalg.norm(d, axis=1).tolist()
    arr = np.asarray(errors)
    per = np.concatenate(diffs) if diffs else np.zeros((0, 3))
    nan = float("nan")
    return {
        "median_m": float(np.median(arr)) if len(arr) else nan,
        "p95_m": float(np.percentile(arr, 95)) if len(arr) else nan,
        "length_median_m": float(np.median(per[:, 0])) if len(per) else nan,
        "width_median_m": float(np.median(per[:, 1])) if len(per) else nan,
        "height_median_m": float(np.median(per[:, 2])) if len(per) else nan,
        "matched": float(len(arr)),
    }


def latency_summary(samples: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """p50/p95 (ms) per stage."""
    out = {}
    for stage, vals in samples.items():
        a = np.asarray(vals, np.float64)
        a = a[np.isfinite(a)]
        if len(a):
            out[stage] = {
                "p50": float(np.percentile(a, 50)),
                "p95": float(np.percentile(a, 95)),
                "n": float(len(a)),
            }
    return out
