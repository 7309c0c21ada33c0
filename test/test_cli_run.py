"""The main job on files (./dev run): outputs written, tracks for videos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("cv2")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def test_run_on_image_and_video(tmp_path):
    from perception.cli.run import main

    if not (SHARED / "yolox_nano.onnx").is_file():
        pytest.skip(f"real assets not available: {SHARED} is absent")
    out = tmp_path / "out"
    code = main([str(SHARED / "udacity_vd_test_video.mp4"), str(SHARED / "darknet_dog.jpg"),
                 "--max-frames", "12", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert (out / "darknet_dog.jpg").is_file() and (out / "udacity_vd_test_video.mp4").is_file()
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(records) == 13
    dog = next(r for r in records if r["source"].endswith("darknet_dog.jpg"))
    assert {d["class_name"] for d in dog["detections"]} >= {"dog", "bicycle", "car"}
    video = [r for r in records if r["frame"] is not None]
    ids = {d["track_id"] for r in video[4:] for d in r["detections"] if "track_id" in d}
    assert len(ids) == 2, ids  # the same two cars through the clip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 13 and summary["tracks_per_video"]


def test_run_reports_a_missing_model(tmp_path, capsys):
    from perception.cli.run import main

    assert main([str(tmp_path), "--model", str(tmp_path / "none.onnx")]) == 1
    assert "not found" in capsys.readouterr().err


def test_run_defaults_come_from_the_detector_spec():
    from perception.cli.run import build_parser
    from perception.config import DetectorParams

    args = build_parser().parse_args(["x.jpg"])
    spec = DetectorParams()
    assert (args.conf, args.iou, args.max_det, args.runtime, args.threads) == (
        spec.score_threshold,
        spec.iou_threshold,
        spec.max_detections,
        spec.model.runtime,
        spec.model.threads,
    )


def test_run_refuses_bad_values_with_the_spec_message(tmp_path, capsys):
    from perception.cli.run import main

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    assert main([str(tmp_path), "--model", str(model), "--iou", "-1"]) == 2
    assert "--iou (iou_threshold): expected a value in [0.0, 1.0]" in capsys.readouterr().err
