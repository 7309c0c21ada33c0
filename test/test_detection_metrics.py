"""AP@0.5 (VOC all-point) on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception.eval.detection_metrics import (
    average_precision,
    average_precision_per_class,
    match_detections,
)

B1 = [0.0, 0.0, 10.0, 10.0]
B2 = [20.0, 20.0, 30.0, 40.0]


def test_perfect_detections_give_ap_one():
    preds = [(np.array([B1, B2]), np.array([0.9, 0.8]), np.array([0, 1]))]
    truths = [(np.array([B1, B2]), np.array([0, 1]))]
    ap = average_precision_per_class(preds, truths, 3)
    assert ap[0] == pytest.approx(1.0)
    assert ap[1] == pytest.approx(1.0)
    assert math.isnan(ap[2])  # no GT of class 2: undefined, not 0


def test_hand_computed_curve():
    # ranked: TP, FP, TP with 3 GT -> precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3
    # envelope: 1 up to recall 1/3, 2/3 up to 2/3, 0 after -> AP = 1/3 + 2/9
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), 3)
    assert ap == pytest.approx(1 / 3 + (2 / 3) * (1 / 3))


def test_no_detections_and_no_gt():
    assert average_precision(np.zeros(0), np.zeros(0), 2) == 0.0
    assert math.isnan(average_precision(np.array([0.5]), np.array([0]), 0))


def test_iou_threshold_and_duplicates():
    shifted = [5.0, 0.0, 15.0, 10.0]  # IoU with B1 = 50 / 150 = 1/3
    labels = match_detections(np.array([shifted]), np.array([0.9]), np.array([B1]), 0.5)
    assert labels.tolist() == [0]
    labels = match_detections(np.array([shifted]), np.array([0.9]), np.array([B1]), 0.3)
    assert labels.tolist() == [1]
    # two detections on one GT: the higher score is TP, the other FP
    labels = match_detections(np.array([B1, B1]), np.array([0.4, 0.9]), np.array([B1]))
    assert labels.tolist() == [0, 1]


def test_class_aware_matching():
    preds = [(np.array([B1]), np.array([0.9]), np.array([1]))]
    truths = [(np.array([B1]), np.array([0]))]
    ap = average_precision_per_class(preds, truths, 2)
    assert ap[0] == 0.0
    assert math.isnan(ap[1])


def test_ignore_boxes_excuse_detections():
    preds = [(np.array([B1, B2]), np.array([0.9, 0.95]), np.array([0, 0]))]
    without = average_precision_per_class(preds, [(np.array([B1]), np.array([0]))], 1)
    with_ignore = average_precision_per_class(
        preds, [(np.array([B1]), np.array([0]), np.array([B2]))], 1
    )
    assert without[0] == pytest.approx(0.5)  # FP ranked first
    assert with_ignore[0] == pytest.approx(1.0)


def test_pools_over_images():
    preds = [
        (np.array([B1]), np.array([0.9]), np.array([0])),
        (np.array([B2]), np.array([0.8]), np.array([0])),
        (np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)),
    ]
    truths = [
        (np.array([B1]), np.array([0])),
        (np.zeros((0, 4)), np.zeros(0, np.int64)),
        (np.array([B2]), np.array([0])),
    ]
    # TP then FP, 2 GT -> AP = 0.5
    assert average_precision_per_class(preds, truths, 1)[0] == pytest.approx(0.5)


def test_validation_errors():
    with pytest.raises(ValueError, match="truths"):
        average_precision_per_class([], [(np.zeros((0, 4)), np.zeros(0))], 1)
    with pytest.raises(ValueError, match="iou_threshold"):
        match_detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4)), 0.0)
    with pytest.raises(ValueError, match="tp"):
        average_precision(np.array([0.5]), np.array([1, 0]), 1)
