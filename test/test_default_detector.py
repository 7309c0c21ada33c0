"""The embedded default detector (models/default_detector.onnx) through the
normal engine path: create_engine + Detector with the family auto-detected.

A regression guard, not a benchmark: on a freshly rendered held-out frame
(scenario seeds never used for training) the visible cars, and most of the
small distant objects, must be found.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from perception.core.detector import Detector
from perception.core.engines.config import EngineConfig
from perception.core.engines.factory import create_engine
from perception.core.nms import box_iou
from perception.core.types import Detections
from perception.sim import CLASS_NAMES, CameraFrame, Scenario, default_rig

MODEL = Path(__file__).resolve().parents[1] / "models" / "default_detector.onnx"
# scenario seeds never used for training or for the held-out AP of
# models/default_detector.json (tools/train_default_detector.py)
HELDOUT_SEEDS = (900123, 900126)
# Measured 10/10 visible cars at IoU 0.5 (conf 0.3) on these two frames when
# the model was trained (held-out car AP@0.5 0.665); 0.7 guards regressions.
CAR_RECALL_FLOOR = 0.7
# Measured 8/12 objects 6-16 px tall (visibility >= 0.5) found on these frames
# (the previous 224x384 model: 5/12); 0.5 guards the small-object gain.
SMALL_RECALL_FLOOR = 0.5


@pytest.fixture(scope="module")
def detector() -> Detector:
    if not MODEL.exists():
        pytest.skip(f"{MODEL} absent: run tools/train_default_detector.py")
    engine = create_engine(EngineConfig(model_path=str(MODEL), runtime="onnxruntime"))
    return Detector(engine, family="auto", conf=0.3, iou=0.5)


def test_layout_is_autodetected(detector: Detector):
    assert detector.family == "yolov8"
    assert detector.class_names == CLASS_NAMES
    assert detector.engine.info.input_shape[2:] == (576, 960)  # 640x360 frames at 1.5x


@pytest.fixture(scope="module")
def heldout(detector: Detector) -> list[tuple[CameraFrame, Detections]]:
    """(camera frame, detections) of both held-out frames, all cameras."""
    rig = replace(default_rig(), lidar=None)
    frames = [
        Scenario(seed=s, duration_s=4.0, rate_hz=1.0, rig=rig).frame(2) for s in HELDOUT_SEEDS
    ]
    cams = [cam for frame in frames for cam in frame.cameras.values()]
    outs = detector.detect([cam.image_bgr for cam in cams])
    return list(zip(cams, outs, strict=True))


def _recall(
    heldout: list[tuple[CameraFrame, Detections]],
    classes: tuple[int, ...],
    min_h: float,
    max_h: float,
    min_side: float = 0.0,
) -> tuple[int, int]:
    """(found, total) of the visible (>= 0.5) objects of `classes` whose height
    is in [min_h, max_h) px and shorter side >= min_side, at IoU 0.5, same class."""
    found = total = 0
    for cam, det in heldout:
        assert det.image_size == (640, 360)
        gt = cam.detections(0, cam.name, min_visibility=0.5)
        # visible extent is inclusive pixel indices: +1 for the box edge
        gt_xyxy = gt.xyxy + np.array([0, 0, 1, 1], np.float32)
        wh = gt_xyxy[:, 2:] - gt_xyxy[:, :2]
        sel = np.isin(gt.class_ids, classes) & (wh[:, 1] >= min_h) & (wh[:, 1] < max_h)
        sel &= wh.min(axis=1) >= min_side
        for c in classes:
            mine = sel & (gt.class_ids == c)
            total += int(mine.sum())
            pred = det[det.class_ids == c]
            if mine.any() and len(pred):
                found += int((box_iou(gt_xyxy[mine], pred.xyxy).max(axis=1) >= 0.5).sum())
    return found, total


def test_finds_visible_cars_on_heldout_frames(heldout):
    found, total = _recall(heldout, (0,), 0.0, np.inf, min_side=13.0)
    assert total >= 3, f"expected frames with at least 3 visible cars, got {total}"
    recall = found / total
    assert recall >= CAR_RECALL_FLOOR, f"car recall@0.5 {recall:.2f} < {CAR_RECALL_FLOOR}"


def test_finds_small_distant_objects_on_heldout_frames(heldout):
    """Issue 17: objects 6-16 px tall (distant pedestrians, cars, cyclists)
    are most of what the demo misses; the model sees them at scale 1."""
    found, total = _recall(heldout, (0, 1, 2), 6.0, 16.0)
    assert total >= 8, f"expected at least 8 small visible objects, got {total}"
    recall = found / total
    assert recall >= SMALL_RECALL_FLOOR, f"small-object recall@0.5 {recall:.2f}"
