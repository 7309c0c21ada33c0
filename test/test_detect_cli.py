"""`perception.cli.detect`: files, folders and videos to JSON Lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.cli.detect import main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "test" / "fixtures" / "reference"
MODEL = FIXTURES / "yolo11t_dynamic.onnx"
DATA = REPO.parent / "shared" / "data"


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_files_and_folder(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rc = main([str(MODEL), str(FIXTURES / "scene_a.png"), str(FIXTURES), "--conf", "0.3",
               "--iou", "0.5", "--max-det", "5", "-o", str(out), "--timings"])  # fmt: skip
    assert rc == 0
    recs = _records(out)
    # one file + the folder's two PNGs (the .onnx/.npz/.json there are not images)
    assert [Path(r["source"]).name for r in recs] == ["scene_a.png", "scene_a.png", "scene_b.png"]
    first = recs[0]
    assert first["image_size"] == [400, 300] and first["frame"] is None
    assert 0 < len(first["detections"]) <= 5
    d = first["detections"][0]
    assert set(d) == {"box", "score", "class_id", "class_name"}
    assert d["class_name"] == f"thing{d['class_id']:02d}"
    assert d["score"] > 0.3
    x1, y1, x2, y2 = d["box"]
    assert 0 <= x1 <= x2 <= 400 and 0 <= y1 <= y2 <= 300
    assert set(first["timings_ms"]) == {"batch", "preprocess", "inference", "postprocess"}
    assert recs[0]["detections"] == recs[1]["detections"]


def test_video_batched(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    if not writer.isOpened():
        pytest.skip("OpenCV here cannot write MJPG/AVI")
    for i in range(5):
        frame = np.full((120, 160, 3), 40 * i, np.uint8)
        cv2.rectangle(frame, (20 + 5 * i, 30), (90, 100), (0, 200, 255), -1)
        writer.write(frame)
    writer.release()
    out = tmp_path / "v.jsonl"
    rc = main([str(MODEL), str(video), "--batch", "2", "--max-frames", "4", "--conf", "0.2",
               "-o", str(out)])  # fmt: skip
    assert rc == 0
    recs = _records(out)
    assert [r["frame"] for r in recs] == [0, 1, 2, 3]
    assert all(r["image_size"] == [160, 120] for r in recs)


def test_bad_inputs_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "o.jsonl"
    rc = main([str(MODEL), str(broken), str(tmp_path / "missing.png"),
               str(FIXTURES / "scene_b.png"), "-o", str(out)])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.jpg: cannot decode as an image" in err
    assert "missing.png: no such file" in err
    assert len(_records(out)) == 1  # the good image still went through


def test_bad_model_and_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.onnx"), str(FIXTURES / "scene_a.png")]) == 1
    assert "error:" in capsys.readouterr().err
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x00" * 64)
    assert main([str(fake), str(FIXTURES / "scene_a.png")]) == 1
    labels = tmp_path / "l.txt"
    labels.write_text("a\nb\n")
    assert main([str(MODEL), str(FIXTURES / "scene_a.png"), "--labels", str(labels)]) == 1
    assert "outputs 20 classes, got 2 names" in capsys.readouterr().err
    # a runtime that is not installed here (or a model it cannot take): one line, status 1
    rc = main([str(MODEL), str(FIXTURES / "scene_a.png"), "--runtime", "torch"])
    assert rc == 1 and "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(MODEL), str(FIXTURES / "scene_a.png"), "--class-conf", "zero"])
    assert exc.value.code == 2


def test_module_entry_point_on_real_model(tmp_path: Path) -> None:
    """`python -m perception.cli.detect` with the real YOLOX-Nano and COCO labels."""
    model = DATA / "yolox_nano.onnx"
    if not model.is_file():
        pytest.skip(f"real assets not available: {model} is absent")
    out = tmp_path / "dog.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "perception.cli.detect", str(model), str(DATA / "darknet_dog.jpg"),
         "--labels", "coco", "--conf", "0.5", "-o", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (rec,) = _records(out)
    assert rec["image_size"] == [768, 576]
    assert [d["class_name"] for d in rec["detections"]] == ["dog", "bicycle", "car"]


def test_defaults_come_from_the_detector_spec() -> None:
    """The CLI's defaults are the detector node's (detector.params.yaml)."""
    from perception.cli.detect import build_parser
    from perception.config import DetectorParams

    args = build_parser().parse_args(["m.onnx", "x.jpg"])
    spec = DetectorParams()
    assert (args.conf, args.iou, args.max_det) == (
        spec.score_threshold,
        spec.iou_threshold,
        spec.max_detections,
    )
    assert (args.runtime, args.device, args.precision, args.threads) == (
        spec.model.runtime,
        spec.model.device,
        spec.model.precision,
        spec.model.threads,
    )


def test_bad_option_values_named_with_the_spec_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main([str(MODEL), str(FIXTURES / "scene_a.png"), "--conf", "2", "--threads", "-1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--conf (score_threshold): expected a value in [0.0, 1.0], got 2.0" in err
    assert "--threads (model.threads): expected a value in [0, 256], got -1" in err
