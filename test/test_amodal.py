"""Amodal 3D boxes: objects seen from one side are completed behind the
visible surface with class size priors (depth lifting, LiDAR fusion, the
fusion stage), on generated geometry with exact ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception.core.camera import CameraModel
from perception.core.fusion.amodal import (
    DEFAULT_SIZE_PRIORS,
    AmodalConfig,
    complete_box,
    priors_by_class_id,
)
from perception.core.fusion.depth import DepthLiftConfig, DepthLifter
from perception.core.fusion.errors import FusionInputError
from perception.core.fusion.lidar import LidarFusion, LidarFusionConfig
from perception.core.fusion.synthetic import (
    OPTICAL_FROM_FLU,
    SceneBox,
    detections_from_render,
    lidar_scan,
    render_depth,
    rigid,
)

CLASSES = ["car", "pedestrian", "cyclist"]
CAR, PED, CYC = 0, 1, 2
AMODAL = AmodalConfig.from_names(CLASSES)
K = [[500.0, 0.0, 320.0], [0.0, 500.0, 180.0], [0.0, 0.0, 1.0]]
# z-up base frame, camera 1.7 m up looking along +x (as the demo's front camera)
T_BASE_FROM_CAM = rigid(OPTICAL_FROM_FLU.T, (0.0, 0.0, 1.7))
# a side camera looking along +y
T_BASE_FROM_LEFT = rigid(
    np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) @ OPTICAL_FROM_FLU.T,
    (0.0, 0.0, 1.7),
)


@pytest.fixture(scope="module")
def camera() -> CameraModel:
    return CameraModel.create(640, 360, K, frame_id="cam")


def _lift(camera, boxes, t_base_from_cam, config):
    depth, ids = render_depth(camera, t_base_from_cam, boxes, 0.0, 80.0)
    det, which = detections_from_render(ids, boxes, frame_id="cam")
    res = DepthLifter(camera, config).lift(
        det, depth, T_target_from_camera=t_base_from_cam, target_frame="base"
    )
    assert res.objects.frame_id == "base"
    return res, which


def _errors(objects, det_index, which, boxes):
    out = {}
    for row, i in enumerate(det_index):
        b = boxes[int(which[i])]
        c_err = float(np.linalg.norm(objects.centers[row] - np.asarray(b.center)))
        s = objects.sizes[row]
        est = np.array([max(s[0], s[1]), min(s[0], s[1]), s[2]])
        tru = np.array([max(b.size[:2]), min(b.size[:2]), b.size[2]])
        out[int(which[i])] = (c_err, float(np.linalg.norm(est - tru)), float(objects.yaws[row]))
    return out


def _yaw_err(a: float, b: float) -> float:
    d = (a - b) % math.pi
    return math.degrees(min(d, math.pi - d))


def test_depth_car_seen_from_behind_is_completed_behind_its_rear(camera) -> None:
    """Only the rear face is visible: the old box sits on it (~2 m short);
    the amodal one is within a few cm of the true centre and size."""
    car = [SceneBox((15.0, 0.3, 0.75), (4.6, 1.8, 1.5), 0.0, CAR)]
    old, which = _lift(camera, car, T_BASE_FROM_CAM, DepthLiftConfig())
    new, _ = _lift(camera, car, T_BASE_FROM_CAM, DepthLiftConfig(amodal=AMODAL))
    (c_old, s_old, _) = _errors(old.objects, old.det_index, which, car)[0]
    (c_new, s_new, yaw) = _errors(new.objects, new.det_index, which, car)[0]
    assert c_old > 1.0 and s_old > 2.0, (c_old, s_old)
    assert c_new < 0.15 and s_new < 0.25, (c_new, s_new)
    assert _yaw_err(yaw, 0.0) < 2.0


@pytest.mark.parametrize("yaw", [0.4, -0.7])
def test_depth_car_at_an_angle_gets_its_heading_and_centre(camera, yaw: float) -> None:
    """Rear and side seen (an L in the depth image): heading from the spread
    of the points, the hidden corner completed."""
    car = [SceneBox((14.0, -2.0, 0.75), (4.4, 1.8, 1.5), yaw, CAR)]
    old, which = _lift(camera, car, T_BASE_FROM_CAM, DepthLiftConfig())
    new, _ = _lift(camera, car, T_BASE_FROM_CAM, DepthLiftConfig(amodal=AMODAL))
    c_old = _errors(old.objects, old.det_index, which, car)[0][0]
    c_new, s_new, y = _errors(new.objects, new.det_index, which, car)[0]
    assert c_new < 0.3 and c_new < 0.5 * c_old, (c_new, c_old)
    assert s_new < 0.5 and _yaw_err(y, yaw) < 5.0, (s_new, math.degrees(y))


def test_depth_side_camera_pedestrian_cyclist_and_car(camera) -> None:
    """A side camera sees road users side-on: each is placed behind its
    visible side by half its width, with its own class's prior."""
    boxes = [
        SceneBox((-4.0, 9.0, 0.75), (4.4, 1.8, 1.5), 0.0, CAR),
        SceneBox((3.0, 6.0, 0.85), (1.75, 0.6, 1.7), 0.0, CYC),
        SceneBox((-0.5, 11.0, 0.87), (0.5, 0.6, 1.75), 0.0, PED),
    ]
    old, which = _lift(camera, boxes, T_BASE_FROM_LEFT, DepthLiftConfig())
    new, _ = _lift(camera, boxes, T_BASE_FROM_LEFT, DepthLiftConfig(amodal=AMODAL))
    e_old = _errors(old.objects, old.det_index, which, boxes)
    e_new = _errors(new.objects, new.det_index, which, boxes)
    assert sorted(e_new) == [0, 1, 2]
    for k, (c, s, _) in e_new.items():
        assert c < 0.15 and s < 0.25, (k, c, s)
        assert c < e_old[k][0], (k, c, e_old[k])


