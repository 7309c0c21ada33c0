"""AR overlay drawing: bounded trails, trail polylines, dashed predicted boxes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from perception.core.drawing import color_for
from perception.core.errors import InputImageError
from perception.core.overlay import (
    TrailHistory,
    draw_overlay,
    draw_predicted,
    draw_trails,
)
from perception.core.types import Detections

NS = 1_000_000_000


def _det(boxes, ids, stamp_ns: int, classes=None) -> Detections:
    n = len(boxes)
    return Detections.from_arrays(
        boxes, np.full(n, 0.9), classes if classes is not None else np.zeros(n), ids,
        stamp_ns=stamp_ns, frame_id="cam", image_size=(320, 240),
    )  # fmt: skip


def test_trails_are_bounded_per_track_and_in_number_of_tracks():
    trails = TrailHistory(max_points=5, max_tracks=8, max_age_s=1.0)
    for k in range(100):
        # two long-lived tracks and one new id per frame (a flood of short tracks)
        boxes = [[k, 10, k + 20, 30], [100, k, 120, k + 20], [50, 50, 60, 60]]
        trails.update(_det(boxes, [1, 2, 1000 + k], k * NS // 100))
        assert len(trails) <= 8
        assert all(len(trails.points(t)) <= 5 for t in trails.track_ids())
    assert trails.total_points() <= 8 * 5
    assert 1 in trails and 2 in trails  # recently updated tracks survive the flood
    pts = trails.points(1)
    np.testing.assert_allclose(pts[:, 0], [95 + 10, 96 + 10, 97 + 10, 98 + 10, 99 + 10])
    # Points up to a stamp: what an older image should show.
    assert len(trails.points(1, until_ns=97 * NS // 100)) == 3
    assert trails.points(12345).shape == (0, 2)


def test_trails_expire_ignore_late_points_and_reset_on_clock_jump():
    trails = TrailHistory(max_points=10, max_tracks=10, max_age_s=0.5)
    trails.update(_det([[0, 0, 10, 10]], [1], 10 * NS))
    trails.update(_det([[5, 0, 15, 10]], [1], 10 * NS + NS // 10))
    trails.update(_det([[9, 0, 19, 10]], [1], 10 * NS))  # late: ignored
    assert len(trails.points(1)) == 2
    trails.update(_det([[0, 0, 10, 10]], [2], 11 * NS))  # track 1 unseen for 0.9 s
    assert trails.track_ids() == [2]
    trails.update(_det([[0, 0, 10, 10]], [3], 1 * NS))  # clock went back 10 s
    assert trails.track_ids() == [3]
    # Untracked and non-finite rows never enter the history.
    trails.update(_det([[0, 0, 10, 10], [np.nan, 0, 1, 1]], [-1, 4], 1 * NS + 1))
    assert trails.track_ids() == [3]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_points": 1}, "max_points: expected an int >= 2"),
        ({"max_tracks": 0}, "max_tracks: expected an int >= 1"),
        ({"max_age_s": 0.0}, "max_age_s: expected a finite number > 0"),
    ],
)
def test_trail_history_rejects_bad_limits(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrailHistory(**kwargs)


def _pixels_of(image: np.ndarray, color) -> np.ndarray:
    """Drawn pixels (on a black image) whose hue is that of `color`: lines are
    anti-aliased, so compare the direction of the BGR vector, not its value."""
    c = np.array(color, np.float64)
    v = image.astype(np.float64)
    norm = np.linalg.norm(v, axis=2)
    cos = (v @ c) / np.maximum(norm * np.linalg.norm(c), 1e-9)
    return (norm > 40) & (cos > 0.98)


def test_draw_trails_draws_a_polyline_in_the_track_colour():
    trails = TrailHistory()
    for k in range(5):
        trails.update(_det([[20 + 40 * k, 100, 40 + 40 * k, 140]], [3], k * NS // 10))
    img = np.zeros((240, 320, 3), np.uint8)
    out = draw_trails(img, trails, thickness=1)
    assert not img.any(), "copy=True must not draw on the input"
    mask = _pixels_of(out, color_for(3))
    # the trail runs along y = 120 from x = 30 to x = 190
    assert mask[118:123, 30:190].any(axis=0).mean() > 0.95
    assert not mask[:100].any() and not mask[140:].any()
    # a trail cut at an earlier stamp is shorter
    short = draw_trails(img, trails, until_ns=NS // 10, thickness=1)
    assert not _pixels_of(short, color_for(3))[:, 100:].any()
    with pytest.raises(InputImageError, match=r"expected an \(H, W, 3\) BGR image"):
        draw_trails(np.zeros((10, 10), np.uint8), trails)


def test_draw_predicted_is_dashed_and_draw_overlay_combines_everything():
    img = np.zeros((240, 320, 3), np.uint8)
    det = _det([[50, 50, 250, 200]], [5], NS)
    dashed = draw_predicted(img, det, thickness=1, dash=8)
    mask = _pixels_of(dashed, color_for(5))
    top = mask[49:52, 50:250].any(axis=0)
    assert 0.3 < top.mean() < 0.7, f"a dashed edge covers about half its length, got {top.mean()}"
    assert not mask[60:190, 60:240].any(), "nothing inside the box"
    with pytest.raises(ValueError, match="dash: expected an int >= 1"):
        draw_predicted(img, det, dash=0)
    # absurd coordinates are clipped, not drawn dash by dash forever
    far = _det([[-1e9, -1e9, 1e9, 1e9]], [5], NS)
    draw_predicted(img, far)

    trails = TrailHistory()
    trails.update(_det([[10, 10, 30, 30]], [5], NS - NS // 10))
    trails.update(det)
    moved = _det([[70, 50, 270, 200]], [5], NS)
    out = draw_overlay(img, moved, ["thing"], trails=trails, dashed=det, until_ns=NS)
    assert not img.any()
    solid = _pixels_of(out, color_for(5))
    assert solid[49:52, 80:260].any(axis=0).all(), "the (moved) box's top edge is solid"
    left = solid[60:190, 49:52].any(axis=1).mean()
    assert 0.3 < left < 0.7, f"the source box's left edge is dashed, got {left}"
    # the trail from (20, 20) to (150, 125) passes through its midpoint
    assert solid[69:76, 81:90].any()
    # the plain detections are drawn exactly like drawing.draw_detections
    from perception.core.drawing import draw_detections

    np.testing.assert_array_equal(
        draw_overlay(img, moved, ["thing"]), draw_detections(img, moved, ["thing"])
    )
