"""OverlayCompositor without ROS: which image gets which tracks / 3D objects in
matched and predicted mode, bounded queues and their counters, tracks at a
time, run-time settings, drawing; images are plain strings until drawn."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from perception.core.camera import CameraModel
from perception.core.fusion.types import Objects3D
from perception.core.overlay_pipeline import (
    COUNTERS,
    MAX_CLASS_NAMES,
    OverlayCompositor,
    OverlayFrame,
    OverlaySettings,
)
from perception.core.prediction import PredictionError
from perception.core.types import Detections

NS = 1_000_000_000
W, H, F = 320, 240, 250.0
T_OPT_FROM_FLU = np.array(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def _tracks(stamp_ns: int, x: float = 40.0, track_id: int = 1) -> Detections:
    return Detections.from_arrays(
        [(x, 60.0, x + 60.0, 180.0)], [0.9], [0], [track_id], stamp_ns=stamp_ns, frame_id="cam"
    )


def _objects(stamp_ns: int) -> Objects3D:
    return Objects3D.from_arrays(
        [[4.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]], track_ids=[5], stamp_ns=stamp_ns, frame_id="base"
    )


def _comp(warnings: list[tuple[str, str]] | None = None, **kw: Any) -> OverlayCompositor[str]:
    settings = OverlaySettings(**kw)
    warn = None if warnings is None else (lambda k, m: warnings.append((k, m)))
    return OverlayCompositor(settings, ["person"], warn=warn)


def _stamps(frames: list[OverlayFrame[str]]) -> list[int]:
    return [f.stamp_ns for f in frames]


# ------------------------------------------------------------------ matched


def test_matched_image_and_tracks_in_either_order() -> None:
    c = _comp()
    t0 = 10 * NS
    assert c.add_image(t0, "img0") == []
    (f,) = c.add_tracks(_tracks(t0))
    assert (f.image, f.stamp_ns, f.objects, f.dashed) == ("img0", t0, None, None)
    assert f.tracks is not None and f.tracks.stamp_ns == t0
    assert c.add_tracks(_tracks(t0 + NS // 10)) == []
    (f,) = c.add_image(t0 + NS // 10, "img1")
    assert f.image == "img1"
    assert c.pending() == dict.fromkeys(("image_buffer", "track_buffer", "objects_buffer",
                                         "pending_3d"), 0)  # fmt: skip
    assert c.counters["images_received"] == 2 and c.counters["tracks_received"] == 2


def test_matching_honours_the_stamp_tolerance() -> None:
    c = _comp(stamp_tolerance_s=0.005)
    t0 = 10 * NS
    c.add_image(t0, "a")
    (f,) = c.add_tracks(_tracks(t0 + 3_000_000))
    assert f.image == "a"
    c.add_image(t0 + NS, "b")
    assert c.add_tracks(_tracks(t0 + NS + 9_000_000)) == []  # 9 ms: beyond 5 ms
    assert c.counters["unmatched_images"] == 1


def test_queues_are_bounded_and_every_drop_is_counted() -> None:
    c = _comp(buffer_size=4)
    t0 = 100 * NS
    for k in range(40):
        assert c.add_image(t0 + k * NS // 30, f"i{k}") == []
        assert c.pending()["image_buffer"] <= 4
    assert c.counters["unmatched_images"] == 36
    # tracks of the newest: the three older images can no longer be matched
    (f,) = c.add_tracks(_tracks(t0 + 39 * NS // 30))
    assert f.image == "i39" and c.counters["unmatched_images"] == 39
    for k in range(30):
        assert c.add_tracks(_tracks(200 * NS + k * NS // 30)) == []
        assert c.pending()["track_buffer"] <= 4
    assert c.counters["unmatched_tracks"] == 26
    (f,) = c.add_image(200 * NS + 29 * NS // 30, "late")
    assert f.image == "late" and c.counters["unmatched_tracks"] == 29


def test_matched_frames_wait_for_their_objects_or_go_out_without() -> None:
    c = _comp(buffer_size=3, boxes3d=True)
    t0 = 20 * NS
    # objects first, then tracks and image: complete at once
    assert c.add_objects(_objects(t0)) == []
    c.add_tracks(_tracks(t0))
    (f,) = c.add_image(t0, "a")
    assert f.objects is not None and f.objects.stamp_ns == t0
    # objects after the image: the frame waits
    t1 = t0 + NS // 10
    c.add_tracks(_tracks(t1))
    assert c.add_image(t1, "b") == [] and c.pending()["pending_3d"] == 1
    (f,) = c.add_objects(_objects(t1))
    assert f.image == "b" and f.objects is not None
    # objects that never come: at most 3 frames wait, older ones go out plain
    t2 = t0 + NS
    out: list[OverlayFrame[str]] = []
    for k in range(6):
        c.add_tracks(_tracks(t2 + k * NS // 30))
        out += c.add_image(t2 + k * NS // 30, f"c{k}")
        assert c.pending()["pending_3d"] <= 3
    assert [f.image for f in out] == ["c0", "c1", "c2"]
    assert all(f.objects is None and f.tracks is not None for f in out)
    assert c.counters["objects_missing"] == 3
    # objects of the newest: the two older cannot get theirs any more
    out = c.add_objects(_objects(t2 + 5 * NS // 30))
    assert [f.image for f in out] == ["c3", "c4", "c5"]
    assert [f.objects is not None for f in out] == [False, False, True]
    assert c.counters["objects_missing"] == 5 and c.pending()["pending_3d"] == 0


def test_objects_without_images_are_bounded_and_counted() -> None:
    c = _comp(buffer_size=3, boxes3d=True)
    for k in range(10):
        assert c.add_objects(_objects(30 * NS + k * NS // 30)) == []
        assert c.pending()["objects_buffer"] <= 3
    assert c.counters["unmatched_objects"] == 7 and c.counters["objects_received"] == 10


def test_without_boxes3d_objects_are_only_counted() -> None:
    c = _comp()
    assert c.add_objects(_objects(NS)) == []
    c.add_tracks(_tracks(NS))
    (f,) = c.add_image(NS, "a")
    assert f.objects is None and c.pending()["objects_buffer"] == 0


# ---------------------------------------------------------------- predicted


def _moving(c: OverlayCompositor[str], t0: int) -> None:
    for k in range(10):  # 100 px/s to the right at 10 Hz; newest x1 = 110 at t0 + 0.9 s
        assert c.add_tracks(_tracks(t0 + k * NS // 10, 20.0 + 10.0 * k)) == []


def test_predicted_mode_moves_the_newest_tracks_to_each_image() -> None:
    warnings: list[tuple[str, str]] = []
    c = _comp(warnings, use_prediction=True, max_horizon_s=0.5, show_source=True)
    t0 = 10 * NS
    (f,) = c.add_image(t0 - NS, "first")
    assert f.tracks is None, "no tracks yet: the image as it is"
    _moving(c, t0)
    (f,) = c.add_image(t0 + NS, "a")
    assert c.last_horizon_s == pytest.approx(0.1)
    assert f.tracks is not None and f.tracks.xyxy[0, 0] == pytest.approx(120.0, abs=2.0)
    assert f.dashed is not None and f.dashed.xyxy[0, 0] == pytest.approx(110.0)
    (f,) = c.add_image(t0 + 3 * NS, "far")
    assert f.tracks is None and c.counters["prediction_refused"] == 1
    assert [k for k, _ in warnings] == ["prediction"]
    assert c.pending()["image_buffer"] == 0


def test_predicted_mode_takes_objects_of_the_image_stamp_only() -> None:
    c = _comp(use_prediction=True, boxes3d=True)
    t0 = 10 * NS
    c.add_tracks(_tracks(t0))
    c.add_objects(_objects(t0))
    (f,) = c.add_image(t0, "a")
    assert f.objects is not None
    (f,) = c.add_image(t0 + NS // 10, "b")
    assert f.objects is None and c.counters["objects_missing"] == 1


def test_tracks_at_a_time_answered_or_refused() -> None:
    c = _comp(max_horizon_s=0.5)
    t0 = 10 * NS
    with pytest.raises(PredictionError, match="no tracks received yet"):
        c.tracks_at(t0)
    _moving(c, t0)
    last = t0 + 9 * NS // 10
    pred = c.tracks_at(last + NS // 5)
    assert pred.source_stamp_ns == last and pred.horizon_s == pytest.approx(0.2)
    assert pred.detections.centers[0, 0] == pytest.approx(160.0, abs=2.0)
    with pytest.raises(PredictionError, match=r"expected \|horizon\| <= 0.500 s"):
        c.tracks_at(last + 2 * NS)
    assert c.counters["requests"] == 3 and c.counters["requests_refused"] == 2


# ----------------------------------------------------------------- settings


def test_switching_mode_at_run_time_drops_what_waits_for_a_match() -> None:
    c = _comp()
    c.add_image(NS, "a")
    c.update(replace(c.settings, use_prediction=True))
    assert c.pending()["image_buffer"] == 0 and c.counters["unmatched_images"] == 1
    assert len(c.add_image(2 * NS, "b")) == 1  # predicted: out at once
    c.update(replace(c.settings, use_prediction=False, max_horizon_s=0.1))
    assert c.add_image(3 * NS, "c") == [] and c.pending()["image_buffer"] == 1
    assert c.settings.max_horizon_s == 0.1
    with pytest.raises(ValueError, match="fixed when the overlay starts: buffer_size"):
        c.update(replace(c.settings, buffer_size=20))


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="buffer_size"):
        OverlaySettings(buffer_size=0)
    with pytest.raises(ValueError, match="past: expected one of"):
        OverlaySettings(past="future")  # type: ignore[arg-type]


def test_class_names_are_learnt_bounded_and_numbers_ignored() -> None:
    c = _comp()
    c.learn_class_names(["car", "person", "3", "car"])
    assert c.class_names == ["person", "car"]
    c.learn_class_names(f"c{k}" for k in range(MAX_CLASS_NAMES + 10))
    assert len(c.class_names) == MAX_CLASS_NAMES


def test_same_inputs_same_frames() -> None:
    def run() -> list[tuple[str, int, bool]]:
        c = _comp(buffer_size=3, boxes3d=True)
        out: list[OverlayFrame[str]] = []
        for k in range(20):
            t = NS + k * NS // 30
            if k % 3:
                out += c.add_tracks(_tracks(t))
            out += c.add_image(t, f"i{k}")
            if k % 4:
                out += c.add_objects(_objects(t))
        return [(f.image, f.stamp_ns, f.objects is not None) for f in out]

    first = run()
    assert first and run() == first


# ------------------------------------------------------------------ drawing


def _camera() -> CameraModel:
    return CameraModel.create(W, H, [[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]])


def test_render_draws_tracks_trails_and_3d_boxes_and_counts() -> None:
    pytest.importorskip("cv2")
    warnings: list[tuple[str, str]] = []
    c = _comp(warnings, boxes3d=True, T_camera_from_objects=T_OPT_FROM_FLU)
    black = np.zeros((H, W, 3), np.uint8)
    c.add_objects(_objects(NS))
    c.add_tracks(_tracks(NS, 5.0))
    (f,) = c.add_image(NS, "a")
    img = c.render(f, black)
    assert img is not None and img is not black and not black.any()
    assert img[60:180, 5].any(), "the 2D box"
    assert c.counters["camera_info_missing"] == 1 and warnings[-1][0] == "camera_info_missing"
    assert not img[H // 2 - 40 : H // 2 + 40, W // 2 + 30 : W // 2 + 40].any(), "no 3D box yet"
    c.set_camera(_camera())
    img = c.render(f, black)
    assert img is not None and img[H // 2 - 20 : H // 2 + 20, W // 2 + 30 : W // 2 + 40].any()
    plain = c.render(OverlayFrame("p", NS, None), black)
    assert plain is not None and not plain.any()
    assert c.render(f, np.zeros((10, 10), np.uint8)) is None
    assert c.counters["draw_errors"] == 1 and c.counters["published"] == 3


def test_bad_inputs_noted_by_the_driver_are_counted() -> None:
    c = _comp([])
    c.note_bad_input("image", "truncated")
    c.note_bad_input("objects", "nan size")
    c.note_bad_input("camera_info", "zero focal length")
    assert c.counters["decode_errors"] == c.counters["objects_errors"] == 1
    assert c.counters["objects_received"] == 1 and c.counters["camera_info_errors"] == 1
    st = c.status()
    assert not st.ok and set(COUNTERS) <= set(st.values)
    assert {"image_buffer", "track_buffer", "objects_buffer", "pending_3d", "camera_info",
            "buffer_size", "trail_tracks", "use_prediction"} <= set(st.values)  # fmt: skip
    assert _comp().status().ok