def test_depth_amodal_without_a_target_frame_is_in_the_optical_frame(camera) -> None:
    """No target transform: a level camera is assumed for the fit and the
    box comes back in the optical frame (sizes x right, y down, z forward)."""
    car = [SceneBox((15.0, 0.0, 0.75), (4.4, 1.8, 1.5), 0.0, CAR)]
    t_cam_from_base = np.linalg.inv(T_BASE_FROM_CAM)
    depth, ids = render_depth(camera, T_BASE_FROM_CAM, car, 0.0)
    det, _ = detections_from_render(ids, car, frame_id="cam")
    res = DepthLifter(camera, DepthLiftConfig(amodal=AMODAL)).lift(det, depth)
    truth = t_cam_from_base[:3, :3] @ np.asarray(car[0].center) + t_cam_from_base[:3, 3]
    assert res.objects.frame_id == "cam"
    assert np.linalg.norm(res.objects.centers[0] - truth) < 0.15
    np.testing.assert_allclose(res.objects.sizes[0], [1.8, 1.5, 4.4], atol=0.15)


def test_depth_car_cut_by_the_image_border_grows_out_of_the_image(camera) -> None:
    """A side camera sees only the rear part of a passing car (its front is
    past the image's edge): the missing length goes outside the image."""
    # the left camera looks along +y: its right image edge is towards +x
    car = [SceneBox((6.0, 7.0, 0.75), (4.4, 1.8, 1.5), 0.0, CAR)]
    depth, ids = render_depth(camera, T_BASE_FROM_LEFT, car, 0.0)
    det, which = detections_from_render(ids, car, frame_id="cam")
    assert det.xyxy[0, 2] >= camera.width - 1.0  # touches the right border
    res = DepthLifter(camera, DepthLiftConfig(amodal=AMODAL)).lift(
        det, depth, T_target_from_camera=T_BASE_FROM_LEFT, target_frame="base"
    )
    c, s, _ = _errors(res.objects, res.det_index, which, car)[0]
    assert c < 0.35 and s < 0.3, (c, s)


_LIDAR_AT = (0.0, 0.0, 2.0)


def _lidar(camera, boxes, config):
    """Cloud in a LiDAR frame (base axes at the roof), camera as above."""
    lidar_boxes = [
        SceneBox(tuple(np.subtract(b.center, _LIDAR_AT)), b.size, b.yaw, b.class_id) for b in boxes
    ]
    t_base_from_lidar = rigid(np.eye(3), _LIDAR_AT)
    t_cam_from_lidar = np.linalg.inv(T_BASE_FROM_CAM) @ t_base_from_lidar
    _, ids = render_depth(camera, T_BASE_FROM_CAM, boxes, 0.0)
    det, which = detections_from_render(ids, boxes, frame_id="cam")
    pts = lidar_scan(
        lidar_boxes, -_LIDAR_AT[2], elevations_deg=np.linspace(-25.0, 5.0, 32), n_azimuth=2048
    )
    res = LidarFusion(camera, config, T_cam_from_cloud=t_cam_from_lidar).fuse(
        det, pts, cloud_frame_id="lidar"
    )
    return res.objects.transformed(t_base_from_lidar, "base"), res.det_index, which


