"""CameraModel: projection and back-projection against OpenCV, and bad calibration."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.core.camera import CalibrationError, CameraModel
from perception.core.errors import PerceptionError

K = [[520.0, 0.0, 318.0], [0.0, 515.0, 244.0], [0.0, 0.0, 1.0]]
MODELS = {
    "plumb_bob": [-0.28, 0.09, 0.0012, -0.0008, -0.012],
    "rational_polynomial": [0.35, -0.2, 0.001, 0.0015, 0.05, 0.65, -0.15, 0.12],
    "equidistant": [-0.02, 0.01, -0.004, 0.0008],
}


def _points(n: int = 400, seed: int = 0) -> np.ndarray:
    """Points in front of the camera spread over (about) the image."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.5, 30.0, n)
    x = rng.uniform(-0.55, 0.55, n) * z
    y = rng.uniform(-0.42, 0.42, n) * z
    return np.stack((x, y, z), axis=1)


def _model(name: str) -> CameraModel:
    return CameraModel.create(640, 480, K, MODELS[name], distortion_model=name, frame_id="cam")


def _cv_project(cam: CameraModel, pts: np.ndarray) -> np.ndarray:
    zero = np.zeros(3)
    if cam.distortion_model == "equidistant":
        out, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), zero, zero, cam.K, cam.D)
    else:
        out, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), zero, zero, cam.K, cam.D)
    return out.reshape(-1, 2)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_project_matches_opencv(name: str) -> None:
    cam = _model(name)
    pts = _points()
    ours = cam.project(pts)
    ref = _cv_project(cam, pts)
    assert np.abs(ours - ref).max() < 1e-6 * 640  # sub-micro-pixel agreement


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unproject_matches_opencv_and_round_trips(name: str) -> None:
    cam = _model(name)
    pts = _points()
    uv = cam.project(pts)
    back = cam.unproject(uv, pts[:, 2])
    # ours inverts the distortion to ~1e-6 of a pixel...
    assert np.abs(back - pts).max() < 1e-6 * pts[:, 2].max()
    # ...and agrees with OpenCV's undistortion (which iterates less, so the
    # tolerance is OpenCV's own residual)
    if name == "equidistant":
        ref = cv2.fisheye.undistortPoints(uv.reshape(-1, 1, 2), cam.K, cam.D).reshape(-1, 2)
    else:
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        und = getattr(cv2, "undistortPointsIter", None)  # OpenCV 4.x name
        if und is not None:
            ref = und(uv.reshape(-1, 1, 2), cam.K, cam.D, None, None, crit)
        else:  # OpenCV 5: criteria on undistortPoints itself
            ref = cv2.undistortPoints(uv.reshape(-1, 1, 2), cam.K, cam.D, None, None, None, crit)
        ref = ref.reshape(-1, 2)
    ours_n = cam.normalized_rays(uv)
    assert np.abs(ours_n - ref).max() * cam.fx < 0.01  # pixels


def test_no_distortion_is_pinhole_and_uses_k() -> None:
    cam = CameraModel.create(640, 480, K)
    pts = _points()
    uv = cam.project(pts)
    kp = (np.asarray(K) @ pts.T).T
    assert np.allclose(uv, kp[:, :2] / kp[:, 2:], atol=1e-9)
    assert not cam.has_distortion


def test_points_behind_are_nan_and_outside_image() -> None:
    cam = _model("plumb_bob")
    uv = cam.project(np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.1, 0.1, 2.0]]))
    assert np.isnan(uv[:2]).all() and np.isfinite(uv[2]).all()
    assert cam.in_image(uv).tolist() == [False, False, True]
    edge = np.array([[0.0, 0.0], [639.9, 479.9], [640.0, 10.0], [-0.1, 5.0]])
    assert cam.in_image(edge).tolist() == [True, True, False, False]
    assert cam.in_image(edge, margin=1.0).tolist() == [False, False, False, False]


def test_from_camera_info_fields_flat_values() -> None:
    d = MODELS["rational_polynomial"]
    cam = CameraModel.from_camera_info_fields(
        640,
        480,
        "rational_polynomial",
        d,
        np.asarray(K).ravel().tolist(),
        [0.0] * 9,  # some drivers leave R zero: identity
        [0.0] * 12,  # and P zero: [K | 0]
        frame_id="cam_optical",
    )
    assert cam.frame_id == "cam_optical" and cam.size == (640, 480)
    assert np.array_equal(cam.R, np.eye(3))
    assert np.array_equal(cam.P[:, :3], np.asarray(K))
    rect = cam.rectified()
    assert not rect.has_distortion and np.array_equal(rect.K, np.asarray(K))


def test_empty_d_means_no_distortion_and_short_plumb_bob_is_padded() -> None:
    assert not CameraModel.create(640, 480, K, []).has_distortion
    cam = CameraModel.create(640, 480, K, [-0.1, 0.01, 0.0, 0.0])
    assert cam.D.shape == (5,) and cam.D[4] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"K": np.zeros((3, 3))}, "all zeros"),
        ({"K": [[500, 0, 320], [0, -500, 240], [0, 0, 1]]}, "fx, fy > 0"),
        ({"K": [1.0, 2.0]}, "expected 9 values"),
        ({"K": [[np.nan, 0, 320], [0, 500, 240], [0, 0, 1]]}, "finite"),
        ({"distortion_model": "kannala_brandt"}, "distortion_model"),
        ({"D": [0.1, 0.2, 0.3]}, "expects 0 or 4 or 5 coefficients, got 3"),
        ({"D": [0.1] * 5, "distortion_model": "equidistant"}, "got 5"),
        ({"D": [0.1] * 5, "distortion_model": "rational_polynomial"}, "got 5"),
        ({"width": 0}, "width"),
    ],
)
def test_invalid_calibration_is_a_typed_error(kwargs: dict, match: str) -> None:
    args = {"width": 640, "height": 480, "K": K, "D": (), "distortion_model": "plumb_bob"}
    args.update(kwargs)
    with pytest.raises(CalibrationError, match=match) as info:
        CameraModel.create(
            args["width"], args["height"], args["K"], args["D"],
            distortion_model=args["distortion_model"],
        )  # fmt: skip
    assert isinstance(info.value, PerceptionError) and isinstance(info.value, ValueError)


def test_fov_bounds_cover_the_image() -> None:
    cam = _model("plumb_bob")
    xmin, xmax, ymin, ymax = cam.fov_bounds()
    grid = np.stack(np.meshgrid(np.linspace(0, 639, 21), np.linspace(0, 479, 21)), -1)
    xy = cam.normalized_rays(grid.reshape(-1, 2))
    assert (xy[:, 0] >= xmin - 1e-9).all() and (xy[:, 0] <= xmax + 1e-9).all()
    assert (xy[:, 1] >= ymin - 1e-9).all() and (xy[:, 1] <= ymax + 1e-9).all()
