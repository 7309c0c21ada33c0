"""This project's detections vs the Ultralytics predictor on the same models.

test/fixtures/reference/ holds tiny random-weight YOLO11 (dynamic and fixed
input shape) and RT-DETR models exported to ONNX by Ultralytics, and what
Ultralytics' own predictor returned on the stored images
(tools/make_reference_fixtures.py regenerates them). The threshold is low
enough that 240-300 candidates per image reach NMS, so preprocessing,
decoding, NMS and the inverse mapping are all compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from perception.core.detector import Detector
from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception.core.types import Detections

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reference"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
REFERENCE = np.load(FIXTURES / "ultralytics_predictions.npz")
BOX_TOL = 0.5  # pixels
SCORE_TOL = 1e-4


def _images() -> dict[str, np.ndarray]:
    imgs = {
        n: cv2.imread(str(FIXTURES / n), cv2.IMREAD_COLOR) for n in ("scene_a.png", "scene_b.png")
    }
    # tools/make_reference_fixtures.py: same_size_partner()
    imgs["scene_a_mirror"] = np.ascontiguousarray(imgs["scene_a.png"][:, ::-1])
    return imgs


IMAGES = _images()


def _reference(kind: str, name: str, image: np.ndarray) -> tuple[np.ndarray, ...]:
    xyxy = REFERENCE[f"{kind}/{name}/xyxy"].copy()
    h, w = image.shape[:2]
    # Ultralytics' RT-DETR postprocess does not clip; ours always clips.
    np.clip(xyxy[:, 0::2], 0, w, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, h, out=xyxy[:, 1::2])
    return xyxy, REFERENCE[f"{kind}/{name}/scores"], REFERENCE[f"{kind}/{name}/classes"]


def assert_same_detections(ours: Detections, kind: str, name: str) -> None:
    """One-to-one match (near-equal scores may come out in either order)."""
    xyxy, scores, classes = _reference(kind, name, IMAGES[name])
    assert len(ours) == len(scores), f"{kind}/{name}: {len(ours)} vs reference {len(scores)}"
    cost = np.abs(ours.xyxy[:, None, :] - xyxy[None, :, :]).max(axis=2)
    cost = cost + 1e6 * (ours.class_ids[:, None] != classes[None, :])
    rows, cols = linear_sum_assignment(cost)
    worst_box = cost[rows, cols].max()
    assert worst_box <= BOX_TOL, f"{kind}/{name}: box (or class) differs by {worst_box}"
    worst_score = np.abs(ours.scores[rows] - scores[cols]).max()
    assert worst_score <= SCORE_TOL, f"{kind}/{name}: score differs by {worst_score}"
    np.testing.assert_array_equal(ours.class_ids[rows], classes[cols])


@pytest.fixture(scope="module", params=list(MANIFEST["models"]))
def detector(request: pytest.FixtureRequest) -> tuple[str, Detector]:
    kind = request.param
    engine = OnnxRuntimeEngine(FIXTURES / MANIFEST["models"][kind]["file"])
    det = Detector(engine, conf=MANIFEST["conf"], iou=MANIFEST["iou"], max_det=MANIFEST["max_det"])
    return kind, det


def test_fixture_exercises_nms() -> None:
    for kind, model in MANIFEST["models"].items():
        if kind.startswith("yolo"):
            assert min(model["candidates_above_conf"].values()) >= 200, kind


def test_family_and_names_from_metadata(detector: tuple[str, Detector]) -> None:
    kind, det = detector
    assert det.family == ("rtdetr" if kind.startswith("rtdetr") else "yolov8")
    assert det.class_names == tuple(MANIFEST["class_names"])


@pytest.mark.parametrize("name", list(IMAGES))
def test_matches_ultralytics_per_image(detector: tuple[str, Detector], name: str) -> None:
    kind, det = detector
    (ours,) = det.detect([IMAGES[name]])
    assert ours.image_size == (IMAGES[name].shape[1], IMAGES[name].shape[0])
    assert_same_detections(ours, kind, name)


def test_matches_ultralytics_in_one_batch(detector: tuple[str, Detector]) -> None:
    """All images in one call (the fixed-batch export is run chunk by chunk by
    the engine). Same-size images share the rect shape the predictor used."""
    kind, det = detector
    if MANIFEST["models"][kind]["dynamic"]:
        names = ["scene_a.png", "scene_a_mirror"]  # mixed sizes would change the rect
    else:
        names = list(IMAGES)
    results = det.detect(
        [IMAGES[n] for n in names],
        stamps_ns=[100 + i for i in range(len(names))],
        frame_ids=[f"cam{i}" for i in range(len(names))],
    )
    for i, (name, ours) in enumerate(zip(names, results, strict=True)):
        assert (ours.frame_id, ours.stamp_ns) == (f"cam{i}", 100 + i)
        assert_same_detections(ours, kind, name)
    assert det.last_timings.batch_size == len(names)
    assert det.last_timings.inference_ms > 0


def test_mixed_sizes_in_one_batch_stay_in_their_images(detector: tuple[str, Detector]) -> None:
    """Different sizes in one call share one tensor (the largest rect); every
    box still lands inside its own image."""
    _, det = detector
    imgs = [IMAGES["scene_a.png"], IMAGES["scene_b.png"]]
    for img, d in zip(imgs, det.detect(imgs), strict=True):
        h, w = img.shape[:2]
        assert len(d) > 0 and d.image_size == (w, h)
        assert (d.xyxy[:, 0::2] >= 0).all() and (d.xyxy[:, 0::2] <= w).all()
        assert (d.xyxy[:, 1::2] >= 0).all() and (d.xyxy[:, 1::2] <= h).all()