def test_lidar_cars_seen_from_one_side_are_completed(camera) -> None:
    boxes = [
        SceneBox((14.0, 0.0, 0.75), (4.6, 1.8, 1.5), 0.0, CAR),  # rear only
        SceneBox((18.0, -6.0, 0.75), (4.4, 1.8, 1.5), 0.35, CAR),  # rear and side
        SceneBox((9.0, 4.0, 0.87), (0.5, 0.6, 1.75), 0.0, PED),
    ]
    old = _errors(*_lidar(camera, boxes, LidarFusionConfig()), boxes)
    new = _errors(*_lidar(camera, boxes, LidarFusionConfig(amodal=AMODAL)), boxes)
    assert sorted(new) == [0, 1, 2]
    # the rear only: the visible face's box is ~2 m short; rear and side (the
    # 360-degree LiDAR sees both whole): already close, and stays so
    assert old[0][0] > 1.5, old
    assert new[0][0] < 0.25 and new[1][0] < max(0.35, old[1][0] + 0.05), (new, old)
    assert new[0][1] < 0.3 and new[1][1] < 0.5, new  # sizes
    assert new[2][0] < 0.2, new
    assert _yaw_err(new[1][2], 0.35) < 6.0, math.degrees(new[1][2])


def test_complete_box_places_a_flat_face_and_assigns_the_prior() -> None:
    """A 1.8 m wide flat face seen head-on is a car's rear: 4.4 m of car go
    behind it; a 4.4 m face seen head-on is its side: 1.8 m go behind."""
    prior = np.array([4.4, 1.8, 1.5])
    ys = np.linspace(-0.9, 0.9, 40)
    rear = np.stack([np.full_like(ys, 10.0), ys, np.full_like(ys, 1.0)], axis=1)
    lift = np.array([0.0, 0.0, 0.5])
    rear = np.concatenate([rear, rear + lift, rear - lift])
    box = complete_box(rear, np.zeros(3), prior, AMODAL, z_range=(0.0, 1.5))
    np.testing.assert_allclose(box.center, [12.2, 0.0, 0.75], atol=0.05)
    np.testing.assert_allclose(box.size, [4.4, 1.8, 1.5], atol=0.05)
    assert abs(box.yaw) < 1e-6 and box.hidden == pytest.approx(4.4, abs=0.05)

    xs = np.linspace(-2.2, 2.2, 80)
    side = np.stack([xs, np.full_like(xs, 8.0), np.ones_like(xs)], axis=1)
    box = complete_box(side, np.zeros(3), prior, AMODAL, z_range=(0.0, 1.5))
    np.testing.assert_allclose(box.center[:2], [0.0, 8.9], atol=0.05)
    np.testing.assert_allclose(box.size[:2], [4.4, 1.8], atol=0.05)

    # no prior: the hidden extent is the visible one, capped by the height
    box = complete_box(rear, np.zeros(3), None, AMODAL, z_range=(0.0, 1.5))
    assert box.size[0] == pytest.approx(1.8, abs=0.05)
    assert box.size[1] == pytest.approx(1.5, abs=0.05)
    assert box.center[0] == pytest.approx(10.75, abs=0.05)


def test_priors_by_name_and_bad_priors() -> None:
    table = priors_by_class_id(["person", "car", "tree"], DEFAULT_SIZE_PRIORS)
    assert table == {0: (0.6, 0.6, 1.75), 1: (4.4, 1.8, 1.55)}
    assert priors_by_class_id([], [("2", 1.0, 1.0, 1.0), ("car", 2.0, 2.0, 2.0)]) == {
        2: (1.0, 1.0, 1.0)
    }
    with pytest.raises(FusionInputError, match="sizes > 0"):
        priors_by_class_id(["car"], [("car", 4.0, -1.0, 1.5)])
    with pytest.raises(FusionInputError, match="priors"):
        AmodalConfig(priors=((0, 1.0, 2.0),))  # type: ignore[arg-type]
    with pytest.raises(FusionInputError, match="observed_weight"):
        AmodalConfig(observed_weight=1.5)
    with pytest.raises(FusionInputError, match="amodal"):
        DepthLiftConfig(amodal="yes")  # type: ignore[arg-type]
    with pytest.raises(FusionInputError, match="amodal"):
        LidarFusionConfig(amodal="yes")  # type: ignore[arg-type]


