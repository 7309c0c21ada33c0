"""The main job on files: detect (and track, for videos) and show the result.

    ./dev run PATH [PATH ...] [--model MODEL] [--out DIR]

PATH is an image, a folder of images or a video. Without --model, the
YOLOX-Nano COCO model in ../shared/data is used when present. Writes to
--out (default out/run-<time>/):

- detections.jsonl  one record per image / frame (boxes in original pixels,
                    score, class, track id for videos; oriented boxes,
                    keypoints and masks of -obb / -pose / -seg models, see
                    `add_extras`)
- annotated images (<name>.jpg) or videos (<name>.mp4) with boxes and ids,
  translucent masks, skeletons and rotated boxes
- <name>.masks.png  for images from a -seg model: 16-bit instance-id image,
                    pixel value i + 1 = the image's i-th detection, 0 = none
- summary.json      counts per class, stage timings (ms, p50/p95; tracking_ms
                    is the pipeline's time outside the engine: 2D tracking)

and prints a summary table. No ROS needed: every input is one camera of the
same ROS-free pipeline the nodes drive (perception.pipeline), video frames
stamped index / fps so the tracker sees real time steps. Detector and tracker
defaults are the nodes' (perception/ros/specs/*.params.yaml).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perception.cli.detect import add_detector_options
from perception.core.errors import PerceptionError

log = logging.getLogger("perception.cli.run")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO.parent / "shared" / "data" / "yolox_nano.onnx"
COCO_LABELS = REPO / "config" / "coco80.labels"
RUN_DETECTOR_OPTIONS = [
    "model.runtime",
    "model.device",
    "model.precision",
    "model.threads",
    "score_threshold",
    "iou_threshold",
    "max_detections",
]
"""Detector parameters that are options here (see perception.cli.detect.DETECTOR_FLAGS)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception-run",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    p.add_argument("inputs", nargs="+", type=Path, help="images, folders or videos")
    p.add_argument("--model", type=Path, default=None, help=f"model (default {DEFAULT_MODEL})")
    p.add_argument("--labels", type=Path, default=None, help="class names file, one per line")
    add_detector_options(p, RUN_DETECTOR_OPTIONS)
    p.add_argument("--max-frames", type=int, default=None, help="frames read per video")
    p.add_argument("--fps", type=float, default=None, help="video frame rate (default: the file's)")
    p.add_argument("--no-track", action="store_true", help="do not track objects in videos")
    p.add_argument("--out", type=Path, default=None, help="output folder")
    p.add_argument("--verbose", "-v", action="store_true")
    return p


def mask_rle(crop: np.ndarray) -> list[int]:
    """Run lengths of a bool mask crop in row-major order, starting with a run
    of False (0 when the first pixel is set): alternating off/on counts."""
    flat = np.asarray(crop, bool).ravel()
    if flat.size == 0:
        return []
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def add_extras(records: list[dict[str, Any]], det: Any) -> None:
    """Segmentation, pose and oriented-box outputs in the JSON records:
    "obb" [cx, cy, w, h, theta_rad], "keypoints" [[x, y, confidence], ...],
    "mask" {"box": [x0, y0, x1, y1] (x1/y1 exclusive), "area", "rle": row-major
    run lengths of the mask inside that box, off first (`mask_rle`)}."""
    if det.obb is not None:
        for r, o in zip(records, np.round(det.obb.astype(np.float64), 4).tolist(), strict=True):
            r["obb"] = o
    if det.keypoints is not None:
        kps = np.round(det.keypoints.astype(np.float64), 3)
        for r, k in zip(records, kps.tolist(), strict=True):
            r["keypoints"] = [[None if v != v else v for v in p] for p in k]  # NaN -> null
    if det.masks is not None:
        areas = det.masks.areas.tolist()
        for i, r in enumerate(records):
            r["mask"] = {
                "box": det.masks.boxes[i].tolist(),
                "area": areas[i],
                "rle": mask_rle(det.masks.crops[i]),
            }


