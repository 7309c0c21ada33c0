"""`./dev run` with segmentation, pose and oriented-box models: masks,
keypoints and oriented boxes in detections.jsonl, the instance-id PNG, the
annotated images; a short video keeps masks on its tracks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reference"


def test_mask_rle_round_trip() -> None:
    from perception.cli.run import mask_rle

    rng = np.random.default_rng(3)
    for shape in [(0, 0), (1, 1), (4, 7), (13, 5)]:
        crop = rng.random(shape) > 0.5
        runs = mask_rle(crop)
        flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
        assert np.array_equal(flat, crop.ravel())
    assert mask_rle(np.ones((2, 2), bool)) == [0, 4]


def test_run_with_a_seg_model_writes_masks(tmp_path: Path) -> None:
    from perception.cli.run import main

    out = tmp_path / "out"
    image = FIXTURES / "scene_a.png"
    model = FIXTURES / "yolo11t_seg_dynamic.onnx"
    code = main([str(image), "--model", str(model), "--conf", "0.3", "--out", str(out)])
    assert code == 0
    (line,) = (out / "detections.jsonl").read_text().splitlines()
    rec = json.loads(line)
    dets = rec["detections"]
    assert dets and all("mask" in d for d in dets)
    ids = cv2.imread(str(out / rec["masks_png"]), cv2.IMREAD_UNCHANGED)
    w, h = rec["image_size"]
    assert ids.dtype == np.uint16 and ids.shape == (h, w)
    assert ids.max() <= len(dets)
    # the first (best) detection's mask is complete in the id image (it wins overlaps)
    first = dets[0]["mask"]
    x0, y0, x1, y1 = first["box"]
    runs = first["rle"]
    crop = np.repeat(np.arange(len(runs)) % 2 == 1, runs).reshape(y1 - y0, x1 - x0)
    assert crop.sum() == first["area"] > 0
    assert (ids[y0:y1, x0:x1][crop] == 1).all()
    assert (out / "scene_a.jpg").is_file()


@pytest.mark.parametrize(
    ("model", "key"),
    [("yolo11t_pose_fixed.onnx", "keypoints"), ("yolo11t_obb_dynamic.onnx", "obb")],
)
def test_run_with_pose_and_obb_models(tmp_path: Path, model: str, key: str) -> None:
    from perception.cli.run import main

    out = tmp_path / "out"
    code = main([str(FIXTURES / "scene_b.png"), "--model", str(FIXTURES / model),
                 "--conf", "0.05", "--out", str(out)])  # fmt: skip
    assert code == 0
    rec = json.loads((out / "detections.jsonl").read_text())
    assert rec["detections"] and all(key in d for d in rec["detections"])
    assert "masks_png" not in rec


def test_run_on_a_video_tracks_with_masks(tmp_path: Path) -> None:
    from perception.cli.run import main

    img = cv2.imread(str(FIXTURES / "scene_a.png"))
    video = tmp_path / "clip.avi"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, img.shape[1::-1])
    for _ in range(4):
        wr.write(img)
    wr.release()
    out = tmp_path / "out"
    model = FIXTURES / "yolo11t_seg_dynamic.onnx"
    assert main([str(video), "--model", str(model), "--conf", "0.3", "--out", str(out)]) == 0
    records = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    assert len(records) == 4
    tracked = [d for r in records for d in r["detections"] if "track_id" in d]
    assert tracked and all("mask" in d for d in tracked)
    assert (out / "clip.mp4").is_file()
