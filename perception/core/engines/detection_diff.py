"""How far two runtimes' detections of one image are apart.

Used by the GPU check (bench/gpu_check.py) and the torch engine tests to
say "equal within 0.5 px": detections are paired class by class, closest
pairs first (largest corner difference, at most `match_px`), and the largest
corner difference over the pairs is reported. Closest-first matters when
NMS went differently in the two runs: a box missing from one run must not
be paired with its neighbour. A detection without a partner is *explained*
when rounding alone can remove it: its score lies within `score_band` of the
threshold, or a higher-scored box of its class (in either run) overlaps it
by at least the NMS threshold minus `iou_band`, so the suppression could go
either way. Anything else is a real difference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from perception.core.nms import box_iou
from perception.core.types import Detections

__all__ = ["DetectionDiff", "diff_detections"]


@dataclass(frozen=True)
class DetectionDiff:
    """Summary of one image (or, summed with `+`, of several)."""

    ref_count: int = 0
    got_count: int = 0
    matched: int = 0
    max_px: float = 0.0
    max_rel: float = 0.0  # largest corner difference over the longer side of the box
    max_score: float = 0.0
    unmatched_ref: int = 0
    unmatched_got: int = 0
    unexplained: int = 0

    def ok(self, px_tolerance: float) -> bool:
        """Every detection paired or explained, corners within the tolerance."""
        return self.unexplained == 0 and self.max_px <= px_tolerance

    def __add__(self, other: DetectionDiff) -> DetectionDiff:
        return DetectionDiff(
            self.ref_count + other.ref_count,
            self.got_count + other.got_count,
            self.matched + other.matched,
            max(self.max_px, other.max_px),
            max(self.max_rel, other.max_rel),
            max(self.max_score, other.max_score),
            self.unmatched_ref + other.unmatched_ref,
            self.unmatched_got + other.unmatched_got,
            self.unexplained + other.unexplained,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _explained(
    det: Detections,
    other: Detections,
    rows: np.ndarray,
    conf: float,
    iou: float,
    score_band: float,
    iou_band: float,
) -> int:
    """How many of `rows` (unpaired detections of `det`) are not explained."""
    bad = 0
    for r in rows:
        if abs(float(det.scores[r]) - conf) <= score_band:
            continue
        if iou_band > 0:
            near = False
            for group in (det, other):
                same = (group.class_ids == det.class_ids[r]) & (group.scores >= det.scores[r])
                if group is det:
                    same[r] = False
                if same.any():
                    overlap = box_iou(det.xyxy[r : r + 1], group.xyxy[same])[0]
                    near = near or bool(np.any(overlap >= iou - iou_band))
            if near:
                continue
        bad += 1
    return bad


def diff_detections(
    ref: Detections,
    got: Detections,
    *,
    conf: float,
    iou: float,
    score_band: float = 0.0,
    iou_band: float = 0.0,
    match_px: float = 16.0,
) -> DetectionDiff:
    """Pair `got` with `ref` (same class, greedy by `ref` score, nearest by
    largest corner difference up to `match_px`) and summarise; `conf`/`iou`
    are the thresholds both ran with."""
    n, m = len(ref), len(got)
    used = np.zeros(m, dtype=bool)
    pairs: list[tuple[int, int]] = []
    paired_ref = np.zeros(n, dtype=bool)
    if n and m:
        dist = np.abs(ref.xyxy[:, None, :] - got.xyxy[None, :, :]).max(axis=2)
        dist = np.where(ref.class_ids[:, None] == got.class_ids[None, :], dist, np.inf)
        for flat in np.argsort(dist, axis=None, kind="stable"):
            i, j = divmod(int(flat), m)
            if dist[i, j] > match_px:
                break
            if not paired_ref[i] and not used[j]:
                paired_ref[i] = used[j] = True
                pairs.append((i, j))
    max_px = max_rel = max_score = 0.0
    if pairs:
        ri = np.array([p[0] for p in pairs])
        gi = np.array([p[1] for p in pairs])
        corner = np.abs(ref.xyxy[ri] - got.xyxy[gi]).max(axis=1)
        side = np.maximum(ref.xyxy[ri, 2:] - ref.xyxy[ri, :2], 1.0).max(axis=1)
        max_px = float(corner.max())
        max_rel = float((corner / side).max())
        max_score = float(np.abs(ref.scores[ri] - got.scores[gi]).max())
    lone_ref = np.flatnonzero(~paired_ref)
    lone_got = np.flatnonzero(~used)
    unexplained = _explained(ref, got, lone_ref, conf, iou, score_band, iou_band) + _explained(
        got, ref, lone_got, conf, iou, score_band, iou_band
    )
    return DetectionDiff(
        n, m, len(pairs), max_px, max_rel, max_score, len(lone_ref), len(lone_got), unexplained
    )