def _video_fps(path: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return float(fps) if fps and fps > 0 else 25.0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    import cv2

    from perception.cli.detect import detection_records, detector_params, iter_inputs
    from perception.config import ParameterError, TrackerParams
    from perception.core.overlay import TrailHistory, draw_overlay
    from perception.pipeline import CameraFrame, DetectionStage, Pipeline, build_detector

    model = args.model or DEFAULT_MODEL
    if not model.is_file():
        print(
            f"perception-run: model {model} not found; pass --model (an Ultralytics YOLO/RT-DETR "
            "or YOLOX ONNX export)",
            file=sys.stderr,
        )
        return 1
    labels = args.labels
    if labels is None and args.model is None:
        labels = COCO_LABELS  # the default YOLOX-Nano carries no class names
    try:
        params = detector_params(
            args, str(model), RUN_DETECTOR_OPTIONS, **{"model.labels_file": str(labels or "")}
        )
    except ParameterError as exc:
        print(f"perception-run: {exc}", file=sys.stderr)
        return 2
    out = args.out or REPO / "out" / time.strftime("run-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    try:
        detector = build_detector(
            params.model,
            score_threshold=params.score_threshold,
            iou_threshold=params.iou_threshold,
            max_detections=params.max_detections,
        )
    except (PerceptionError, ValueError) as exc:
        print(f"perception-run: {exc}", file=sys.stderr)
        return 1
    engine = detector.engine
    names = detector.class_names
    tracker = None if args.no_track else TrackerParams().to_config()
    pipelines: dict[str, Pipeline] = {}  # one camera per input
    trails: dict[str, TrailHistory] = defaultdict(TrailHistory)  # per video
    errors: list[str] = []
    writers: dict[str, Any] = {}
    fps_of: dict[str, float] = {}
    counts: Counter[str] = Counter()
    tracks: dict[str, set[int]] = defaultdict(set)
    timings: dict[str, list[float]] = defaultdict(list)
    frames = 0
    t_start = time.perf_counter()
    with (out / "detections.jsonl").open("w") as jsonl:
        for source, index, image in iter_inputs(args.inputs, args.max_frames, errors):
            video = index is not None
            pipeline = pipelines.get(source)
            if pipeline is None:
                stage = DetectionStage(detector, [source], tracker=tracker if video else None)
                pipeline = pipelines[source] = Pipeline(stage)
            stamp_ns = 0
            if index is not None:
                fps = fps_of.setdefault(source, args.fps or _video_fps(Path(source)))
                stamp_ns = round(index * 1e9 / fps)
            frame = CameraFrame(camera=source, image=image, stamp_ns=stamp_ns, frame_id=source)
            t0 = time.perf_counter()
            where = f"{source}" + (f"#{index}" if video else "")
            try:
                results = pipeline.process([frame])
            except PerceptionError as exc:
                errors.append(f"{where}: {exc}")
                continue
            if not results:  # the stage refused the frame (counted): say why
                errors.append(f"{where}: {pipeline.detection.last_error.get(source, 'refused')}")
                continue
            (result,) = results
            wall_ms = (time.perf_counter() - t0) * 1e3
            for stage_name in ("preprocess_ms", "inference_ms", "postprocess_ms"):
                timings[stage_name].append(result.latency[stage_name])
            det = result.detections
            if result.tracks is not None:
                det = result.tracks
                timings["tracking_ms"].append(max(wall_ms - result.engine_ms, 0.0))
                tracks[source].update(int(i) for i in det.track_ids if i >= 0)
            frames += 1
            counts.update(names[c] if 0 <= c < len(names) else str(c) for c in det.class_ids)
            records = detection_records(det, names)
            for r, tid in zip(records, det.track_ids.tolist(), strict=True):
                if tid >= 0:
                    r["track_id"] = tid
            add_extras(records, det)
            h, w = image.shape[:2]
            line = {"source": source, "frame": index, "image_size": [w, h], "detections": records}
            name = Path(source).stem
            if det.masks is not None and not video:
                # exact masks of the whole image: value i + 1 = records[i], 0 = none
                ids = det.masks.to_id_image(np.arange(1, len(det) + 1), np.uint16)
                cv2.imwrite(str(out / f"{name}.masks.png"), ids)
                line["masks_png"] = f"{name}.masks.png"
            jsonl.write(json.dumps(line) + "\n")
            trail = None
            if result.tracks is not None:
                trail = trails[source]
                trail.update(det)
            drawn = draw_overlay(image, det, names, trails=trail, copy=False)
            if not video:
                cv2.imwrite(str(out / f"{name}.jpg"), drawn)
            else:
                if source not in writers:
                    writers[source] = cv2.VideoWriter(
                        str(out / f"{name}.mp4"),
                        cv2.VideoWriter.fourcc(*"mp4v"),
                        fps_of[source],
                        (w, h),
                    )
                writers[source].write(drawn)
    for wr in writers.values():
        wr.release()
    engine.close()
    wall = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        "model": str(model),
        "engine": engine.info.name,
        "runtime": engine.info.runtime,
        "family": detector.family,
        "frames": frames,
        "wall_s": round(wall, 3),
        "detections_per_class": dict(counts.most_common()),
        "tracks_per_video": {k: len(v) for k, v in tracks.items()},
        "timings_ms": {
            k: {
                "p50": round(float(np.percentile(v, 50)), 3),
                "p95": round(float(np.percentile(v, 95)), 3),
            }
            for k, v in timings.items()
            if v
        },
        "errors": errors,
        "output": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{frames} frame(s) from {len(args.inputs)} input(s), model {model.name} "
        f"({detector.family}, {engine.info.runtime}), {wall:.1f} s"
    )
    for k, v in summary["timings_ms"].items():
        print(f"  {k:<16} p50 {v['p50']:8.2f} ms   p95 {v['p95']:8.2f} ms")
    for cls, n in counts.most_common(10):
        print(f"  {cls:<16} {n} detection(s)")
    for src, n in summary["tracks_per_video"].items():
        print(f"  {Path(src).name}: {n} track(s)")
    for e in errors:
        print(f"  error: {e}", file=sys.stderr)
    print(f"output: {out}")
    return 1 if errors and frames == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
