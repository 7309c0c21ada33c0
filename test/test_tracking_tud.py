"""Accuracy on real data: TUD-Campus and TUD-Stadtmitte as shipped in the
motmetrics wheel. The boxes of `test.txt` (ids dropped, score 1.0) are the
detections; the tracker output is scored against `gt.txt` at IoU 0.5.

Reference, boxmot 25.0.0 on the same detections (bench/bench_tracking.py):
ByteTrack Campus MOTA 0.5376 / IDF1 0.5813 / 2 IDsw, Stadtmitte 0.5683 /
0.6530 / 6; OcSort Campus 0.4986 / 0.5044 / 5, Stadtmitte 0.5692 / 0.5763 / 6.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.core.tracking import Tracker, TrackerConfig
from perception.core.tracking.motchallenge import frames_from_mot, read_mot

FPS = 25.0
IMAGE_SIZE = (640, 480)


def _motmetrics():
    """Import motmetrics 1.4 under numpy 2 (it still calls np.asfarray); the
    alias is set here, for the test only, never in library code."""
    if not hasattr(np, "asfarray"):
        np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)  # noqa: NPY201
    return pytest.importorskip(
        "motmetrics", reason="motmetrics not installed (see requirements/dev.txt)"
    )


def score(mm, gt: np.ndarray, hyp: np.ndarray) -> dict[str, float]:
    acc = mm.MOTAccumulator(auto_id=False)
    frames = sorted(set(gt[:, 0].astype(int)) | set(hyp[:, 0].astype(int)))
    for f in frames:
        g, h = gt[gt[:, 0] == f], hyp[hyp[:, 0] == f]
        dist = mm.distances.iou_matrix(g[:, 2:6], h[:, 2:6], max_iou=0.5)
        acc.update(g[:, 1].astype(int).tolist(), h[:, 1].astype(int).tolist(), dist, frameid=f)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], name="seq")
    return {
        "mota": float(summary["mota"].iloc[0]),
        "idf1": float(summary["idf1"].iloc[0]),
        "idsw": int(summary["num_switches"].iloc[0]),
    }


def run_sequence(seq: str, cfg: TrackerConfig) -> dict[str, float]:
    mm = _motmetrics()
    data = Path(mm.__file__).parent / "data" / seq
    if not (data / "gt.txt").is_file():
        pytest.skip(f"{data} not shipped with this motmetrics version")
    gt = read_mot(data / "gt.txt")
    dets = read_mot(data / "test.txt")
    tracker = Tracker(cfg)
    rows = []
    for f, det in frames_from_mot(dets, FPS, score=1.0, image_size=IMAGE_SIZE):
        out = tracker.update(det)
        for box, tid in zip(out.xywh.tolist(), out.track_ids.tolist(), strict=True):
            rows.append([f, tid, *box])
    hyp = np.asarray(rows, np.float64).reshape(-1, 6)
    return score(mm, gt, hyp)


# Floors: at least the better of boxmot ByteTrack and OcSort on each metric
# (MOTA/IDF1 rounded down to 4 digits), and no more ID switches than either.
@pytest.mark.parametrize(
    ("seq", "mota", "idf1", "idsw"),
    [
        ("TUD-Campus", 0.5376, 0.5813, 2),
        ("TUD-Stadtmitte", 0.5692, 0.6529, 6),
    ],
)
def test_tud_at_least_boxmot(seq: str, mota: float, idf1: float, idsw: int) -> None:
    res = run_sequence(seq, TrackerConfig())
    assert res["mota"] >= mota, res
    assert res["idf1"] >= idf1, res
    assert res["idsw"] <= idsw, res


def test_tud_observation_centric_parts_do_not_hurt() -> None:
    """Re-update and recovery on (default) score no worse than off."""
    for seq in ("TUD-Campus", "TUD-Stadtmitte"):
        on = run_sequence(seq, TrackerConfig())
        off = run_sequence(seq, TrackerConfig(observation_centric=False, recovery=False))
        assert on["mota"] >= off["mota"] and on["idf1"] >= off["idf1"], (seq, on, off)
