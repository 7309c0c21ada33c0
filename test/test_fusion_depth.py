"""Depth lifting on rendered scenes with exact ground truth, and bad depth input."""

from __future__ import annotations

import numpy as np
import pytest

from perception.core.camera import CameraModel
from perception.core.fusion.depth import DepthLiftConfig, DepthLifter, depth_to_metres
from perception.core.fusion.errors import DepthImageError, FusionInputError
from perception.core.fusion.synthetic import (
    OPTICAL_FROM_FLU,
    SceneBox,
    detections_from_render,
    render_depth,
    rigid,
)
from perception.core.types import Detections

GROUND_Z = 0.0
CAM_HEIGHT = 1.4
# camera at 1.4 m looking along +x of a z-up world (base_link-like)
T_WORLD_FROM_CAM = rigid(OPTICAL_FROM_FLU.T, (0.0, 0.0, CAM_HEIGHT))
T_CAM_FROM_WORLD = np.linalg.inv(T_WORLD_FROM_CAM)
K = [[600.0, 0.0, 322.0], [0.0, 600.0, 238.0], [0.0, 0.0, 1.0]]

# yaw-0 boxes facing the camera, apart from each other (no occlusion):
# (centre x, y), size (length x, width y, height z)
BOXES = [
    SceneBox((6.0, 1.2, 0.8), (0.6, 0.6, 1.6), 0.0, 0),  # pedestrian
    SceneBox((9.0, -1.8, 0.8), (0.6, 0.6, 1.6), 0.0, 0),  # pedestrian
    SceneBox((12.0, 4.5, 0.5), (1.0, 1.0, 1.0), 0.0, 1),  # cube
    SceneBox((16.0, -6.0, 0.75), (1.8, 1.8, 1.5), 0.0, 2),  # van-ish, square footprint
]


def _scene(camera: CameraModel):
    depth, ids = render_depth(camera, T_WORLD_FROM_CAM, BOXES, GROUND_Z, max_depth=60.0)
    det, which = detections_from_render(ids, BOXES, stamp_ns=123, frame_id="cam_optical")
    return depth, det, which


