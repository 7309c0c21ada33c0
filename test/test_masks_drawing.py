"""Drawing of segmentation, pose and oriented-box outputs: translucent masks,
skeletons and rotated boxes (the detector's overlay, the AR overlay and
`./dev run` all draw with `draw_detections`)."""

from __future__ import annotations

import math

import numpy as np

from perception.core.drawing import COCO_SKELETON, color_for, draw_detections, obb_corners
from perception.core.overlay import draw_overlay
from perception.core.types import Detections, InstanceMasks

W, H = 200, 150


def blank() -> np.ndarray:
    return np.full((H, W, 3), 100, np.uint8)


def test_masks_are_translucent_and_only_on_the_instance() -> None:
    dense = np.zeros((1, H, W), bool)
    dense[0, 40:100, 50:90] = True  # a 40x60 instance inside a larger box
    det = Detections.from_arrays(
        [[30, 20, 130, 120]], [0.9], [3], image_size=(W, H), masks=InstanceMasks.from_dense(dense)
    )
    out = draw_detections(blank(), det, mask_alpha=0.5)
    color = np.asarray(color_for(3), np.float32)
    inside = out[70, 70].astype(np.float32)
    np.testing.assert_allclose(inside, 100 + 0.5 * (color - 100), atol=1.0)
    assert (out[70, 110] == 100).all()  # in the box, not on the mask
    off = draw_detections(blank(), det, mask_alpha=0.0)
    assert (off[70, 70] == 100).all()


def test_earlier_rows_are_drawn_on_top_of_later_ones() -> None:
    dense = np.zeros((2, H, W), bool)
    dense[:, 50:80, 50:80] = True  # the same pixels
    det = Detections.from_arrays(
        [[40, 40, 90, 90], [40, 40, 90, 90]], [0.9, 0.8], [1, 2], image_size=(W, H),
        masks=InstanceMasks.from_dense(dense),
    )  # fmt: skip
    out = draw_detections(blank(), det, mask_alpha=1.0, thickness=1)
    assert tuple(out[65, 65].tolist()) == color_for(1)


def test_rotated_boxes_are_drawn_rotated() -> None:
    obb = np.array([[100.0, 75.0, 80.0, 20.0, math.pi / 4]], np.float32)
    corners = obb_corners(obb)[0]
    # theta goes from +x towards +y: the box's +x end lies down-right
    assert corners[:, 0].max() > 125 and corners[np.argmax(corners[:, 0]), 1] > 75
    hull = np.concatenate((corners.min(axis=0), corners.max(axis=0)))
    det = Detections.from_arrays([hull], [0.9], [0], image_size=(W, H), obb=obb)
    out = draw_detections(blank(), det, thickness=1)
    changed = (out != 100).any(axis=2)
    x, y = np.round(corners[0]).astype(int)  # a corner of the rotated box
    assert changed[y - 1 : y + 2, x - 1 : x + 2].any()
    # the hull's bottom-left corner is not on the rotated outline
    hx, hy = int(hull[0]) + 2, int(hull[3]) - 2
    assert not changed[hy, hx]


def test_keypoints_and_the_coco_skeleton() -> None:
    rng = np.random.default_rng(0)
    kps = np.zeros((1, 17, 3), np.float32)
    kps[0, :, 0] = rng.uniform(20, 180, 17)
    kps[0, :, 1] = rng.uniform(20, 130, 17)
    kps[0, :, 2] = 0.9
    kps[0, 3, 2] = 0.1  # not visible: neither it nor its limbs drawn
    kps[0, 4, :2] = np.nan
    det = Detections.from_arrays([[10, 10, 190, 140]], [0.9], [0], image_size=(W, H), keypoints=kps)
    out = draw_detections(blank(), det, thickness=1)
    x, y = np.round(kps[0, 0, :2]).astype(int)
    assert (out[y, x] != 100).any()
    x, y = np.round(kps[0, 3, :2]).astype(int)
    limbs_of_3 = [p for p in COCO_SKELETON if 3 in p]
    assert limbs_of_3  # (1, 3) and (3, 5) are limbs
    # the hidden keypoint's own disc is not drawn (a limb of others may cross it)
    ring = out[y - 1 : y + 2, x - 1 : x + 2]
    assert (ring == 255).all(axis=2).sum() == 0


def test_the_ar_overlay_draws_them_too() -> None:
    dense = np.zeros((1, H, W), bool)
    dense[0, 60:90, 60:90] = True
    det = Detections.from_arrays(
        [[50, 50, 100, 100]], [0.9], [0], [7], stamp_ns=1, image_size=(W, H),
        masks=InstanceMasks.from_dense(dense),
    )  # fmt: skip
    out = draw_overlay(blank(), det)
    assert (out[75, 75] != 100).any()


def test_masks_of_another_image_size_are_not_drawn() -> None:
    dense = np.zeros((1, H // 2, W // 2), bool)
    dense[0, 40:60, 40:60] = True
    det = Detections.from_arrays(
        [[5, 5, 90, 70]], [0.9], [0], masks=InstanceMasks.from_dense(dense)
    )  # image_size unknown
    out = draw_detections(blank(), det, thickness=1)
    assert (out[50, 50] == 100).all()
