"""The detection pipeline: images -> engine -> boxes in original pixels.

`Detector` wires one `Engine` (any runtime) to the family-specific pieces:
`Preprocessor` (letterbox/resize into a batch tensor), `Decoder` (raw output
-> candidates), class-aware NMS and the inverse mapping to each image's own
pixels. Segmentation, pose and oriented-box models (`ModelLayout.task`) also
fill `Detections.masks` (computed inside each box at the image's resolution,
`perception.core.masks`), `.keypoints` or `.obb`, matching Ultralytics'
predictor (``retina_masks=True`` for masks). Every call records how long
each stage took, so a node can publish the split and a benchmark can compare
it with the bare runtime.
"""

from __future__ import annotations

import ast
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from perception.core.decoders import (
    DEFAULT_LABELS_MAX_BYTES,
    Candidates,
    Decoder,
    ModelLayout,
    NonFiniteOutputError,
    resolve_layout,
)
from perception.core.engines.base import Engine, EngineInfo
from perception.core.engines.pixel_input import PixelInput
from perception.core.errors import DecodeError, EngineError, InputImageError, ModelLayoutError
from perception.core.masks import process_masks
from perception.core.nms import batched_nms, nms_rotated
from perception.core.preprocess import ImageTransform, Preprocessor, PreprocessSpec
from perception.core.types import Detections, InstanceMasks

__all__ = ["Detector", "ImageFailure", "StageTimings"]

log = logging.getLogger(__name__)

DEFAULT_IMGSZ = 640


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds spent in each stage of one `detect` call (whole batch)."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    batch_size: int = 0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(frozen=True)
class ImageFailure:
    """Why one image of a batch has no detections (`Detector.detect_each`);
    the other images of the batch are not affected.

    `kind` is a short counter name: "nonfinite_output" (NaN/inf in the
    model output under nonfinite="raise"), "bad_output" (e.g. a class id out
    of range) or "postprocess_error" (anything else after the engine call).
    """

    index: int
    kind: str
    error: Exception

    @property
    def message(self) -> str:
        return str(self.error)


def _failure_kind(exc: Exception) -> str:
    if isinstance(exc, NonFiniteOutputError):
        return "nonfinite_output"
    if isinstance(exc, DecodeError):
        return "bad_output"
    return "postprocess_error"


def _imgsz_from_metadata(meta: Mapping[str, str]) -> tuple[int, int] | None:
    text = meta.get("imgsz")
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


