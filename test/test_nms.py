"""NMS against a brute-force greedy reference written in plain Python."""

from __future__ import annotations

import numpy as np
import pytest

from perception.core.nms import batched_nms, box_iou, nms, per_class_values


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def brute_force(boxes, scores, classes, iou_thr, max_det=None, agnostic=False, images=None):
    """Textbook greedy NMS: visit by score (ties: lower index first); keep a box
    unless a kept box of the same class (and image) overlaps it by > thr."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    per_image: dict[int, int] = {}
    for i in order:
        img = 0 if images is None else int(images[i])
        if max_det is not None and per_image.get(img, 0) >= max_det:
            continue
        thr_i = None
        ok = True
        for k in kept:
            if images is not None and images[k] != images[i]:
                continue
            if not agnostic and classes[k] != classes[i]:
                continue
            thr_i = iou_thr[classes[k]] if isinstance(iou_thr, dict) else iou_thr
            if _iou(boxes[k], boxes[i]) > thr_i:
                ok = False
                break
        if ok:
            kept.append(i)
            per_image[img] = per_image.get(img, 0) + 1
    return kept


def random_case(rng: np.random.Generator, n: int, ncls: int = 4, size: float = 200.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(5, 60, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    # quantised scores produce exact ties too
    scores = (rng.integers(1, 200, n) / 200).astype(np.float32)
    classes = rng.integers(0, ncls, n).astype(np.int32)
    return boxes, scores, classes


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("iou_thr", [0.3, 0.5, 0.7])
def test_class_aware_matches_brute_force(seed: int, iou_thr: float) -> None:
    rng = np.random.default_rng(seed)
    boxes, scores, classes = random_case(rng, 300)
    got = batched_nms(boxes, scores, classes, iou_thr)
    want = brute_force(boxes, scores, classes, iou_thr)
    assert got.tolist() == want


@pytest.mark.parametrize("seed", range(4))
def test_agnostic_and_max_det(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    boxes, scores, classes = random_case(rng, 250)
    got = batched_nms(boxes, scores, classes, 0.45, agnostic=True, max_det=20)
    assert got.tolist() == brute_force(boxes, scores, classes, 0.45, max_det=20, agnostic=True)
    assert got.size == 20


@pytest.mark.parametrize("seed", range(4))
def test_per_class_iou_thresholds(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    boxes, scores, classes = random_case(rng, 250)
    thr = {0: 0.2, 1: 0.5, 2: 0.8, 3: 0.4}
    got = batched_nms(boxes, scores, classes, thr)
    assert got.tolist() == brute_force(boxes, scores, classes, thr)
    assert batched_nms(boxes, scores, classes, [0.2, 0.5, 0.8, 0.4]).tolist() == got.tolist()


@pytest.mark.parametrize("seed", range(4))
def test_batched_over_images(seed: int) -> None:
    """Boxes of different images never suppress each other; max_det per image."""
    rng = np.random.default_rng(300 + seed)
    boxes, scores, classes = random_case(rng, 300, size=80.0)
    images = rng.integers(0, 3, 300)
    got = batched_nms(boxes, scores, classes, 0.5, image_ids=images, max_det=15)
    want = brute_force(boxes, scores, classes, 0.5, max_det=15, images=images)
    assert sorted(got.tolist()) == sorted(want)
    # result is score-ordered, and per image equals the single-image result
    assert np.all(np.diff(scores[got]) <= 0)
    for img in range(3):
        sel = np.flatnonzero(images == img)
        single = sel[batched_nms(boxes[sel], scores[sel], classes[sel], 0.5, max_det=15)]
        assert sorted(single.tolist()) == sorted(got[images[got] == img].tolist())


def test_large_coordinates_keep_precision() -> None:
    """Class offsets must not round boxes (a float32 offset of ~1e6 would)."""
    base = np.array([[1000.0, 1000.0, 1010.0, 1010.0], [1000.0, 1000.0, 1010.0, 1011.1]])
    boxes = np.concatenate([base] * 50).astype(np.float32)
    classes = np.repeat(np.arange(50), 2).astype(np.int32)
    scores = np.tile(np.array([0.9, 0.8], np.float32), 50)
    # IoU = 100/111 = 0.9009: kept at thr 0.901, suppressed at 0.9
    assert batched_nms(boxes, scores, classes, 0.901).size == 100
    assert batched_nms(boxes, scores, classes, 0.9).size == 50


def test_edge_cases() -> None:
    empty = np.zeros((0, 4), np.float32)
    assert nms(empty, np.zeros(0, np.float32), 0.5).size == 0
    one = np.array([[0, 0, 10, 10]], np.float32)
    assert nms(one, np.array([0.5], np.float32), 0.5).tolist() == [0]
    # degenerate (zero-area) boxes never suppress anything
    flat = np.array([[0, 0, 0, 10], [0, 0, 0, 10]], np.float32)
    assert nms(flat, np.array([0.9, 0.8], np.float32), 0.1).tolist() == [0, 1]
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1 / 3, 0.0]])


def test_per_class_values_errors() -> None:
    with pytest.raises(ValueError, match="missing class ids"):
        per_class_values({0: 0.5}, np.array([0, 3]), name="iou")
    with pytest.raises(ValueError, match="one value per class"):
        per_class_values([0.5, 0.5], np.array([0, 3]), name="iou")
    np.testing.assert_allclose(
        per_class_values({1: 0.1}, np.array([0, 1]), name="c", default=0.7), [0.7, 0.1]
    )
