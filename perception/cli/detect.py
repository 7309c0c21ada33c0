"""Run a detector on image files, folders or videos and write JSON Lines.

Meant for checking a model before launching nodes: the same `Detector`
(preprocessing, decoding, NMS, mapping to original pixels) the nodes use, no
ROS needed. One record per image or video frame:

    {"source": "cam.jpg", "frame": null, "image_size": [1280, 720],
     "detections": [{"box": [x1, y1, x2, y2], "score": 0.91,
                     "class_id": 2, "class_name": "car"}, ...]}

Usage:
    python -m perception.cli.detect MODEL INPUT [INPUT ...] [--output out.jsonl]

Defaults (score threshold, NMS IoU, runtime, ...) are the detector node's,
read from perception/ros/specs/detector.params.yaml; images go through the
same `perception.pipeline` stage as in the node (--batch N: N images per
engine call, as N cameras).

Exit status: 0 on success, 1 if an input could not be read or the model could
not be loaded (the reason is printed on one line), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import numpy as np

from perception.core.errors import PerceptionError

log = logging.getLogger("perception.cli.detect")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
DETECTOR_FLAGS = {
    "model.runtime": "--runtime",
    "model.device": "--device",
    "model.precision": "--precision",
    "model.cache_dir": "--cache-dir",
    "model.fallback_runtime": "--fallback",
    "model.threads": "--threads",
    "model.family": "--family",
    "model.pixel_input": "--pixel-input",
    "score_threshold": "--conf",
    "iou_threshold": "--iou",
    "max_detections": "--max-det",
}
"""Detector node parameter -> command-line option (type, default, choices and
help come from the parameter's spec)."""

_HELP = {
    "model.runtime": "inference runtime; nothing falls back to another runtime unless "
    "--fallback is set",
    "model.cache_dir": "engine cache folder (compiled runtimes; onnxruntime: optimised graph); "
    "empty = the default cache directory",
}
"""Help texts that name options instead of the node's parameters."""


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_detector_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, names: Sequence[str]
) -> None:
    """Add the options of DETECTOR_FLAGS named in `names`, from the detector spec."""
    from perception.cli.spec_options import add_spec_option
    from perception.config import DetectorParams

    specs = DetectorParams.specs()
    for name in names:
        add_spec_option(parser, DETECTOR_FLAGS[name], specs[name], text=_HELP.get(name))


def detector_params(
    args: argparse.Namespace, model: str, names: Sequence[str], **values: Any
) -> Any:
    """The validated `DetectorParams` of the options in `names` (plus `values`,
    flat spec names such as model.labels_file); raises ParameterError naming
    the option."""
    from perception.cli.spec_options import params_from_options
    from perception.config import DetectorParams

    flat = {name: getattr(args, _dest(DETECTOR_FLAGS[name])) for name in names}
    flat.update({"model.path": model, **values})
    return params_from_options(DetectorParams, flat, {n: DETECTOR_FLAGS[n] for n in names})


