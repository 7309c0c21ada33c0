"""Tracker behaviour: state machine with ages in seconds, bad input rejected
before any state change, clock resets, class consistency, multi-camera."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from perception.core.tracking import (
    MultiCameraTracker,
    Tracker,
    TrackerConfig,
    TrackState,
)
from perception.core.types import Detections

MS = 1_000_000


def frame(boxes, stamp_ms: float, scores=None, classes=None, frame_id: str = "cam") -> Detections:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    return Detections.from_arrays(
        boxes,
        np.full(n, 0.9) if scores is None else scores,
        np.zeros(n) if classes is None else classes,
        stamp_ns=round(stamp_ms * MS),
        frame_id=frame_id,
    )


BOX = [100.0, 100.0, 140.0, 180.0]
# Observed boxes only: most tests check when tracks appear in the output.
NO_COAST = TrackerConfig(output_lost_s=0.0)


def moved(dx: float) -> list[float]:
    return [BOX[0] + dx, BOX[1], BOX[2] + dx, BOX[3]]


def snapshot(t: Tracker) -> list:
    return [(i.track_id, i.state, i.xyxy, i.hits) for i in t.tracks()]


# ---------------------------------------------------------------- life cycle
def test_state_machine_with_ages_in_seconds() -> None:
    cfg = NO_COAST.replace(min_hits=2, max_lost_s=0.5, confirm_first_frame=False)
    t = Tracker(cfg)
    out = t.update(frame([BOX], 0))
    assert len(out) == 0 and t.tracks()[0].state is TrackState.TENTATIVE
    out = t.update(frame([moved(2)], 100))
    assert out.track_ids.tolist() == [1]
    info = t.tracks()[0]
    assert info.state is TrackState.CONFIRMED and info.age_s == pytest.approx(0.1)
    out = t.update(frame([], 200))
    assert len(out) == 0
    info = t.tracks()[0]
    assert info.state is TrackState.LOST and info.time_since_update_s == pytest.approx(0.1)
    # Still lost at 0.5 s after the last observation, removed after that.
    t.update(frame([], 600))
    assert t.tracks()[0].state is TrackState.LOST
    t.update(frame([], 601))
    assert t.tracks() == [] and t.stats.tracks_removed == 1


def test_lost_track_is_found_again_with_its_id() -> None:
    t = Tracker(TrackerConfig(max_lost_s=1.0))
    for k in range(5):
        t.update(frame([moved(3 * k)], 40 * k))
    for k in range(5, 12):  # occluded for 0.28 s
        t.update(frame([], 40 * k))
    out = t.update(frame([moved(3 * 12)], 40 * 12))
    assert out.track_ids.tolist() == [1]
    assert t.tracks()[0].state is TrackState.CONFIRMED


def test_stream_pause_longer_than_max_lost_does_not_revive_tracks() -> None:
    t = Tracker(TrackerConfig(max_lost_s=1.0))
    for k in range(5):
        t.update(frame([BOX], 40 * k))
    out = t.update(frame([BOX], 160 + 3000))  # same place, 3 s later
    assert out.track_ids.tolist() == [] and [i.track_id for i in t.tracks()] == [2]
    assert t.stats.tracks_removed == 1


def test_unmatched_tentative_track_is_removed() -> None:
    t = Tracker(TrackerConfig(confirm_first_frame=False))
    t.update(frame([BOX], 0))
    t.update(frame([[400, 400, 440, 480]], 40))
    assert [i.track_id for i in t.tracks()] == [2]
    assert t.stats.tracks_removed == 1


def test_first_frame_confirmed_and_low_scores_only_extend() -> None:
    t = Tracker(TrackerConfig())
    out = t.update(frame([BOX, [300, 100, 340, 180]], 0, scores=[0.9, 0.3]))
    assert out.track_ids.tolist() == [1]  # the low-score box starts nothing
    out = t.update(frame([moved(2), [300, 100, 340, 180]], 40, scores=[0.3, 0.3]))
    assert out.track_ids.tolist() == [1]  # ...but a low-score box extends a track
    assert out.scores.tolist() == pytest.approx([0.3])


def test_lost_track_coasts_at_its_prediction_inside_the_image() -> None:
    cfg = TrackerConfig(output_lost_s=0.05)
    t = Tracker(cfg)
    size = (640, 480)
    for k in range(15):  # 100 px/s to the right
        t.update(
            Detections.from_arrays(
                [moved(4 * k)], [0.9], [0], stamp_ns=40 * k * MS, frame_id="cam", image_size=size
            )
        )
    out = t.update(Detections.empty(stamp_ns=600 * MS, frame_id="cam", image_size=size))
    assert out.track_ids.tolist() == [1]
    # At the predicted box (x 160), ahead of the last observed one (x 156).
    np.testing.assert_allclose(out.xyxy[0], moved(60), atol=1.5)
    assert (
        len(t.update(Detections.empty(stamp_ns=660 * MS, frame_id="cam", image_size=size))) == 0
    )  # 0.06 s > 0.05 s
    # A box at the image border is leaving: not coasted.
    t2 = Tracker(cfg)
    edge = [600.0, 100.0, 640.0, 180.0]
    t2.update(Detections.from_arrays([edge], [0.9], [0], stamp_ns=0, frame_id="c", image_size=size))
    t2.update(
        Detections.from_arrays(
            [[602.0, 100.0, 642.0, 180.0]],
            [0.9],
            [0],
            stamp_ns=40 * MS,
            frame_id="c",
            image_size=size,
        )
    )
    assert len(t2.update(Detections.empty(stamp_ns=80 * MS, frame_id="c", image_size=size))) == 0


def test_min_hits_one_outputs_new_tracks_at_once() -> None:
    t = Tracker(TrackerConfig(min_hits=1))
    t.update(frame([BOX], 0))
    out = t.update(frame([moved(1), [400, 400, 440, 480]], 40))
    assert sorted(out.track_ids.tolist()) == [1, 2]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "bad",
    [
        [np.nan, 100, 140, 180],
        [100, np.inf, 140, 180],
        [100, 100, 100, 180],  # zero width
        [100, 100, 140, 90],  # negative height
    ],
)
def test_bad_rows_are_dropped_before_tracking(bad: list) -> None:
    t = Tracker()
    t.update(frame([BOX], 0))
    out = t.update(frame([bad, moved(2)], 40))
    assert out.track_ids.tolist() == [1]
    np.testing.assert_allclose(out.xyxy[0], moved(2), atol=1.0)
    assert t.stats.rows_rejected == 1
    assert len(t) == 1


def test_nan_score_row_is_dropped() -> None:
    t = Tracker()
    out = t.update(frame([BOX, moved(100)], 0, scores=[np.nan, 0.9]))
    assert out.track_ids.tolist() == [1]
    assert t.stats.rows_rejected_nonfinite == 1


@pytest.mark.parametrize("stamp_ms", [80, 60])  # duplicate, slightly older
def test_duplicate_and_out_of_order_frames_change_nothing(stamp_ms: int, caplog) -> None:
    t = Tracker()
    t.update(frame([BOX], 0))
    t.update(frame([moved(2)], 40))
    t.update(frame([moved(4)], 80))
    before = snapshot(t)
    with caplog.at_level(logging.WARNING):
        out = t.update(frame([moved(50), [400, 400, 440, 480]], stamp_ms))
    assert len(out) == 0
    assert snapshot(t) == before and t.last_stamp_ns == 80 * MS
    assert t.stats.frames_rejected == 1 and t.stats.frames == 3
    assert "rejected frame" in caplog.text
    # The next good frame continues the same track.
    assert t.update(frame([moved(6)], 120)).track_ids.tolist() == [1]


def test_wrong_frame_id_is_rejected() -> None:
    t = Tracker(frame_id="left")
    before = snapshot(t)
    out = t.update(frame([BOX], 0, frame_id="right"))
    assert len(out) == 0 and snapshot(t) == before
    assert t.stats.frames_rejected_frame_id == 1


def test_empty_frames_age_tracks() -> None:
    t = Tracker(NO_COAST.replace(max_lost_s=0.1))
    t.update(frame([BOX], 0))
    assert len(t.update(frame([], 50))) == 0
    t.update(frame(np.zeros((0, 4)), 200))
    assert len(t) == 0 and t.stats.frames == 3


def test_stamp_going_back_resets_tracks_with_warning(caplog) -> None:
    t = Tracker(TrackerConfig(reorder_tolerance_s=0.5))
    for k in range(10):
        t.update(frame([moved(k)], 1000 + 40 * k))
    assert t.tracks()[0].track_id == 1
    with caplog.at_level(logging.WARNING):
        out = t.update(frame([[300, 300, 340, 380]], 0))  # simulator restarted at 0
    assert "reset" in caplog.text
    assert t.stats.resets == 1
    # Old track gone; the new one gets a fresh id (never reused) and is
    # confirmed at once, as on a first frame.
    assert out.track_ids.tolist() == [2]
    assert [i.track_id for i in t.tracks()] == [2]


def test_non_detections_input_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="Detections"):
        Tracker().update(np.zeros((1, 4)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TrackerConfig"):
        Tracker({"high_score": 0.5})  # type: ignore[arg-type]


# ---------------------------------------------------------------- classes
def test_tracks_never_change_class() -> None:
    t = Tracker(NO_COAST)
    t.update(frame([BOX], 0, classes=[1]))
    out = t.update(frame([moved(1)], 40, classes=[2]))
    assert len(out) == 0  # the class-2 box starts a tentative track instead
    out = t.update(frame([moved(2)], 80, classes=[1]))
    assert out.track_ids.tolist() == [1]
    assert {i.track_id: i.class_id for i in t.tracks()}[1] == 1


def test_class_agnostic_mode_matches_across_classes() -> None:
    t = Tracker(TrackerConfig(class_consistent=False))
    t.update(frame([BOX], 0, classes=[1]))
    out = t.update(frame([moved(1)], 40, classes=[2]))
    assert out.track_ids.tolist() == [1] and out.class_ids.tolist() == [2]


def test_overlapping_objects_of_two_classes_keep_their_ids() -> None:
    t = Tracker()
    for k in range(20):
        out = t.update(frame([moved(k), moved(k + 1)], 40 * k, classes=[0, 1]))
    assert dict(zip(out.class_ids.tolist(), out.track_ids.tolist(), strict=True)) == {0: 1, 1: 2}


# ---------------------------------------------------------------- config at run time
def test_thresholds_change_at_run_time() -> None:
    t = Tracker(NO_COAST)
    t.update(frame([BOX], 0))
    t.set_config(t.config.replace(high_score=0.95, new_track_score=0.95, low_score=0.95))
    out = t.update(frame([moved(1), [400, 400, 440, 480]], 40))
    assert len(out) == 0 and len(t) == 1  # 0.9 is now below every threshold


# ---------------------------------------------------------------- cameras
def test_multi_camera_ids_and_clocks_are_per_camera() -> None:
    m = MultiCameraTracker()
    a = m.update(frame([BOX], 1000, frame_id="left"))
    b = m.update(frame([BOX, moved(200)], 0, frame_id="right"))  # other clock
    assert a.track_ids.tolist() == [1] and b.track_ids.tolist() == [1, 2]
    assert sorted(m.frame_ids) == ["left", "right"]
    m.update(frame([moved(1)], 1040, frame_id="left"))
    m.update(frame([moved(1)], 1040, frame_id="left"))  # duplicate on left only
    assert m.stats()["left"].frames_rejected_duplicate == 1
    assert m.stats()["right"].frames_rejected == 0
    m.set_config(TrackerConfig(max_lost_s=3.0))
    assert m.tracker("right").config.max_lost_s == 3.0
    m.reset("left")
    assert len(m.tracker("left")) == 0 and len(m.tracker("right")) == 2
