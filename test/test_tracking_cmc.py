"""Camera motion compensation: the estimator recovers a known image motion,
fails safe to the identity, and a tracker fed the motion keeps its ids
through a fast camera pan that loses them without it."""

from __future__ import annotations

import numpy as np
import pytest

from perception.core.tracking import Tracker, TrackerConfig
from perception.core.tracking.cmc import (
    CameraMotionEstimator,
    affine_scale,
    identity_affine,
    warp_boxes_cxcywh,
)
from perception.core.types import Detections

cv2 = pytest.importorskip("cv2")

NS = 1_000_000_000
W, H = 640, 360


def _canvas(seed: int = 0, size: int = 1400) -> np.ndarray:
    """A textured world (blurred noise plus blocks): plenty of corners."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size // 8, size // 8), dtype=np.uint8)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    return img


def _view(canvas: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The camera image: world pixel p is seen at affine @ p."""
    return cv2.warpAffine(canvas, affine, (W, H), flags=cv2.INTER_LINEAR)


def _cam(tx: float, ty: float, scale: float = 1.0, angle: float = 0.0) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _compose_rel(cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Affine taking image pixels of `prev` to those of `cur` (world->image each)."""
    a = np.vstack((cur, [0, 0, 1])) @ np.linalg.inv(np.vstack((prev, [0, 0, 1])))
    return a[:2]


@pytest.mark.parametrize(
    "prev_cam,cur_cam",
    [
        (_cam(-100, -200), _cam(-112, -195)),  # pan
        (_cam(-100, -200), _cam(-104, -198, scale=1.03)),  # zoom in
        (_cam(-100, -200), _cam(-100, -205, angle=0.01)),  # roll
    ],
)
def test_estimator_recovers_the_motion(prev_cam: np.ndarray, cur_cam: np.ndarray) -> None:
    canvas = _canvas()
    est = CameraMotionEstimator()
    first = est.estimate(_view(canvas, prev_cam))
    np.testing.assert_array_equal(first, identity_affine())  # nothing to compare with
    got = est.estimate(_view(canvas, cur_cam))
    want = _compose_rel(cur_cam, prev_cam)
    # where the motion puts a grid of image points: within half a pixel
    pts = np.array([[x, y] for x in (50, 320, 590) for y in (40, 180, 320)], np.float64)
    err = np.abs((pts @ got[:, :2].T + got[:, 2]) - (pts @ want[:, :2].T + want[:, 2]))
    assert err.max() < 0.5
    assert est.stats.estimated == 1 and est.stats.failed == 0


def test_estimator_fails_safe_to_identity() -> None:
    est = CameraMotionEstimator()
    flat = np.full((H, W), 128, np.uint8)
    est.estimate(flat)
    out = est.estimate(flat)  # no corners at all
    np.testing.assert_array_equal(out, identity_affine())
    assert est.stats.failed_features == 1
    # a new image size restarts (identity, no comparison across sizes)
    canvas = _canvas()
    est.estimate(_view(canvas, _cam(0, 0)))
    out = est.estimate(cv2.resize(_view(canvas, _cam(-3, 0)), (W // 2, H // 2)))
    np.testing.assert_array_equal(out, identity_affine())
    assert est.stats.restarts == 1
    # an unrelated image: no consistent motion, so identity, counted as a failure
    est.reset()
    est.estimate(_view(canvas, _cam(0, 0)))
    other = _view(_canvas(seed=5), _cam(0, 0))
    out = est.estimate(other)
    assert est.stats.failed >= 2
    np.testing.assert_array_equal(out, identity_affine())


def test_estimator_ignores_objects_boxes() -> None:
    """A big object moving against the background does not drag the estimate
    when its box is given (its corners are masked out)."""
    canvas = _canvas()
    obj = _canvas(seed=9, size=200)
    est = CameraMotionEstimator()

    def frame(cam: np.ndarray, ox: int) -> np.ndarray:
        img = _view(canvas, cam)
        img[60:260, ox : ox + 200] = obj
        return img

    box = np.array([[100.0, 60.0, 300.0, 260.0]])
    est.estimate(frame(_cam(-100, -100), 100), box)
    got = est.estimate(frame(_cam(-106, -100), 130), box + np.array([30.0, 0.0, 30.0, 0.0]))
    np.testing.assert_allclose(got[:, 2], [-6.0, 0.0], atol=0.3)


def test_warp_boxes() -> None:
    boxes = np.array([[100.0, 50.0, 20.0, 40.0]])
    a = _cam(5.0, -3.0, scale=1.1)
    out = warp_boxes_cxcywh(boxes, a)
    np.testing.assert_allclose(out, [[115.0, 52.0, 22.0, 44.0]])
    assert affine_scale(a) == pytest.approx(1.1)


def _pan_scene(n_frames: int = 40) -> tuple[list[Detections], list[np.ndarray], list[np.ndarray]]:
    """Four people standing still in the world, camera panning 25 px per
    frame left/right alternately in bursts (a shaky pan): in the image, every
    box jumps by its width each frame, reversing direction every 5 frames."""
    people = np.array([[300.0, 200.0], [340.0, 205.0], [600.0, 210.0], [900.0, 190.0]])
    w, h = 30.0, 80.0
    dets, affines, gts = [], [], []
    cam_x = 0.0
    prev = None
    for k in range(n_frames):
        cam_x += 25.0 if (k // 5) % 2 == 0 else -25.0
        cam = _cam(-cam_x, 0.0)
        cx = people[:, 0] - cam_x
        xyxy = np.stack((cx - w / 2, people[:, 1] - h / 2, cx + w / 2, people[:, 1] + h / 2), 1)
        dets.append(
            Detections.from_arrays(
                xyxy, np.full(4, 0.9), np.zeros(4), stamp_ns=k * NS // 30, frame_id="cam"
            )
        )
        affines.append(identity_affine() if prev is None else _compose_rel(cam, prev))
        gts.append(np.arange(4))
        prev = cam
    return dets, affines, gts


def _id_switches(outs: list[Detections]) -> int:
    """Tracked ids per person (by x order) that change over the sequence."""
    switches = 0
    last: dict[int, int] = {}
    for out in outs:
        order = np.argsort(out.xyxy[:, 0])
        for person, tid in enumerate(out.track_ids[order].tolist()):
            if person in last and last[person] != tid:
                switches += 1
            last[person] = tid
    return switches


def test_tracker_keeps_ids_through_a_shaky_pan_with_camera_motion() -> None:
    dets, affines, _ = _pan_scene()
    with_cmc = Tracker(TrackerConfig())
    without = Tracker(TrackerConfig())
    outs_cmc = [with_cmc.update(d, camera_motion=a) for d, a in zip(dets, affines, strict=True)]
    outs_raw = [without.update(d) for d in dets]
    assert all(len(o) == 4 for o in outs_cmc)
    assert _id_switches(outs_cmc) == 0
    assert with_cmc.stats.tracks_created == 4
    # without compensation the reversals break the tracks
    assert without.stats.tracks_created > 4 or _id_switches(outs_raw) > 0


def test_camera_motion_moves_the_tracks_and_a_bad_affine_changes_nothing() -> None:
    t = Tracker(TrackerConfig())
    box = np.array([[100.0, 100.0, 140.0, 200.0]])
    t.update(Detections.from_arrays(box, [0.9], [0], stamp_ns=0, frame_id="c"))
    with pytest.raises(ValueError, match="camera_motion"):
        t.update(
            Detections.from_arrays(box, [0.9], [0], stamp_ns=NS // 30, frame_id="c"),
            camera_motion=np.eye(3),
        )
    assert t.stats.frames == 1
    # no detection in the next frame: the lost track is moved by the camera
    t.update(
        Detections.from_arrays(np.zeros((0, 4)), [], [], stamp_ns=NS // 30, frame_id="c"),
        camera_motion=_cam(50.0, -10.0),
    )
    (info,) = t.tracks()
    np.testing.assert_allclose(info.xyxy, (150.0, 90.0, 190.0, 190.0), atol=1e-6)
