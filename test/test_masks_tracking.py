"""Masks, keypoints and oriented boxes ride along the 2D tracker's output rows
(the matched detection's, as observed; lost tracks coast without them)."""

from __future__ import annotations

import numpy as np

from perception.core.tracking import Tracker, TrackerConfig
from perception.core.types import Detections, InstanceMasks

MS = 1_000_000
SIZE = (320, 240)


def seg_frame(boxes: list[list[float]], stamp_ms: float) -> Detections:
    """Detections whose mask i is the filled box i, keypoint i at its corners
    and oriented box i its box rotated by 0.1 * i."""
    xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(xyxy)
    dense = np.zeros((n, SIZE[1], SIZE[0]), bool)
    for i, (x1, y1, x2, y2) in enumerate(xyxy.astype(int)):
        dense[i, y1:y2, x1:x2] = True
    kps = np.stack([xyxy[:, [0, 1]], xyxy[:, [2, 3]]], axis=1)
    kps = np.concatenate((kps, np.full((n, 2, 1), 0.9, np.float32)), axis=2)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    obb = np.concatenate((xyxy[:, :2] + wh / 2, wh, 0.1 * np.arange(n)[:, None]), axis=1)
    return Detections.from_arrays(
        xyxy,
        np.full(n, 0.9),
        np.zeros(n),
        stamp_ns=round(stamp_ms * MS),
        frame_id="cam",
        image_size=SIZE,
        masks=InstanceMasks.from_dense(dense),
        keypoints=kps,
        obb=obb,
    )


def test_tracks_carry_the_matched_detections_extras_in_input_order() -> None:
    t = Tracker(TrackerConfig(output_lost_s=0.0))
    boxes = [[10, 10, 50, 90], [200, 50, 260, 120]]
    t.update(seg_frame(boxes, 0))
    # second frame: rows swapped and moved a little; a bad row in between
    moved = [[202, 51, 262, 121], [0, 0, 0, 0], [11, 10, 51, 90]]
    det = seg_frame(moved, 100)
    out = t.update(det)
    assert out.track_ids.tolist() == [2, 1]  # input order, the empty box dropped
    src = np.array([0, 2])
    assert out.masks is not None and out.masks.equals(det.masks[src])
    assert out.keypoints is not None and np.array_equal(out.keypoints, det.keypoints[src])
    assert out.obb is not None and np.array_equal(out.obb, det.obb[src])


def test_lost_tracks_coast_without_mask_or_keypoints() -> None:
    t = Tracker(TrackerConfig(output_lost_s=0.5))
    t.update(seg_frame([[10, 10, 50, 90], [200, 50, 260, 120]], 0))
    out = t.update(seg_frame([[11, 10, 51, 90]], 100))
    assert out.track_ids.tolist() == [1, 2]  # track 2 coasts at its predicted box
    assert out.masks is not None and out.masks.areas.tolist()[1] == 0
    assert out.masks.areas[0] > 0
    assert out.keypoints is not None
    assert np.isnan(out.keypoints[1, :, :2]).all() and (out.keypoints[1, :, 2] == 0).all()
    assert out.obb is not None
    cx, cy = (out.xyxy[1, :2] + out.xyxy[1, 2:]) / 2
    np.testing.assert_allclose(out.obb[1, :2], [cx, cy], atol=1e-4)
    assert out.obb[1, 4] == 0.0


def test_box_only_detections_stay_box_only() -> None:
    t = Tracker()
    det = Detections.from_arrays([[10, 10, 50, 90]], [0.9], [0], stamp_ns=1, frame_id="cam")
    out = t.update(det)
    assert len(out) == 1 and out.masks is None and out.keypoints is None and out.obb is None
