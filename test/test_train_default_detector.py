"""Labels of tools/train_default_detector.py (numpy parts, no torch): the box
convention is the simulator's ground truth (pixel centres at integers, a box
spans its pixels' squares), old caches are converted, and training crops move
labels with the image."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from perception.sim import Scenario, default_rig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tdd():
    spec = importlib.util.spec_from_file_location(
        "train_default_detector", REPO / "tools" / "train_default_detector.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve annotations through it
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules[spec.name]


def test_labels_are_the_sim_ground_truth(tdd):
    cfg = tdd.Config()
    sc = Scenario(5, duration_s=1.0, rate_hz=10.0, rig=default_rig(), density=1.0)
    n = 0
    for cam in sc.frame(3).cameras.values():
        boxes, cls, ign = tdd._split_gt(cam, cfg)
        assert len(boxes) + len(ign) == int((cam.visible_pixels > 0).sum())
        for b, c in zip(boxes, cls, strict=True):
            row = np.nonzero((cam.xyxy == b).all(axis=1))[0]
            assert len(row) == 1 and cam.class_ids[row[0]] == c
            # the box is the extent of the object's pixels' squares
            vv, uu = np.nonzero(cam.ids == cam.object_ids[row[0]])
            want = (uu.min() - 0.5, vv.min() - 0.5, uu.max() + 0.5, vv.max() + 0.5)
            np.testing.assert_array_equal(b, np.float32(want))
            n += 1
    assert n > 0


def test_format_1_cache_is_converted(tdd, tmp_path):
    cfg = tdd.Config()
    img = np.zeros((2, 4, 4, 3), np.uint8)
    true = np.array([[10.5, 20.5, 30.5, 60.5], [99.5, 9.5, 100.5, 30.5]], np.float32)
    ign = np.array([[1.5, 1.5, 2.5, 2.5]], np.float32)
    old = tmp_path / "old.npz"
    np.savez(
        old,
        images=img,
        boxes=true + tdd.LEGACY_LABEL_OFFSET,
        cls=np.array([0, 1]),
        counts=np.array([2, 0]),
        ignore=ign + tdd.LEGACY_LABEL_OFFSET,
        icounts=np.array([1, 0]),
    )
    s = tdd._unpack(old, cfg)
    assert tdd._cache_format(old) == 1
    # the 1 px wide second box (2 px with the old offset) is now too small
    np.testing.assert_array_equal(s[0]["boxes"], true[:1])
    np.testing.assert_array_equal(s[0]["cls"], [0])
    np.testing.assert_array_equal(s[0]["ignore"], np.concatenate([ign, true[1:]]))
    new = tmp_path / "new.npz"
    tdd._pack([{"image": img[0], "boxes": true, "cls": np.array([0, 1]), "ignore": ign}], new)
    assert tdd._cache_format(new) == tdd.CACHE_FORMAT
    (t,) = tdd._unpack(new, cfg)
    np.testing.assert_array_equal(t["boxes"], true)


@pytest.mark.parametrize("scale", [1.0, 1.25, 0.8])
def test_crop_moves_boxes_with_the_pixels(tdd, scale):
    cfg = replace(tdd.Config(), scale_range=(scale, scale), centred_crop_p=1.0)
    img = np.zeros((384, 640, 3), np.uint8)
    u0, u1, v0, v1 = 300, 311, 200, 229  # inclusive pixel indices
    img[v0 : v1 + 1, u0 : u1 + 1] = 255
    box = np.array([[u0 - 0.5, v0 - 0.5, u1 + 0.5, v1 + 0.5]], np.float32)
    sample = {"image": img, "boxes": box, "cls": np.array([0]), "ignore": np.zeros((0, 4))}
    rng = np.random.default_rng(1)
    for _ in range(5):
        out, b, _c, _ig = tdd._crop(sample, cfg, np.ones(3), rng)
        assert len(b) == 1
        m = out[..., 0].astype(np.float64) / 255.0
        # around the box only (a crop edge may sample cv2's grey border)
        x1, y1, x2, y2 = np.round(b[0]).astype(int)
        m[:, : max(x1 - 2, 0)] = 0
        m[:, x2 + 3 :] = 0
        m[: max(y1 - 2, 0)] = 0
        m[y2 + 3 :] = 0
        x = np.arange(m.shape[1])
        y = np.arange(m.shape[0])
        # intensity centroid and width of the warped rectangle = the label's
        cx = (m.sum(axis=0) * x).sum() / m.sum()
        cy = (m.sum(axis=1) * y).sum() / m.sum()
        assert cx == pytest.approx(0.5 * (b[0, 0] + b[0, 2]), abs=0.1)
        assert cy == pytest.approx(0.5 * (b[0, 1] + b[0, 3]), abs=0.1)
        row = m[round(cy)]
        assert row.sum() == pytest.approx(b[0, 2] - b[0, 0], abs=0.3)
