"""Mask-based 3D: depth lifting and LiDAR frustum selection use a detection's
instance mask when it has one (no background or occluder pixels), and fall
back to its box when the mask is empty (a coasting track)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from perception.core.camera import CameraModel
from perception.core.fusion.depth import DepthLifter
from perception.core.fusion.synthetic import (
    OPTICAL_FROM_FLU,
    SceneBox,
    detections_from_render,
    lidar_scan,
    render_depth,
    rigid,
)
from perception.core.types import Detections, InstanceMasks
from perception.pipeline import FusionSettings, FusionStage

K = [[600.0, 0.0, 322.0], [0.0, 600.0, 238.0], [0.0, 0.0, 1.0]]


def with_masks(det: Detections, ids: np.ndarray, which: np.ndarray) -> Detections:
    """`det` with the exact instance masks of its rows (the rendered ids)."""
    dense = np.stack([ids == k for k in which]) if len(which) else np.zeros((0, *ids.shape))
    h, w = ids.shape
    masks = InstanceMasks.from_dense(dense.reshape(len(which), h, w))
    return Detections.from_arrays(
        det.xyxy,
        det.scores,
        det.class_ids,
        det.track_ids,
        stamp_ns=det.stamp_ns,
        frame_id=det.frame_id,
        image_size=det.image_size,
        masks=masks,
    )


# ------------------------------------------------------------------ depth
# camera 1.4 m above the ground looking along +x; a pedestrian at 7 m stands
# in front of the middle of a car at 15 m
T_WORLD_FROM_CAM = rigid(OPTICAL_FROM_FLU.T, (0.0, 0.0, 1.4))
T_CAM_FROM_WORLD = np.linalg.inv(T_WORLD_FROM_CAM)
OCCLUDED = [
    SceneBox((15.0, 0.0, 0.75), (4.0, 1.8, 1.5), 0.0, 2),  # car
    SceneBox((7.0, 0.05, 0.85), (0.5, 0.6, 1.7), 0.0, 0),  # pedestrian in front of it
]


def centre_cam(box: SceneBox) -> np.ndarray:
    c: np.ndarray = T_CAM_FROM_WORLD[:3, :3] @ np.asarray(box.center) + T_CAM_FROM_WORLD[:3, 3]
    return c


@pytest.fixture(scope="module")
def depth_scene() -> tuple[CameraModel, np.ndarray, Detections, np.ndarray]:
    camera = CameraModel.create(640, 480, K, [0.0] * 5, frame_id="cam")
    depth, ids = render_depth(camera, T_WORLD_FROM_CAM, OCCLUDED, 0.0, max_depth=60.0)
    det, which = detections_from_render(ids, OCCLUDED, stamp_ns=5, frame_id="cam")
    assert which.tolist() == [0, 1]
    return camera, depth, with_masks(det, ids, which), which


def test_depth_lifting_from_the_mask_ignores_the_occluder(depth_scene) -> None:
    camera, depth, det, _ = depth_scene
    boxes_only = replace(det, masks=None)
    truth = centre_cam(OCCLUDED[0])
    by_box = DepthLifter(camera).lift(boxes_only, depth)
    lifter = DepthLifter(camera)
    by_mask = lifter.lift(det, depth)
    assert by_box.det_index.tolist() == by_mask.det_index.tolist() == [0, 1]
    err_box = float(np.linalg.norm(by_box.objects.centers[0] - truth))
    err_mask = float(np.linalg.norm(by_mask.objects.centers[0] - truth))
    # the box's central depths are the pedestrian's: the car lands at ~7 m
    assert err_box > 4.0
    # seen from behind, the depth extent is the heuristic's (no class prior):
    # the rest of the error is the car's unseen length, as without occluder
    assert err_mask < 1.5, err_mask
    assert lifter.stats.mask_rows == 2
    # the pedestrian itself is fine either way
    ped = centre_cam(OCCLUDED[1])
    assert np.linalg.norm(by_mask.objects.centers[1] - ped) < 0.5


def test_empty_mask_falls_back_to_the_box(depth_scene) -> None:
    camera, depth, det, _ = depth_scene
    assert det.masks is not None
    crops = (np.zeros((0, 0), bool), det.masks.crops[1])
    boxes = det.masks.boxes.copy()
    boxes[0] = 0
    coasting = Detections.from_arrays(
        det.xyxy,
        det.scores,
        det.class_ids,
        stamp_ns=5,
        frame_id="cam",
        image_size=det.image_size,
        masks=InstanceMasks(boxes, crops, det.image_size),
    )
    lifter = DepthLifter(camera)
    res = lifter.lift(coasting, depth)
    assert res.det_index.tolist() == [0, 1] and lifter.stats.mask_rows == 1
    first = Detections.from_arrays(
        det.xyxy[:1], det.scores[:1], det.class_ids[:1], stamp_ns=5, frame_id="cam"
    )
    box_only = DepthLifter(camera).lift(first, depth)
    np.testing.assert_allclose(res.objects.centers[0], box_only.objects.centers[0])


def test_fusion_stage_lifts_tracks_with_masks(depth_scene) -> None:
    """The pipeline's fusion stage hands the masks through (what replay and
    the fusion node run)."""
    camera, depth, det, _ = depth_scene
    stage = FusionStage(
        FusionSettings(mode="depth", T_target_from_camera=np.eye(4), target_frame="cam")
    )
    stage.set_camera(camera)
    out = stage.process(det.with_track_ids([1, 2]), depth)
    assert out is not None and len(out.objects) == 2
    assert stage.stats()["mask_rows"] == 2
    assert np.linalg.norm(out.objects.centers[0] - centre_cam(OCCLUDED[0])) < 1.5


# ------------------------------------------------------------------ LiDAR
# LiDAR frame z up, 1.8 m above ground; camera just below it. A pedestrian
# stands 0.8 m in front of a wall, whose points fill its box around it.
GROUND = -1.8
T_LIDAR_FROM_CAM = rigid(OPTICAL_FROM_FLU.T, (0.2, 0.0, -0.3))
WALL_SCENE = [
    SceneBox((8.0, 0.0, GROUND + 0.85), (0.5, 0.6, 1.7), 0.0, 0),  # pedestrian
    SceneBox((9.0, 0.0, GROUND + 1.5), (0.4, 8.0, 3.0), 0.0, 5),  # wall behind it
]


def test_lidar_frustum_from_the_mask() -> None:
    """The mask selects the pedestrian's own points, none of the wall's, and
    needs no shrinking of a loose box: its whole outline is fitted."""
    pytest.importorskip("open3d")
    from perception.core.fusion.lidar import LidarFusion

    camera = CameraModel.create(640, 480, K, [0.0] * 5, frame_id="cam")
    _, ids = render_depth(camera, T_LIDAR_FROM_CAM, WALL_SCENE, GROUND)
    ped_ids = np.where(ids == 0, 0, -1)  # the wall is not a class: no detection
    det, which = detections_from_render(ped_ids, WALL_SCENE[:1], stamp_ns=9, frame_id="cam")
    masked = with_masks(det, ped_ids, which)
    pts = lidar_scan(WALL_SCENE, GROUND, elevations_deg=np.linspace(-22.0, 4.0, 64), n_azimuth=4096)
    fusion = LidarFusion(camera, T_cam_from_cloud=np.linalg.inv(T_LIDAR_FROM_CAM))
    by_box = fusion.fuse(det, pts)
    assert fusion.stats.mask_rows == 0
    by_mask = fusion.fuse(masked, pts)
    assert fusion.stats.mask_rows == 1
    assert len(by_box.objects) == len(by_mask.objects) == 1
    truth = WALL_SCENE[0]
    # LiDAR sees the front face only: the centre is 0.25 m short in x
    err = float(np.linalg.norm(by_mask.objects.centers[0, :2] - np.asarray(truth.center)[:2]))
    assert err < 0.35, err
    size_box, size_mask = by_box.objects.sizes[0], by_mask.objects.sizes[0]
    assert size_mask.max() < 2.0  # the pedestrian, not a slab of wall
    # fuller outline: height and width nearer the truth than from the shrunk box
    assert abs(size_mask[2] - truth.size[2]) < abs(size_box[2] - truth.size[2])
    assert abs(size_mask[0] - truth.size[1]) < abs(size_box[0] - truth.size[1])
