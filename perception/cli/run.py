"""The main job on files: detect (and track, for videos) and show the result.

    ./dev run PATH [PATH ...] [--model MODEL] [--out DIR]

PATH is an image, a folder of images or a video. Without --model, the
YOLOX-Nano COCO model in ../shared/data is used when present. Writes to
--out (default out/run-<time>/):

- detections.jsonl  one record per image / frame (boxes in original pixels,
                    score, class, track id for videos)
- annotated images (<name>.jpg) or videos (<name>.mp4) with boxes and ids
- summary.json      counts per class, stage timings (ms, p50/p95)

and prints a summary table. No ROS needed: this is the same detector and
tracker the nodes run.
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

from perception.core.errors import PerceptionError

log = logging.getLogger("perception.cli.run")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO.parent / "shared" / "data" / "yolox_nano.onnx"
COCO_LABELS = REPO / "config" / "coco80.labels"


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
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--device", default="cpu")
    p.add_argument("--conf", type=float, default=0.3, help="score threshold")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-frames", type=int, default=None, help="frames read per video")
    p.add_argument("--fps", type=float, default=None, help="video frame rate (default: the file's)")
    p.add_argument("--no-track", action="store_true", help="do not track objects in videos")
    p.add_argument("--out", type=Path, default=None, help="output folder")
    p.add_argument("--verbose", "-v", action="store_true")
    return p


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

    from perception.cli.detect import detection_records, iter_inputs
    from perception.core.detector import Detector
    from perception.core.engines.config import EngineConfig
    from perception.core.engines.factory import create_engine
    from perception.core.overlay import TrailHistory, draw_overlay
    from perception.core.tracking.multi import MultiCameraTracker

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
    out = args.out or REPO / "out" / time.strftime("run-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(
            EngineConfig(model_path=str(model), runtime=args.runtime, device=args.device)
        )
        detector = Detector(engine, conf=args.conf, iou=args.iou, labels_file=labels)
    except (PerceptionError, ValueError) as exc:
        print(f"perception-run: {exc}", file=sys.stderr)
        return 1
    names = detector.class_names
    tracker = None if args.no_track else MultiCameraTracker()
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
            det = detector.detect([image], frame_ids=[source])[0]
            t = detector.last_timings
            timings["preprocess_ms"].append(t.preprocess_ms)
            timings["inference_ms"].append(t.inference_ms)
            timings["postprocess_ms"].append(t.postprocess_ms)
            if index is not None and tracker is not None:
                fps = fps_of.setdefault(source, args.fps or _video_fps(Path(source)))
                det = _stamped(det, round(index * 1e9 / fps))
                t0 = time.perf_counter()
                det = tracker.update(det)
                timings["tracking_ms"].append((time.perf_counter() - t0) * 1e3)
                tracks[source].update(int(i) for i in det.track_ids if i >= 0)
            frames += 1
            counts.update(names[c] if 0 <= c < len(names) else str(c) for c in det.class_ids)
            records = detection_records(det, names)
            for r, tid in zip(records, det.track_ids.tolist(), strict=True):
                if tid >= 0:
                    r["track_id"] = tid
            h, w = image.shape[:2]
            jsonl.write(
                json.dumps(
                    {"source": source, "frame": index, "image_size": [w, h], "detections": records}
                )
                + "\n"
            )
            trail = None
            if index is not None and tracker is not None:
                trail = trails[source]
                trail.update(det)
            drawn = draw_overlay(image, det, names, trails=trail, copy=False)
            name = Path(source).stem
            if index is None:
                cv2.imwrite(str(out / f"{name}.jpg"), drawn)
            else:
                if source not in writers:
                    writers[source] = cv2.VideoWriter(
                        str(out / f"{name}.mp4"),
                        cv2.VideoWriter_fourcc(*"mp4v"),
                        fps_of.get(source) or _video_fps(Path(source)),
                        (w, h),
                    )
                writers[source].write(drawn)
    for wr in writers.values():
        wr.release()
    wall = time.perf_counter() - t_start
    summary = {
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


def _stamped(det: Any, stamp_ns: int) -> Any:
    """Copy of `det` stamped with the frame time (video frames have no stamp)."""
    from dataclasses import replace

    return replace(det, stamp_ns=stamp_ns)


if __name__ == "__main__":
    sys.exit(main())