def _truth(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre in the optical frame and size as (x right, y down, z forward)."""
    b = BOXES[k]
    c = T_CAM_FROM_WORLD[:3, :3] @ np.asarray(b.center) + T_CAM_FROM_WORLD[:3, 3]
    return c, np.array([b.size[1], b.size[2], b.size[0]])


@pytest.fixture(scope="module", params=["plumb_bob", "equidistant"])
def camera(request) -> CameraModel:
    d = (
        [-0.12, 0.03, 0.0005, -0.0004, 0.0]
        if request.param == "plumb_bob"
        else [0.05, -0.01, 0.002, -0.0005]
    )
    return CameraModel.create(
        640, 480, K, d, distortion_model=request.param, frame_id="cam_optical"
    )


def test_lift_accuracy_on_rendered_scene(camera: CameraModel) -> None:
    depth, det, which = _scene(camera)
    assert len(det) == len(BOXES)
    lifter = DepthLifter(camera)
    res = lifter.lift(det, depth)
    assert len(res.objects) == len(BOXES) and lifter.stats.no_depth == 0
    assert res.objects.frame_id == "cam_optical" and res.objects.stamp_ns == 123
    errs = []
    for row, i in enumerate(res.det_index):
        c_true, s_true = _truth(int(which[i]))
        c_err = np.linalg.norm(res.objects.centers[row] - c_true)
        s_err = np.abs(res.objects.sizes[row] - s_true)
        errs.append((int(which[i]), c_err, *s_err))
    report = "\n".join(
        f"box {k}: centre err {c:.3f} m, size err x {sx:.3f} y {sy:.3f} z {sz:.3f} m"
        for k, c, sx, sy, sz in errs
    )
    print(f"\ndepth lifting ({camera.distortion_model}):\n{report}")
    e = np.array([r[1:] for r in errs])
    # Regression guards. Measured (both models): pedestrians centre ~0.07 m;
    # off-axis boxes up to ~0.32 m centre and ~0.56 m width error, because a
    # 2D box of an object seen at an angle also spans its side face, and the
    # extent along the optical axis of a surface seen from one side is a
    # heuristic. Height is exact to a few cm.
    assert e[:2, 0].max() < 0.1, report  # pedestrians, near the optical axis
    assert e[:, 0].max() < 0.4, report
    assert e[:, 1].max() < 0.6 and e[:, 2].max() < 0.06, report
    assert e[:, 3].max() < 0.35, report


def test_class_depth_prior_fixes_the_hidden_extent() -> None:
    """A van seen from behind: the depth image shows only its rear face, so
    its length is unobservable; a per-class extent puts the centre right."""
    camera = CameraModel.create(640, 480, K, frame_id="cam_optical")
    van = [SceneBox((12.0, 0.0, 0.9), (4.5, 1.8, 1.8), 0.0, 2)]
    depth, ids = render_depth(camera, T_WORLD_FROM_CAM, van, GROUND_Z)
    det, _ = detections_from_render(ids, van, frame_id="cam_optical")
    truth = T_CAM_FROM_WORLD[:3, :3] @ np.asarray(van[0].center) + T_CAM_FROM_WORLD[:3, 3]
    plain = DepthLifter(camera).lift(det, depth).objects
    prior = DepthLifter(camera, DepthLiftConfig(class_depth_m=((2, 4.5),))).lift(det, depth)
    err_plain = abs(plain.centers[0, 2] - truth[2])
    err_prior = abs(prior.objects.centers[0, 2] - truth[2])
    assert err_plain > 1.0 and err_prior < 0.1, (err_plain, err_prior)
    assert abs(prior.objects.sizes[0, 2] - 4.5) < 1e-6
    with pytest.raises(FusionInputError, match="class_depth_m"):
        DepthLiftConfig(class_depth_m=((2, -1.0),))


def test_uint16_millimetres_and_float_metres_agree(camera: CameraModel) -> None:
    depth, det, _ = _scene(camera)
    mm = np.round(depth * 1000.0).astype(np.uint16)
    a = DepthLifter(camera).lift(det, depth)
    b = DepthLifter(camera).lift(det, mm)  # scale from dtype: 0.001
    c = DepthLifter(camera).lift(det, mm.astype(np.float32), depth_scale=0.001)
    assert np.allclose(a.objects.centers, b.objects.centers, atol=0.005)
    assert np.allclose(b.objects.centers, c.objects.centers, atol=1e-6)
    assert depth_to_metres(mm).dtype == np.float32


@pytest.mark.parametrize("bad", [0.0, np.nan, np.inf, -1.0, 500.0])
def test_invalid_depth_gives_no_object_never_zero(bad: float) -> None:
    camera = CameraModel.create(640, 480, K, frame_id="cam_optical")
    depth, det, _ = _scene(camera)
    x1, y1, x2, y2 = det.xyxy[0]
    depth[int(y1) : int(y2) + 2, int(x1) : int(x2) + 2] = bad  # whole first box invalid
    lifter = DepthLifter(camera)
    res = lifter.lift(det, depth)
    assert 0 not in res.det_index.tolist()
    assert len(res.objects) == len(det) - 1 and res.no_depth == 1
    assert lifter.stats.no_depth == 1 and lifter.stats.lifted == len(det) - 1
    assert (res.objects.centers[:, 2] > 1.0).all()  # nothing placed at zero depth


def test_sparse_valid_depth_below_threshold_gives_no_object() -> None:
    camera = CameraModel.create(640, 480, K)
    depth, det, _ = _scene(camera)
    x1, y1, x2, y2 = (int(v) for v in det.xyxy[0])
    patch = depth[y1 : y2 + 1, x1 : x2 + 1]
    keep = np.zeros_like(patch, bool)
    keep[::9, ::9] = True  # ~1% valid pixels
    patch[~keep] = 0.0
    res = DepthLifter(camera, DepthLiftConfig(min_valid_fraction=0.1)).lift(det, depth)
    assert 0 not in res.det_index.tolist() and res.no_depth == 1


def test_empty_detections_and_bad_boxes() -> None:
    camera = CameraModel.create(640, 480, K)
    depth = np.ones((480, 640), np.float32)
    lifter = DepthLifter(camera)
    res = lifter.lift(Detections.empty(image_size=(640, 480)), depth)
    assert len(res.objects) == 0
    det = Detections.from_arrays(
        [[np.nan, 0, 10, 10], [700, 500, 800, 600], [100, 100, 140, 160]], [0.9] * 3, [0] * 3
    )
    res = lifter.lift(det, depth)
    assert res.invalid_box == 2 and res.det_index.tolist() == [2]
    assert np.isclose(res.objects.centers[0, 2], 1.0 + 0.5 * res.objects.sizes[0, 2], atol=0.01)


def test_depth_image_of_wrong_size_is_a_typed_error() -> None:
    camera = CameraModel.create(640, 480, K)
    det = Detections.from_arrays([[10, 10, 50, 50]], [0.9], [0])
    with pytest.raises(DepthImageError, match=r"expected \(height, width\) = \(480, 640\)"):
        DepthLifter(camera).lift(det, np.ones((240, 320), np.float32))
    with pytest.raises(DepthImageError, match="uint16"):
        DepthLifter(camera).lift(det, np.ones((480, 640), np.int32))
    with pytest.raises(DepthImageError, match="depth_scale"):
        DepthLifter(camera).lift(det, np.ones((480, 640), np.float32), depth_scale=-1.0)
    other = Detections.from_arrays([[10, 10, 50, 50]], [0.9], [0], image_size=(1280, 720))
    with pytest.raises(FusionInputError, match="image_size"):
        DepthLifter(camera).lift(other, np.ones((480, 640), np.float32))


def test_depth_with_a_gap_wider_than_an_object_gives_no_object():
    """The 30th percentile of {5 m x6, 50 m x14} interpolates to 36.5 m, where no
    pixel lies: counted as no depth, never a crash (seen in the demo)."""
    cam = CameraModel.create(64, 48, K, [0.0] * 5, frame_id="cam_optical")
    depth = np.zeros((48, 64), np.float32)
    block = np.full(20, 50.0, np.float32)
    block[:6] = 5.0
    depth[1:3, 5:15] = block.reshape(2, 10)
    det = Detections.from_arrays([[0, 0, 20, 4]], [0.9], [0], frame_id="cam_optical")
    res = DepthLifter(cam).lift(det, depth)
    assert len(res.objects.centers) == 0 and res.no_depth == 1
