"""The real pretrained YOLOX-Nano (COCO) on the real images of ../shared/data.

Expected objects and scores are those listed in ../shared/data/PROVENANCE.md
(section 4), found there with the documented I/O contract. Skipped when the
shared assets are absent.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.core.detector import Detector
from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception.core.nms import box_iou

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODEL = DATA / "yolox_nano.onnx"

# image -> [(class name, score, [x1, y1, x2, y2])] from PROVENANCE.md
EXPECTED = {
    "pd_33887522274_eebd074106_k.jpg": [
        ("car", 0.865, [181, 365, 305, 462]),
        ("person", 0.753, [712, 356, 741, 442]),
        ("person", 0.735, [688, 352, 713, 439]),
        ("person", 0.728, [664, 355, 689, 439]),
        ("bus", 0.678, [384, 238, 537, 446]),
    ],
    "pd_17790319373_bd19b24cfc_k.jpg": [
        ("car", 0.915, [942, 170, 1115, 498]),
        ("person", 0.873, [189, 192, 275, 441]),
        ("motorcycle", 0.787, [751, 264, 857, 432]),
        ("person", 0.782, [369, 196, 495, 479]),
        ("person", 0.749, [758, 190, 862, 401]),
        ("car", 0.715, [255, 180, 337, 277]),
    ],
    "pd_19064748793_bb942deea1_k.jpg": [
        ("car", 0.892, [444, 284, 696, 494]),
        ("car", 0.859, [84, 311, 199, 385]),
        ("car", 0.825, [301, 287, 434, 400]),
    ],
    "pd_24274813513_0cfd2ce6d0_k.jpg": [("car", 0.524, [532, 274, 601, 332])],
    "pd_34501842524_3c858b3080_k.jpg": [
        ("stop sign", 0.957, [298, 148, 421, 355]),
        ("car", 0.862, [378, 362, 447, 424]),
    ],
    "darknet_dog.jpg": [
        ("dog", 0.855, [133, 207, 326, 543]),
        ("bicycle", 0.803, [52, 137, 572, 424]),
        ("car", 0.798, [466, 78, 692, 171]),
    ],
    "udacity_vd_test1.jpg": [
        ("car", 0.884, [1050, 404, 1275, 508]),
        ("car", 0.822, [813, 408, 943, 493]),
    ],
    "udacity_vd_test6.jpg": [
        ("car", 0.866, [813, 407, 947, 494]),
        ("car", 0.754, [1011, 406, 1205, 509]),
    ],
}
# image -> (class name, count) at score > 0.3, also from PROVENANCE.md
COUNTS = {
    "pd_19064748793_bb942deea1_k.jpg": ("car", 10),
    "pd_24274813513_0cfd2ce6d0_k.jpg": ("person", 10),
    "comma2k19_rav4_preview.png": ("car", 12),
}


@pytest.fixture(scope="module")
def detector() -> Detector:
    if not MODEL.is_file():
        pytest.skip(f"real assets not available: {MODEL} is absent")
    engine = OnnxRuntimeEngine(MODEL)
    return Detector(engine, conf=0.3, iou=0.45, labels_file="coco")


def _read(name: str) -> np.ndarray:
    img = cv2.imread(str(DATA / name), cv2.IMREAD_COLOR)
    assert img is not None, name
    return img


def test_layout_recognised(detector: Detector) -> None:
    assert detector.family == "yolox"
    assert detector.layout.num_classes == 80
    assert detector.class_names[0] == "person"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_finds_provenance_objects(detector: Detector, name: str) -> None:
    img = _read(name)
    (det,) = detector.detect([img])
    assert detector.decoder.layout.variant == "raw"  # grid decoding is not in this graph
    h, w = img.shape[:2]
    assert det.image_size == (w, h)
    assert (det.xyxy[:, 0::2] >= 0).all() and (det.xyxy[:, 0::2] <= w).all()
    assert (det.xyxy[:, 1::2] >= 0).all() and (det.xyxy[:, 1::2] <= h).all()
    names = np.array(detector.class_names)[det.class_ids]
    for cls, score, box in EXPECTED[name]:
        same = np.flatnonzero(names == cls)
        assert same.size, f"{name}: no {cls} found"
        iou = box_iou(np.array([box], np.float32), det.xyxy[same])[0]
        best = same[iou.argmax()]
        # PROVENANCE lists whole pixels and 3 decimals
        err = np.abs(det.xyxy[best] - np.array(box)).max()
        assert err <= 1.5, f"{name}: {cls} {box} vs {det.xyxy[best]}"
        assert abs(float(det.scores[best]) - score) < 2e-3, (name, cls, det.scores[best], score)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_counts(detector: Detector, name: str) -> None:
    cls, count = COUNTS[name]
    (det,) = detector.detect([_read(name)])
    names = np.array(detector.class_names)[det.class_ids]
    assert int((names == cls).sum()) == count


def test_bus_and_truck_both_kept_by_class_aware_nms(detector: Detector) -> None:
    (det,) = detector.detect([_read("pd_33887522274_eebd074106_k.jpg")])
    names = np.array(detector.class_names)[det.class_ids]
    truck = det.xyxy[names == "truck"]
    assert truck.shape[0] == 1
    assert abs(float(det.scores[names == "truck"][0]) - 0.589) < 2e-3


def test_batch_of_mixed_sizes_equals_single_calls(detector: Detector) -> None:
    """Several cameras (different sizes) in one call give exactly what one call
    per image gives: the model has a fixed 416x416 input, so each image's
    tensor is the same either way."""
    names = sorted(EXPECTED)[:4]
    images = [_read(n) for n in names]
    batch = detector.detect(images, frame_ids=names)
    for name, img, got in zip(names, images, batch, strict=True):
        (single,) = detector.detect([img], frame_ids=[name])
        assert got.equals(single)


def test_video_frames_each_have_detections(detector: Detector) -> None:
    path = DATA / "udacity_vd_test_video.mp4"
    if not path.is_file():
        pytest.skip(f"real assets not available: {path} is absent")
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < 6:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 6
    for det in detector.detect(frames):
        assert len(det[det.scores > 0.4]) >= 1