def _class_conf(text: str) -> dict[int, float]:
    """ "0=0.5,2=0.3" -> {0: 0.5, 2: 0.3}."""
    out: dict[int, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected CLASS_ID=THRESHOLD, got {part!r}")
        try:
            out[int(key)] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected CLASS_ID=THRESHOLD, got {part!r}") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception_detect",
        description="Detect objects in images, folders or videos; write JSON Lines.",
    )
    p.add_argument(
        "model",
        type=Path,
        help="model file: .onnx (onnxruntime, tensorrt), serialized TensorRT plan, "
        "TorchScript/ExportedProgram (torch, torch_tensorrt)",
    )
    p.add_argument("inputs", nargs="+", type=Path, help="image files, folders or videos")
    add_detector_options(p, list(DETECTOR_FLAGS))
    p.add_argument(
        "--class-conf",
        type=_class_conf,
        default=None,
        metavar="ID=T,...",
        help="per-class score thresholds, e.g. 0=0.5,2=0.3",
    )
    p.add_argument(
        "--labels",
        default=None,
        help="class names file (one per line) or 'coco'; default: model metadata",
    )
    p.add_argument(
        "--imgsz",
        type=int,
        nargs="+",
        default=None,
        help="input size (H [W]) for models with dynamic spatial axes",
    )
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    p.add_argument("--multi-label", action="store_true", help="every class above conf per box")
    p.add_argument("--batch", type=int, default=1, help="images per engine call (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="frames read per video")
    p.add_argument("--output", "-o", default="-", help="JSON Lines file (default stdout)")
    p.add_argument(
        "--timings", action="store_true", help="add per-batch stage timings (ms) to every record"
    )
    p.add_argument("--verbose", "-v", action="store_true")
    return p


Item = tuple[str, int | None, np.ndarray]


def iter_inputs(paths: Sequence[Path], max_frames: int | None, errors: list[str]) -> Iterator[Item]:
    """(source, frame index or None, BGR image) for every image and frame.

    Unreadable inputs are reported in `errors` and skipped.
    """
    import cv2

    for path in paths:
        if path.is_dir():
            children = sorted(
                c for c in path.iterdir() if c.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
            )
            if not children:
                errors.append(f"{path}: folder holds no images or videos")
            yield from iter_inputs(children, max_frames, errors)
            continue
        if not path.is_file():
            errors.append(f"{path}: no such file")
            continue
        if path.suffix.lower() in VIDEO_SUFFIXES:
            cap = cv2.VideoCapture(str(path))
            if not cap.isOpened():
                errors.append(f"{path}: cannot open as a video")
                continue
            index = 0
            try:
                while max_frames is None or index < max_frames:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    yield str(path), index, frame
                    index += 1
            finally:
                cap.release()
            if index == 0:
                errors.append(f"{path}: no frame could be decoded")
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            errors.append(f"{path}: cannot decode as an image")
            continue
        yield str(path), None, image


def _batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _sources(items: Sequence[Item]) -> str:
    """ "a.mp4#3, b.jpg": the inputs of a batch, for error lines."""
    return ", ".join(f"{s}" + (f"#{f}" if f is not None else "") for s, f, _ in items)


def detection_records(det: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """Per-detection JSON-ready dicts (boxes rounded to 0.01 px)."""
    boxes = np.round(det.xyxy.astype(np.float64), 2).tolist()
    scores = np.round(det.scores.astype(np.float64), 5).tolist()
    ids = det.class_ids.tolist()
    return [
        {
            "box": b,
            "score": s,
            "class_id": c,
            "class_name": names[c] if 0 <= c < len(names) else str(c),
        }
        for b, s, c in zip(boxes, scores, ids, strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.batch < 1:
        print("error: --batch: expected >= 1", file=sys.stderr)
        return 2
    imgsz: int | tuple[int, int] | None = None
    if args.imgsz:
        if len(args.imgsz) > 2:
            print(f"error: --imgsz: expected H or H W, got {args.imgsz}", file=sys.stderr)
            return 2
        imgsz = (args.imgsz[0], args.imgsz[-1])
    from perception.config import ParameterError

    try:
        params = detector_params(
            args, str(args.model), list(DETECTOR_FLAGS), **{"model.labels_file": args.labels or ""}
        )
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from perception.pipeline import CameraFrame, DetectionStage, Pipeline, build_detector

    try:
        detector = build_detector(
            params.model,
            score_threshold=params.score_threshold,
            iou_threshold=params.iou_threshold,
            max_detections=params.max_detections,
            class_conf=args.class_conf,
            agnostic=args.agnostic,
            multi_label=args.multi_label,
            imgsz=imgsz,
        )
    except (PerceptionError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # --batch N: N camera slots, one engine call over the batch, as in the node
    slots = [str(i) for i in range(args.batch)]
    pipeline = Pipeline(DetectionStage(detector, slots))
    errors: list[str] = []
    count = 0
    names = detector.class_names
    with ExitStack() as stack:
        stack.callback(pipeline.close)
        out: IO[str]
        if args.output == "-":
            out = sys.stdout
        else:
            out = stack.enter_context(open(args.output, "w", encoding="utf-8"))
        for chunk in _batches(iter_inputs(args.inputs, args.max_frames, errors), args.batch):
            frames = [
                CameraFrame(camera=slot, image=img, stamp_ns=0, frame_id=source)
                for slot, (source, _, img) in zip(slots, chunk, strict=False)
            ]
            try:
                results = {r.camera: r for r in pipeline.process(frames)}
            except PerceptionError as exc:
                errors.append(f"{_sources(chunk)}: {exc}")
                continue
            timings = detector.last_timings
            for slot, item in zip(slots, chunk, strict=False):
                source, frame, _ = item
                result = results.get(slot)
                if result is None:  # the stage refused the image (counted, logged)
                    errors.append(f"{_sources([item])}: image refused by the detector")
                    continue
                det = result.detections
                record: dict[str, Any] = {
                    "source": source,
                    "frame": frame,
                    "image_size": list(det.image_size),
                    "detections": detection_records(det, names),
                }
                if args.timings:
                    record["timings_ms"] = {
                        "batch": timings.batch_size,
                        "preprocess": round(timings.preprocess_ms, 3),
                        "inference": round(timings.inference_ms, 3),
                        "postprocess": round(timings.postprocess_ms, 3),
                    }
                out.write(json.dumps(record) + "\n")
                count += 1
        out.flush()
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    log.info("%d records written", count)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