def test_spec_defaults_are_the_core_priors_and_reach_the_stage(camera) -> None:
    """fusion.params.yaml's size_prior_* defaults are DEFAULT_SIZE_PRIORS; the
    setting switches the stage's depth lifting between the two boxes."""
    from perception.config.generated import FusionParams
    from perception.pipeline.config import fusion_settings, size_priors
    from perception.pipeline.fusion import FusionSettings, FusionStage

    p = FusionParams()
    assert p.amodal_centres is True
    assert size_priors(p.size_prior_classes, p.size_prior_lwh_m) == DEFAULT_SIZE_PRIORS
    with pytest.raises(ValueError, match="size_prior_lwh_m"):
        size_priors(["car"], [4.0, 1.8])
    with pytest.raises(FusionInputError):
        FusionSettings(size_priors=(("car", 0.0, 1.0, 1.0),))

    car = [SceneBox((15.0, 0.0, 0.75), (4.4, 1.8, 1.5), 0.0, CAR)]
    depth, ids = render_depth(camera, T_BASE_FROM_CAM, car, 0.0)
    det, _ = detections_from_render(ids, car, frame_id="cam")
    errs = {}
    for on in (True, False):
        params = FusionParams.from_flat(
            {
                "class_names": CLASSES,
                "amodal_centres": on,
                "tracking": False,
                "T_target_from_camera": T_BASE_FROM_CAM.ravel().tolist(),
            }
        )
        stage = FusionStage(fusion_settings(params))
        stage.set_camera(camera)
        out = stage.process(det, depth=depth)
        assert out is not None and out.objects.frame_id == "base_link"
        errs[on] = float(np.linalg.norm(out.objects.centers[0] - car[0].center))
    assert errs[True] < 0.15 and errs[False] > 1.0, errs


def test_depth_target_frame_that_is_not_z_up_falls_back_to_a_level_camera(camera) -> None:
    """A target frame whose +z is not up (here the optical frame itself):
    the fit is done in a level camera's frame and moved into the target."""
    car = [SceneBox((15.0, 0.0, 0.75), (4.4, 1.8, 1.5), 0.0, CAR)]
    depth, ids = render_depth(camera, T_BASE_FROM_CAM, car, 0.0)
    det, _ = detections_from_render(ids, car, frame_id="cam")
    res = DepthLifter(camera, DepthLiftConfig(amodal=AMODAL)).lift(
        det, depth, T_target_from_camera=np.eye(4), target_frame="cam_copy"
    )
    t_cam_from_base = np.linalg.inv(T_BASE_FROM_CAM)
    truth = t_cam_from_base[:3, :3] @ np.asarray(car[0].center) + t_cam_from_base[:3, 3]
    assert res.objects.frame_id == "cam_copy"
    assert np.linalg.norm(res.objects.centers[0] - truth) < 0.15


def test_depth_noise_setting_reaches_the_lifter(camera) -> None:
    """fusion depth_noise_m = the lifter's depth std model (the tracker's
    measurement noise): exact simulator depth can say so."""
    from perception.config.generated import FusionParams
    from perception.pipeline.config import fusion_settings
    from perception.pipeline.fusion import FusionSettings, FusionStage

    assert FusionParams().depth_noise_m == (0.02, 0.003)
    stage = FusionStage(fusion_settings(FusionParams.from_flat({"depth_noise_m": [0.01, 0.0005]})))
    stage.set_camera(camera)
    assert stage.lifter is not None
    assert (stage.lifter.config.depth_noise_a, stage.lifter.config.depth_noise_b) == (0.01, 0.0005)
    with pytest.raises(ValueError, match="depth_noise_m"):
        fusion_settings(FusionParams.from_flat({"depth_noise_m": [0.01]}))
    with pytest.raises(ValueError, match="depth_noise"):
        FusionSettings(depth_noise=(0.01, -1.0))