class Detector:
    """Detect objects in batches of images with one engine.

    Args:
        engine: a loaded `Engine` (ONNX Runtime, TensorRT, PyTorch...).
        family: "auto" (from metadata and output shapes) or a family name
            (see `perception.core.decoders.FAMILIES`).
        conf: score threshold (strictly greater passes).
        iou: IoU threshold of class-aware NMS (strictly greater suppresses);
            a mapping/sequence gives per-class values.
        max_det: most detections kept per image.
        class_conf: optional per-class score thresholds (class id -> value;
            classes not listed use `conf`).
        agnostic: NMS across classes.
        multi_label: keep every class above threshold per box, not the best.
        class_names / labels_file: override the model's class names.
        labels_max_bytes: a labels file bigger than this (or not a regular
            file) is refused.
        imgsz: (H, W) or side the images are fitted into when the model has
            dynamic spatial axes; default from metadata 'imgsz', else 640.
        rect: with dynamic spatial axes, use the smallest stride-aligned
            rectangle instead of the full imgsz square.
        input_color: channel order of the images passed to `detect`.
        nonfinite: "raise" (that image fails with NonFiniteOutputError, see
            `detect_each`) or "drop" the rows with NaN/inf outputs (counted
            per image in `last_nonfinite_rows`).
        preprocess: override the family's `PreprocessSpec`.
        yolox_decoded: force YOLOX raw (False) / decoded (True) boxes.
        pixel_input: "auto" folds the uint8->float conversion, channel swap and
            scale into the model when the engine can (ONNX Runtime, input
            feeding only Conv, no mean offset; see
            `perception.core.engines.pixel_input`), so preprocessing is only the
            resize; "required" raises EngineError with the reason otherwise;
            "disabled" keeps the float NCHW path.

    Not thread-safe: the preprocessing buffers are reused between calls, so
    use one Detector per thread (engines may be shared if they allow it).
    """

    def __init__(
        self,
        engine: Engine,
        family: str = "auto",
        conf: float = 0.25,
        iou: float | Mapping[int, float] | Sequence[float] = 0.45,
        max_det: int = 300,
        *,
        class_conf: Mapping[int, float] | Sequence[float] | None = None,
        agnostic: bool = False,
        multi_label: bool = False,
        class_names: Sequence[str] | None = None,
        labels_file: str | Path | None = None,
        labels_max_bytes: int = DEFAULT_LABELS_MAX_BYTES,
        imgsz: int | tuple[int, int] | None = None,
        rect: bool = True,
        input_color: Literal["bgr", "rgb"] = "bgr",
        nonfinite: Literal["raise", "drop"] = "raise",
        max_candidates: int = 30000,
        preprocess: PreprocessSpec | None = None,
        yolox_decoded: bool | None = None,
        pixel_input: Literal["auto", "required", "disabled"] = "auto",
    ) -> None:
        if pixel_input not in ("auto", "required", "disabled"):
            raise ValueError(
                f"pixel_input: expected 'auto', 'required' or 'disabled', got {pixel_input!r}"
            )
        if max_det < 1:
            raise ValueError(f"max_det: expected >= 1, got {max_det}")
        if isinstance(iou, (int, float)) and not 0.0 <= iou <= 1.0:
            raise ValueError(f"iou: expected 0..1, got {iou}")
        self.engine = engine
        info = engine.info
        self.layout: ModelLayout = resolve_layout(
            info,
            family,
            class_names=class_names,
            labels_file=labels_file,
            labels_max_bytes=labels_max_bytes,
        )
        self.iou = iou
        self.max_det = int(max_det)
        self.agnostic = agnostic
        self.decoder = Decoder(
            self.layout,
            conf,
            class_conf=class_conf,
            multi_label=multi_label,
            max_candidates=max_candidates,
            nonfinite=nonfinite,
            yolox_decoded=yolox_decoded,
        )
        try:
            stride = int(info.metadata.get("stride", 32) or 32)
        except ValueError:
            stride = 32  # e.g. a list of strides: 32 is the usual coarsest one
        spec = preprocess or self.layout.preprocess_spec(stride)
        if imgsz is None:
            target = _imgsz_from_metadata(info.metadata) or (DEFAULT_IMGSZ, DEFAULT_IMGSZ)
        elif isinstance(imgsz, int):
            target = (imgsz, imgsz)
        else:
            target = (int(imgsz[0]), int(imgsz[1]))
        self._spec, self._target = spec, target
        self._rect = rect and self.layout.family != "rtdetr"
        self._input_color = input_color
        self._pixel_mode = pixel_input
        self.pixel_input_reason = ""
        self._generation = engine.generation
        self.preprocessor = self._make_preprocessor(info)
        self.last_timings = StageTimings()
        self.last_nonfinite_rows: list[int] = []
        log.info(
            "detector: family %s%s, %d classes (%s), input %s, runtime %s",
            self.layout.family,
            f"/{self.layout.variant}" if self.layout.variant else "",
            self.layout.num_classes,
            "; ".join(self.layout.notes),
            info.input_shape,
            info.runtime,
        )

    def _make_preprocessor(self, info: EngineInfo) -> Preprocessor:
        h, w = info.input_shape[2], info.input_shape[3]
        if (h > 0) != (w > 0):
            raise ModelLayoutError(
                "model input: expected both or neither spatial axes dynamic, "
                f"got {info.input_shape}"
            )
        pre = Preprocessor(
            self._spec,
            (h, w) if h > 0 else None,
            self._target,
            rect=self._rect,
            input_color=self._input_color,
        )
        if self._pixel_mode == "disabled":
            self.pixel_input_reason = "pixel_input is disabled"
            return pre
        fold = pre.pixel_input()
        if fold is None:
            reason: str | None = "the preprocessing subtracts a mean (cannot be folded)"
        else:
            reason = self.engine.enable_pixel_input(PixelInput(*fold))
        if reason is None:
            self.pixel_input_reason = ""
            pre.pixels = True
            return pre
        self.pixel_input_reason = reason
        if self._pixel_mode == "required":
            raise EngineError(f"pixel_input 'required': {reason}")
        log.info("detector: float input path (pixel input not used: %s)", reason)
        return pre

    def _follow_engine_swap(self) -> None:
        """A CachedEngine swaps its fallback for the built engine in the
        background (`generation` increments); the new one may have a fixed input
        size where the fallback had a dynamic one, so re-derive the input shape."""
        gen = self.engine.generation
        if gen != self._generation:
            info = self.engine.info
            self.preprocessor = self._make_preprocessor(info)
            self._generation = gen
            log.info("detector: engine swapped to %s, input %s", info.name, info.input_shape)

    def set_thresholds(
        self,
        conf: float | None = None,
        iou: float | Mapping[int, float] | Sequence[float] | None = None,
        max_det: int | None = None,
    ) -> None:
        """Change thresholds between `detect` calls (e.g. from a parameter
        callback). Every value is validated before anything changes, so a bad
        one leaves the detector as it was; None keeps the current value."""
        if max_det is not None and int(max_det) < 1:
            raise ValueError(f"max_det: expected >= 1, got {max_det}")
        if isinstance(iou, (int, float)) and not 0.0 <= float(iou) <= 1.0:
            raise ValueError(f"iou: expected a value in [0.0, 1.0], got {iou}")
        if conf is not None:
            self.decoder.set_conf(float(conf))  # validates, then applies
        if iou is not None:
            self.iou = iou
        if max_det is not None:
            self.max_det = int(max_det)

    @property
    def conf(self) -> float:
        """Current score threshold (change it with `set_thresholds`)."""
        return self.decoder.conf

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.layout.class_names

    @property
    def family(self) -> str:
        return self.decoder.layout.family

    @property
    def task(self) -> str:
        """The task: "detect", "segment" (masks), "pose" (keypoints) or "obb" (oriented
        boxes), i.e. which optional `Detections` fields this detector fills."""
        return self.decoder.layout.task

    def detect(
        self,
        images: Sequence[np.ndarray],
        stamps_ns: Sequence[int] | None = None,
        frame_ids: Sequence[str] | None = None,
    ) -> list[Detections]:
        """Detect in a batch of uint8 HxWx3 images (any sizes, one engine call).

        Returns one `Detections` per image, boxes in that image's pixels,
        clipped to it, sorted by score; stamps and frame ids are copied on.
        Raises the error of the first image that failed (DecodeError...); use
        `detect_each` to keep the other images' results.
        """
        results = self.detect_each(images, stamps_ns, frame_ids)
        for r in results:
            if isinstance(r, ImageFailure):
                raise r.error
        return [r for r in results if isinstance(r, Detections)]

    def detect_each(
        self,
        images: Sequence[np.ndarray],
        stamps_ns: Sequence[int] | None = None,
        frame_ids: Sequence[str] | None = None,
    ) -> list[Detections | ImageFailure]:
        """`detect`, with each image's post-processing isolated: an image whose
        outputs cannot be decoded (non-finite values, bad class ids) or mapped
        back gets an `ImageFailure` in its place and the others their
        `Detections`. What concerns the whole batch (bad arguments,
        preprocessing, the engine call, an output layout that does not match
        the model) raises."""
        n = len(images)
        self.last_nonfinite_rows = [0] * n
        if n == 0:
            return []
        if stamps_ns is not None and len(stamps_ns) != n:
            raise InputImageError(f"stamps_ns: expected {n} values, got {len(stamps_ns)}")
        if frame_ids is not None and len(frame_ids) != n:
            raise InputImageError(f"frame_ids: expected {n} values, got {len(frame_ids)}")
        self._follow_engine_swap()
        t0 = time.perf_counter()
        batch, transforms = self.preprocessor(images)
        t1 = time.perf_counter()
        if self.preprocessor.pixels:
            outputs = self.engine.infer_pixels(batch)
        else:
            outputs = self.engine.infer(batch)
        t2 = time.perf_counter()
        input_hw = (batch.shape[2], batch.shape[3])  # NCHW in both modes
        out = self.decoder.batch_output(outputs, input_hw)
        if out.shape[0] != n:
            raise ModelLayoutError(f"model output: expected {n} images, got {out.shape[0]}")
        protos = None
        if self.decoder.layout.task == "segment":
            protos = self.decoder.batch_protos(outputs, input_hw)
            if protos.shape[0] != n:
                raise ModelLayoutError(
                    f"prototype output: expected {n} images, got {protos.shape[0]}"
                )
        results: list[Detections | ImageFailure] = []
        for i, tf in enumerate(transforms):
            stamp = int(stamps_ns[i]) if stamps_ns is not None else 0
            frame = frame_ids[i] if frame_ids is not None else ""
            dropped = self.decoder.nonfinite_rows
            try:
                cand = self.decoder.decode_image(out[i], i, input_hw)
                results.append(
                    self._finish(cand, tf, stamp, frame, None if protos is None else protos[i])
                )
            except Exception as exc:  # this image only: the others go on
                results.append(ImageFailure(i, _failure_kind(exc), exc))
            self.last_nonfinite_rows[i] = self.decoder.nonfinite_rows - dropped
        t3 = time.perf_counter()
        self.last_timings = StageTimings(
            (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, batch_size=n
        )
        return results

    def _finish(
        self,
        cand: Candidates,
        tf: ImageTransform,
        stamp: int,
        frame: str,
        protos: np.ndarray | None = None,
    ) -> Detections:
        """NMS (for families that need it), best `max_det`, original pixels;
        masks, keypoints or oriented boxes for the other tasks."""
        size = tf.orig_size
        lay = self.decoder.layout
        if len(cand) == 0:
            return self._empty(stamp, frame, size)
        if lay.task == "obb" and cand.extra is not None:
            keep = nms_rotated(
                cand.extra[:, :5], cand.scores, cand.class_ids, self.iou,
                agnostic=self.agnostic, max_det=self.max_det,
            )  # fmt: skip
        elif lay.needs_nms:
            keep = batched_nms(
                cand.xyxy, cand.scores, cand.class_ids, self.iou,
                agnostic=self.agnostic, max_det=self.max_det,
            )  # fmt: skip
        else:
            keep = np.argsort(-cand.scores, kind="stable")[: self.max_det]
        kept = cand.take(keep)
        xyxy = tf.boxes_to_original(kept.xyxy)
        masks: InstanceMasks | None = None
        keypoints: np.ndarray | None = None
        obb: np.ndarray | None = None
        extra = kept.extra
        if lay.task == "segment" and extra is not None and protos is not None:
            masks = process_masks(protos, extra, xyxy, tf)
            # as Ultralytics' predictor: a detection whose mask is empty is dropped
            nonempty = np.fromiter((c.any() for c in masks.crops), bool, len(masks))
            if not nonempty.all():
                rows = np.flatnonzero(nonempty)
                kept, xyxy, masks = kept.take(rows), xyxy[rows], masks[rows]
        elif lay.task == "pose" and extra is not None:
            keypoints = _keypoints_to_original(extra, lay.kpt_shape, tf)
        elif lay.task == "obb" and extra is not None:
            obb = _rboxes_to_original(extra, tf)
            xyxy = _rbox_hull(obb, size)
        return Detections.from_arrays(
            xyxy,
            kept.scores,
            kept.class_ids,
            stamp_ns=stamp,
            frame_id=frame,
            image_size=size,
            masks=masks,
            keypoints=keypoints,
            obb=obb,
        )

    def _empty(self, stamp: int, frame: str, size: tuple[int, int]) -> Detections:
        """No detections, with the task's optional fields present (empty)."""
        lay = self.decoder.layout
        d = Detections.empty(stamp_ns=stamp, frame_id=frame, image_size=size)
        if lay.task == "segment":
            return Detections.from_arrays(
                d.xyxy, d.scores, d.class_ids, stamp_ns=stamp, frame_id=frame,
                image_size=size, masks=InstanceMasks.empty(size),
            )  # fmt: skip
        if lay.task == "pose":
            return Detections.from_arrays(
                d.xyxy, d.scores, d.class_ids, stamp_ns=stamp, frame_id=frame,
                image_size=size, keypoints=np.zeros((0, lay.kpt_shape[0], 3), np.float32),
            )  # fmt: skip
        if lay.task == "obb":
            return Detections.from_arrays(
                d.xyxy, d.scores, d.class_ids, stamp_ns=stamp, frame_id=frame,
                image_size=size, obb=np.zeros((0, 5), np.float32),
            )  # fmt: skip
        return d

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return self.detect(images)


def _keypoints_to_original(
    values: np.ndarray, kpt_shape: tuple[int, int], tf: ImageTransform
) -> np.ndarray:
    """(N, K*D) keypoint values in tensor pixels -> (N, K, 3) x, y in original
    pixels (clipped to the image, as Ultralytics' scale_coords) and the
    visibility (1.0 when the model has none)."""
    k, d = kpt_shape
    kp = values.reshape(-1, k, d)
    out = np.ones((kp.shape[0], k, 3), dtype=np.float32)
    sx, sy = tf.scale
    left, top = tf.offset
    w, h = tf.orig_size
    out[..., 0] = np.clip((kp[..., 0] - left) / sx, 0.0, w)
    out[..., 1] = np.clip((kp[..., 1] - top) / sy, 0.0, h)
    if d == 3:
        out[..., 2] = kp[..., 2]
    return out


def _rboxes_to_original(rboxes: np.ndarray, tf: ImageTransform) -> np.ndarray:
    """(N, 5) cx, cy, w, h, angle in tensor pixels -> original pixels (not
    clipped; width and height scaled per axis as Ultralytics' scale_boxes)."""
    sx, sy = tf.scale
    left, top = tf.offset
    out = np.empty((rboxes.shape[0], 5), dtype=np.float32)
    out[:, 0] = (rboxes[:, 0] - left) / sx
    out[:, 1] = (rboxes[:, 1] - top) / sy
    out[:, 2] = rboxes[:, 2] / sx
    out[:, 3] = rboxes[:, 3] / sy
    out[:, 4] = rboxes[:, 4]
    return out


def _rbox_hull(obb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, 4) axis-aligned hull of oriented boxes, clipped to the image."""
    cos, sin = np.cos(obb[:, 4]), np.sin(obb[:, 4])
    half_x = np.abs(obb[:, 2] * cos) / 2 + np.abs(obb[:, 3] * sin) / 2
    half_y = np.abs(obb[:, 2] * sin) / 2 + np.abs(obb[:, 3] * cos) / 2
    out = np.stack(
        [obb[:, 0] - half_x, obb[:, 1] - half_y, obb[:, 0] + half_x, obb[:, 1] + half_y], axis=1
    ).astype(np.float32)
    w, h = size
    np.clip(out[:, 0::2], 0.0, w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0.0, h, out=out[:, 1::2])
    return out
