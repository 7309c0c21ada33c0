"""Model families: recognise an exported detector and decode its raw output.

Supported layouts (B = batch, N = anchors, Q = queries, nc = classes):

- ``yolov8``: Ultralytics YOLOv8/YOLO11 detect export, one output
  ``[B, 4+nc, N]``: cx, cy, w, h in input pixels, then per-class scores
  (sigmoid applied in the graph). Needs NMS.
- ``yolo_e2e``: Ultralytics NMS-free export (YOLOv10, YOLO26, ``end2end``
  metadata), ``[B, K, 6]``: x1, y1, x2, y2 in input pixels, score, class.
- ``yolox``: YOLOX head ``[B, N, 5+nc]``: x, y, w, h, objectness, class
  probabilities; score = objectness * class. The box part is either raw
  (grid offsets and log sizes, Megvii's ``decode_in_inference=False`` export)
  or already decoded to input pixels; which one is detected from the values
  (see `yolox_is_decoded`) unless configured. Needs NMS.
- ``rtdetr``: Ultralytics RT-DETR export, ``[B, Q, 4+nc]`` (per-class scores,
  older Ultralytics) or ``[B, Q, 6]`` (cx, cy, w, h, score, class after the
  export's own top-k, Ultralytics >= 8.4); boxes normalised to 0..1 of the
  input. No NMS.

Tasks beyond boxes (``ModelLayout.task``; Ultralytics YOLOv8 / YOLO11 /
YOLO26 one-to-many heads, family ``yolov8``), extra channels after the class
scores of each anchor:

- ``segment`` (``-seg``): ``[B, 4+nc+nm, N]`` with nm mask coefficients, and
  a second output ``[B, nm, H/4, W/4]`` of prototypes (see
  `perception.core.masks`).
- ``pose`` (``-pose``): ``[B, 4+nc+K*D, N]``, K keypoints of D = 3 (x, y in
  input pixels, visibility probability) or D = 2 values; ``kpt_shape``
  metadata gives (K, D).
- ``obb`` (``-obb``): ``[B, 4+nc+1, N]``, cx, cy, w, h of the rotated box and
  its angle (radians) last. Rotated NMS (`perception.core.nms.nms_rotated`).

The task comes from the ``task`` metadata, else from the outputs (a 4-axis
output next to the detection output is a segmentation model), else from a
suffix of the configured family ("yolov8-seg", "yolo11-pose", "yolov8-obb");
pose and obb exports without metadata need that suffix (their outputs look
like a detection output with more classes).

Non-finite outputs: a NaN anywhere in the scores, an infinite score above the
threshold, or a non-finite box of a row whose score passes the threshold would
silently corrupt the result, so by default they raise `NonFiniteOutputError`
(a `DecodeError`) for that image: `Detector.detect_each` turns it into a
failure of that image only, the other images of the batch are unaffected.
With ``nonfinite="drop"`` those rows are dropped instead and counted
(`Decoder.nonfinite_rows`), for deployments that prefer a partial result.
Non-finite values in rows that fail the score threshold are ignored: they
cannot change the output, and checking every value would cost more than the
whole decode on large models.
"""

from __future__ import annotations

import ast
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import EllipsisType
from typing import Literal

import numpy as np

from perception.core.engines.base import EngineInfo
from perception.core.errors import DecodeError, ModelLayoutError
from perception.core.nms import per_class_values
from perception.core.preprocess import PreprocessSpec

__all__ = [
    "COCO80_NAMES",
    "DEFAULT_LABELS_MAX_BYTES",
    "FAMILIES",
    "TASKS",
    "Candidates",
    "Decoder",
    "ModelLayout",
    "NonFiniteOutputError",
    "load_labels",
    "parse_names",
    "resolve_layout",
    "yolox_grid",
    "yolox_is_decoded",
]

log = logging.getLogger(__name__)

FAMILIES = ("yolov8", "yolo_e2e", "yolox", "rtdetr")
_ALIASES = {
    "yolov8": "yolov8",
    "yolo11": "yolov8",
    "yolo": "yolov8",
    "ultralytics": "yolov8",
    "yolo_e2e": "yolo_e2e",
    "yolov10": "yolo_e2e",
    "yolo26": "yolo_e2e",
    "yolox": "yolox",
    "rtdetr": "rtdetr",
    "rt-detr": "rtdetr",
    "rt_detr": "rtdetr",
}
TASKS = ("detect", "segment", "pose", "obb")
_TASK_SUFFIXES = {"seg": "segment", "segment": "segment", "pose": "pose", "obb": "obb",
                  "detect": "detect"}  # fmt: skip
YOLOX_STRIDES = (8, 16, 32)
RTDETR_QUERIES = 300

COCO80_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
"""The 80 COCO detection class names in the usual contiguous order (YOLOX,
Ultralytics). Used only when asked for (labels "coco")."""


class NonFiniteOutputError(DecodeError):
    """NaN/inf in the model output of one image (under ``nonfinite="raise"``)."""


# ---------------------------------------------------------------- class names
def parse_names(text: str) -> tuple[str, ...]:
    """Class names from Ultralytics' `names` metadata ("{0: 'person', ...}")
    or a JSON/Python list."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ModelLayoutError(
            f"names metadata: expected a dict or list literal, got {text[:60]!r}"
        ) from exc
    if isinstance(value, Mapping):
        keys = sorted(int(k) for k in value)
        if keys != list(range(len(keys))):
            raise ModelLayoutError(
                f"names metadata: expected contiguous ids 0..{len(keys) - 1}, got {keys[:10]}..."
            )
        return tuple(str(value[k]) for k in keys)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    raise ModelLayoutError(f"names metadata: expected dict or list, got {type(value).__name__}")


DEFAULT_LABELS_MAX_BYTES = 1 << 20
"""Largest labels file read by default (the detector spec's model.labels_max_bytes)."""


def load_labels(source: str | Path, max_bytes: int = DEFAULT_LABELS_MAX_BYTES) -> tuple[str, ...]:
    """Class names from a labels file (one per line, blank lines ignored), or
    the built-in COCO-80 list for the value "coco".

    Only a regular file of at most `max_bytes` is read: a device such as
    /dev/zero, a FIFO or a huge file is refused with the reason instead of
    being read until memory runs out (or blocking start-up forever).
    """
    if str(source).lower() == "coco":
        return COCO80_NAMES
    if max_bytes < 1:
        raise ValueError(f"max_bytes: expected >= 1, got {max_bytes}")
    path = Path(source)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the type is
        # checked on the open descriptor, so nothing can be swapped in between
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ModelLayoutError(f"labels file {path}: cannot read ({exc.strerror})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelLayoutError(
                f"labels file {path}: expected a regular file, got a {_file_kind(st.st_mode)}"
            )
        if st.st_size > max_bytes:
            raise ModelLayoutError(
                f"labels file {path}: expected at most {max_bytes} bytes "
                f"(model.labels_max_bytes), got {st.st_size}"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise ModelLayoutError(f"labels file {path}: cannot read ({exc.strerror})") from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew after the check
        raise ModelLayoutError(
            f"labels file {path}: expected at most {max_bytes} bytes (model.labels_max_bytes)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLayoutError(
            f"labels file {path}: expected UTF-8 text, got an invalid byte at offset {exc.start}"
        ) from exc
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise ModelLayoutError(f"labels file {path}: expected one class name per line, got none")
    return names


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket")):  # fmt: skip
        if test(mode):
            return name
    return "special file"


# ---------------------------------------------------------------- layout
@dataclass(frozen=True)
class ModelLayout:
    """What was recognised about a model: family, classes and output format.

    `variant`: rtdetr "scores" | "topk"; yolox "raw" | "decoded" | "" (decide
    from the first output); otherwise "".
    `task`: one of `TASKS`; `extra_channels` the values per anchor after the
    class scores (mask coefficients, keypoints or the angle); `proto_index`
    the prototype output of a segmentation model (-1: none); `kpt_shape`
    (K, D) of a pose model ((0, 0) otherwise).
    """

    family: str
    num_classes: int
    class_names: tuple[str, ...]
    output_index: int = 0
    variant: str = ""
    scores_are_probabilities: bool | None = True
    strides: tuple[int, ...] = YOLOX_STRIDES
    notes: tuple[str, ...] = field(default=())
    task: str = "detect"
    extra_channels: int = 0
    proto_index: int = -1
    kpt_shape: tuple[int, int] = (0, 0)

    @property
    def needs_nms(self) -> bool:
        return self.family in ("yolov8", "yolox")

    def preprocess_spec(self, stride: int = 32) -> PreprocessSpec:
        """The input layout the family was trained/exported with."""
        if self.family == "yolox":
            # Nearest rounding of the resized side, as in the documented I/O
            # contract of the shared YOLOX-Nano; YOLOX's own demo truncates
            # (PreprocessSpec(rounding="floor")), a <= 1 px difference.
            return PreprocessSpec(
                resize="letterbox", align="top_left", rgb=False, scale=1.0, stride=stride
            )
        if self.family == "rtdetr":
            return PreprocessSpec(resize="stretch", rgb=True, scale=1.0 / 255.0, stride=stride)
        return PreprocessSpec(
            resize="letterbox", align="center", rgb=True, scale=1.0 / 255.0, stride=stride
        )


def _is_ultralytics(meta: Mapping[str, str]) -> bool:
    return "ultralytics" in meta.get("author", "").lower() or ("names" in meta and "stride" in meta)


def _anchor_count(h: int, w: int, strides: Sequence[int]) -> int:
    return sum((h // s) * (w // s) for s in strides)


def resolve_layout(
    info: EngineInfo,
    family: str = "auto",
    *,
    class_names: Sequence[str] | None = None,
    labels_file: str | Path | None = None,
    labels_max_bytes: int = DEFAULT_LABELS_MAX_BYTES,
    output_index: int | None = None,
) -> ModelLayout:
    """Recognise the model family and class names from metadata and shapes.

    `family` overrides detection ("auto", or one of `FAMILIES` and aliases).
    Class names: explicit `class_names` or `labels_file` win over metadata;
    without either, Ultralytics' `names` metadata; without that, "0".."nc-1"
    with a warning. A labels file bigger than `labels_max_bytes` (or not a
    regular file) is refused. A name count that differs from the model's class count
    raises `ModelLayoutError`.
    """
    meta = dict(info.metadata)
    fam_key, task_key = _split_family(family)
    task_meta = meta.get("task")
    if task_meta is not None and task_meta not in TASKS:
        raise ModelLayoutError(
            f"model task: expected one of {', '.join(TASKS)}, got {task_meta!r} (metadata 'task')"
        )
    if task_key is not None and task_meta is not None and task_key != task_meta:
        raise ModelLayoutError(
            f"family {family!r} names task {task_key!r}, the model's metadata says {task_meta!r}"
        )
    if len(info.input_shape) != 4:
        raise ModelLayoutError(
            f"model input: expected 4 axes (B, C, H, W), got {tuple(info.input_shape)}"
        )
    if info.input_shape[1] not in (3, -1):
        raise ModelLayoutError(
            f"model input: expected 3 colour channels, got {info.input_shape[1]} "
            f"(shape {tuple(info.input_shape)})"
        )
    if not info.output_shapes:
        raise ModelLayoutError("model outputs: expected at least one output, got none")
    four = [i for i, s in enumerate(info.output_shapes) if len(s) == 4]
    if output_index is None:
        three = [i for i, s in enumerate(info.output_shapes) if len(s) == 3]
        if not three:
            raise ModelLayoutError(
                "model outputs: expected a 3-axis detection output, got shapes "
                f"{[tuple(s) for s in info.output_shapes]}"
            )
        output_index = three[0]
    shape = tuple(int(d) if d is not None else -1 for d in info.output_shapes[output_index])
    if len(shape) != 3:
        raise ModelLayoutError(
            f"output {info.output_names[output_index]!r}: expected 3 axes, got shape {shape}"
        )
    _, a, b = shape
    task = task_key or task_meta or "detect"
    if task_key is None and task_meta is None and four and fam_key in ("auto", "yolov8"):
        # a prototype output [B, nm, H/4, W/4] next to a channels-first
        # [B, 4+nc+nm, N] output: an Ultralytics segmentation export
        nm = info.output_shapes[four[0]][1]
        if nm is not None and nm > 0 and a > 4 + nm and (b < 0 or a < b):
            task = "segment"

    meta_names = parse_names(meta["names"]) if "names" in meta else None
    if class_names is not None:
        names: tuple[str, ...] | None = tuple(str(n) for n in class_names)
        names_src = "class_names"
    elif labels_file is not None:
        names = load_labels(labels_file, labels_max_bytes)
        names_src = f"labels file {labels_file}"
    else:
        names, names_src = meta_names, "model metadata 'names'"

    ultra = _is_ultralytics(meta)
    head = meta.get("head", "")
    h, w = info.input_shape[2], info.input_shape[3]
    anchors = _anchor_count(h, w, YOLOX_STRIDES) if h > 0 and w > 0 else -1
    # class count where the output shape does not carry it: metadata (describes
    # the model itself) before user-given names (checked against it below)
    if meta_names is not None:
        nc_hint: int | None = len(meta_names)
    else:
        nc_hint = len(names) if names is not None else None

    if task != "detect":
        fam = "yolov8" if fam_key == "auto" else _ALIASES[fam_key]
        if fam != "yolov8" or meta.get("end2end", "").lower() == "true":
            raise ModelLayoutError(
                f"task {task!r}: expected an Ultralytics YOLOv8/YOLO11/YOLO26 export with "
                f"NMS (family yolov8, end2end=False), got family {fam!r}"
                + (" with end2end=True" if meta.get("end2end", "").lower() == "true" else "")
            )
    elif fam_key == "auto":
        fam = _guess_family(ultra, head, meta, a, b, anchors, nc_hint, shape)
    else:
        fam = _ALIASES[fam_key]

    variant = ""
    nc: int | None
    extra, proto_index, kpt_shape = 0, -1, (0, 0)
    if task != "detect":
        extra, proto_index, kpt_shape = _task_channels(task, info, four, meta, a, nc_hint, shape)
    if fam == "yolov8":
        if a < 0 and nc_hint is None:
            raise ModelLayoutError(
                f"yolov8 output {shape}: the class axis is dynamic and there are no class "
                "names: pass class names or a labels file"
            )
        if 0 <= a <= 4 + extra:
            want = "[B, 4+nc, N]" if task == "detect" else f"[B, 4+nc+{extra}, N] ({task})"
            raise ModelLayoutError(f"yolov8 output: expected {want}, got {shape}")
        nc = a - 4 - extra if a > 0 else nc_hint
    elif fam == "yolox":
        if b < 0 and nc_hint is not None:
            b = nc_hint + 5
        if b <= 5:
            raise ModelLayoutError(f"yolox output: expected [B, N, 5+nc], got {shape}")
        nc = b - 5
        if anchors > 0 and a > 0 and a != anchors:
            raise ModelLayoutError(
                f"yolox output: expected {anchors} rows for a {h}x{w} input with strides "
                f"{YOLOX_STRIDES}, got {a} (shape {shape})"
            )
    elif fam == "rtdetr":
        if b < 0 and nc_hint is not None:
            b = nc_hint + 4
        if b <= 4:
            raise ModelLayoutError(
                f"rtdetr output: expected [B, Q, 4+nc] or [B, Q, 6], got {shape}"
            )
        if b == 6 and (nc_hint is None or nc_hint != 2):
            variant, nc = "topk", nc_hint
        else:
            variant, nc = "scores", b - 4
    else:  # yolo_e2e
        if b not in (6, -1):
            raise ModelLayoutError(f"yolo_e2e output: expected [B, K, 6], got {shape}")
        nc = nc_hint

    if names is None:
        if nc is None:
            raise ModelLayoutError(
                f"{fam} output {shape} does not carry the class count and the model has no "
                "'names' metadata: pass class names or a labels file"
            )
        names = tuple(str(i) for i in range(nc))
        log.warning("model has no class names and none were given; using '0'..'%d'", nc - 1)
        names_src = "generated"
    if nc is None:
        nc = len(names)
    if len(names) != nc:
        raise ModelLayoutError(
            f"class names: the model outputs {nc} classes, got {len(names)} names from {names_src}"
        )
    if meta_names is not None and names_src != "model metadata 'names'" and len(meta_names) != nc:
        raise ModelLayoutError(
            f"class names: metadata lists {len(meta_names)} names, the model outputs {nc} classes"
        )
    return ModelLayout(
        family=fam,
        num_classes=nc,
        class_names=names,
        output_index=output_index,
        variant=variant,
        # YOLOX exports differ on whether sigmoid is in the graph: decide from
        # the first output (values outside 0..1 are logits)
        scores_are_probabilities=None if fam == "yolox" else True,
        notes=(f"names from {names_src}",),
        task=task,
        extra_channels=extra,
        proto_index=proto_index,
        kpt_shape=kpt_shape,
    )


def _split_family(family: str) -> tuple[str, str | None]:
    """("yolov8", "segment") from "yolov8-seg" / "yolo11_seg"; (family, None)
    without a task suffix. Raises for unknown names."""
    key = family.lower().strip()
    task: str | None = None
    for sep in ("-", "_"):
        base, _, suffix = key.rpartition(sep)
        if base and suffix in _TASK_SUFFIXES and base in _ALIASES:
            key, task = base, _TASK_SUFFIXES[suffix]
            break
    if key != "auto" and key not in _ALIASES:
        raise ModelLayoutError(
            f"family: expected 'auto' or one of {sorted(_ALIASES)} (optionally with a task "
            f"suffix -seg, -pose, -obb), got {family!r}"
        )
    return key, task


def _task_channels(
    task: str,
    info: EngineInfo,
    four: list[int],
    meta: Mapping[str, str],
    a: int,
    nc_hint: int | None,
    shape: tuple[int, ...],
) -> tuple[int, int, tuple[int, int]]:
    """(extra channels per anchor, prototype output index, kpt_shape) of a task."""
    if task == "obb":
        return 1, -1, (0, 0)
    if task == "segment":
        if not four:
            raise ModelLayoutError(
                "segment model: expected a prototype output [B, nm, H/4, W/4] next to the "
                f"detection output, got shapes {[tuple(s) for s in info.output_shapes]}"
            )
        proto = tuple(int(d) if d is not None else -1 for d in info.output_shapes[four[0]])
        nm = proto[1]
        if nm <= 0:
            if a > 0 and nc_hint is not None:
                nm = a - 4 - nc_hint
            if nm <= 0:
                raise ModelLayoutError(
                    f"segment model: prototype output {proto} has no static mask count and "
                    "the class count is unknown: pass class names or a labels file"
                )
        return nm, four[0], (0, 0)
    # pose
    text = meta.get("kpt_shape")
    if text:
        try:
            value = ast.literal_eval(text)
            k, d = int(value[0]), int(value[1])
        except (ValueError, SyntaxError, TypeError, IndexError) as exc:
            raise ModelLayoutError(
                f"kpt_shape metadata: expected [K, D], got {text[:40]!r}"
            ) from exc
    elif a > 0 and nc_hint is not None and (a - 4 - nc_hint) > 0 and (a - 4 - nc_hint) % 3 == 0:
        k, d = (a - 4 - nc_hint) // 3, 3
    else:
        raise ModelLayoutError(
            f"pose output {shape}: expected 'kpt_shape' metadata (or class names, to take "
            "K keypoints of (x, y, visibility) from the channel count)"
        )
    if k < 1 or d not in (2, 3):
        raise ModelLayoutError(f"kpt_shape: expected [K >= 1, 2 or 3], got [{k}, {d}]")
    return k * d, -1, (k, d)


def _guess_family(
    ultra: bool,
    head: str,
    meta: Mapping[str, str],
    a: int,
    b: int,
    anchors: int,
    nc_hint: int | None,
    shape: tuple[int, ...],
) -> str:
    if ultra:
        if "rtdetr" in head.lower():
            return "rtdetr"
        if meta.get("end2end", "").lower() == "true" or "v10" in head.lower():
            return "yolo_e2e"
        if head == "Detect" or (nc_hint is not None and a == nc_hint + 4):
            return "yolov8"
        if nc_hint is not None and b == nc_hint + 4 and a == RTDETR_QUERIES:
            return "rtdetr"
        if a > 0 and (b < 0 or a < b):
            return "yolov8"
    else:
        if a > 0 and (b < 0 or a < b):
            return "yolov8"
        if b > 0 and (a < 0 or a > b):
            if (
                a < 0
                or (anchors > 0 and a == anchors)
                or (nc_hint is not None and b == nc_hint + 5)
            ):
                return "yolox"
            if a == RTDETR_QUERIES:
                return "rtdetr"
            if anchors < 0:
                return "yolox"
    raise ModelLayoutError(
        f"unknown output layout {shape}: expected [B, 4+nc, N] (yolov8), [B, N, 5+nc] (yolox) "
        f"or [B, 300, 4+nc] (rtdetr); set the family explicitly"
    )


# ---------------------------------------------------------------- yolox helpers
_GRID_CACHE: dict[tuple[int, int, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}


def yolox_grid(
    h: int, w: int, strides: Sequence[int] = YOLOX_STRIDES
) -> tuple[np.ndarray, np.ndarray]:
    """((N, 2) grid x, y per row, (N,) stride per row), row-major per stride,
    strides concatenated in order: the YOLOX output row order."""
    key = (h, w, tuple(strides))
    hit = _GRID_CACHE.get(key)
    if hit is not None:
        return hit
    grids, steps = [], []
    for s in strides:
        gy, gx = np.mgrid[0 : h // s, 0 : w // s]
        grids.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        steps.append(np.full(gx.size, s))
    grid = np.concatenate(grids).astype(np.float32)
    stride = np.concatenate(steps).astype(np.float32)
    if len(_GRID_CACHE) > 32:
        _GRID_CACHE.clear()
    _GRID_CACHE[key] = (grid, stride)
    return grid, stride


def yolox_is_decoded(output: np.ndarray, input_hw: tuple[int, int]) -> bool:
    """Whether a YOLOX output's boxes are already decoded to input pixels.

    Decoded centres follow the anchor grid (x ~ (gx + 0.5) * stride) so they
    correlate strongly with it over all rows; raw offsets do not (they stay
    within a few cells of 0 whatever the row). Needs no image content.
    """
    grid, stride = yolox_grid(*input_hw)
    rows = output.reshape(-1, output.shape[-1])[: grid.shape[0]]
    if rows.shape[0] != grid.shape[0]:
        raise ModelLayoutError(
            f"yolox output: expected {grid.shape[0]} rows for input {input_hw}, got {rows.shape[0]}"
        )
    ref = (grid + 0.5) * stride[:, None]
    corr = []
    for k in range(2):
        x = rows[:, k].astype(np.float64)
        finite = np.isfinite(x)
        if finite.sum() < 2 or np.std(x[finite]) == 0:
            corr.append(0.0)
            continue
        corr.append(float(np.corrcoef(x[finite], ref[finite, k])[0, 1]))
    return min(corr) > 0.5


# ---------------------------------------------------------------- decoding
@dataclass
class Candidates:
    """Decoded boxes of one image before NMS, in tensor pixels (xyxy).

    `extra` (K, E) float32, for tasks other than detect: the mask
    coefficients (segment), the K*D keypoint values (pose, x, y in tensor
    pixels) or cx, cy, w, h, angle of the rotated box (obb); None for detect.
    """

    xyxy: np.ndarray  # (K, 4) float32
    scores: np.ndarray  # (K,) float32
    class_ids: np.ndarray  # (K,) int32
    extra: np.ndarray | None = None

    @classmethod
    def empty(cls, extra_channels: int = 0) -> Candidates:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int32),
            np.zeros((0, extra_channels), np.float32) if extra_channels else None,
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index: np.ndarray) -> Candidates:
        """The rows at `index` (an int array), extras included."""
        return Candidates(
            self.xyxy[index],
            self.scores[index],
            self.class_ids[index],
            None if self.extra is None else self.extra[index],
        )


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty((b.shape[0], 4), dtype=np.float32)
    half_w = b[:, 2] / 2
    half_h = b[:, 3] / 2
    out[:, 0] = b[:, 0] - half_w
    out[:, 1] = b[:, 1] - half_h
    out[:, 2] = b[:, 0] + half_w
    out[:, 3] = b[:, 1] + half_h
    return out


class Decoder:
    """Turns raw outputs of one `ModelLayout` into per-image `Candidates`.

    Scores pass when strictly greater than `conf` (or the per-class value of
    `class_conf`). `multi_label` keeps every class above the threshold for a
    box instead of the best one only. At most `max_candidates` (best first)
    go on to NMS per image.
    """

    def __init__(
        self,
        layout: ModelLayout,
        conf: float = 0.25,
        *,
        class_conf: Mapping[int, float] | Sequence[float] | None = None,
        multi_label: bool = False,
        max_candidates: int = 30000,
        nonfinite: Literal["raise", "drop"] = "raise",
        yolox_decoded: bool | None = None,
    ) -> None:
        if nonfinite not in ("raise", "drop"):
            raise ValueError(f"nonfinite: expected 'raise' or 'drop', got {nonfinite!r}")
        self.layout = layout
        self.multi_label = multi_label
        self.max_candidates = int(max_candidates)
        self.nonfinite = nonfinite
        self.nonfinite_rows = 0
        self.conf = 0.0
        self._class_conf = class_conf
        self._class_thr: np.ndarray | None = None
        self._min_thr = 0.0
        self.set_conf(conf, class_conf)
        if layout.family == "yolox" and yolox_decoded is not None:
            self.layout = replace(layout, variant="decoded" if yolox_decoded else "raw")

    def set_conf(
        self,
        conf: float,
        class_conf: Mapping[int, float] | Sequence[float] | EllipsisType | None = ...,
    ) -> None:
        """Change the score threshold(s) between calls; validated before any
        change. `class_conf` left out keeps the current per-class values."""
        if not 0.0 <= float(conf) <= 1.0:
            raise ValueError(f"conf: expected a value in [0.0, 1.0], got {conf}")
        spec = self._class_conf if class_conf is ... else class_conf
        table: np.ndarray | None = None
        if spec is not None:
            ids = np.arange(self.layout.num_classes)
            table = per_class_values(
                spec,
                ids,
                name="class_conf",
                default=float(conf),
            ).astype(np.float32)
            if ((table < 0) | (table > 1)).any():
                raise ValueError(f"class_conf: expected values in [0.0, 1.0], got {spec}")
        self.conf = float(conf)
        self._class_conf = spec
        self._class_thr = table
        self._min_thr = float(table.min()) if table is not None else self.conf

    # -------------------------------------------------------------- helpers
    def _nonfinite(self, what: str, image: int, count: int) -> None:
        if self.nonfinite == "raise":
            raise NonFiniteOutputError(
                f"image {image}: {count} non-finite {what} in the model output "
                "(expected finite values; nonfinite='drop' skips such rows instead)"
            )
        self.nonfinite_rows += count
        # per frame: callers count it (Detector.last_nonfinite_rows) and log throttled
        log.debug("image %d: dropped %d rows with non-finite %s", image, count, what)

    def _select(
        self, score_rows: np.ndarray, best: np.ndarray | None, image: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """From (K, nc) class scores of pre-filtered rows, pick (row, class, score)."""
        if self.multi_label:
            thr = self._class_thr if self._class_thr is not None else self.conf
            rows, cls = np.nonzero(score_rows > thr)
            scores = score_rows[rows, cls]
        else:
            cls = score_rows.argmax(axis=1)
            scores = best if best is not None else score_rows[np.arange(cls.size), cls]
            thr = self._class_thr[cls] if self._class_thr is not None else self.conf
            rows = np.flatnonzero(scores > thr)
            cls, scores = cls[rows], scores[rows]
        return rows, cls.astype(np.int32), scores.astype(np.float32, copy=False)

    def _finish(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        cls: np.ndarray,
        image: int,
        extra: np.ndarray | None = None,
    ) -> Candidates:
        cand = Candidates(boxes, scores, cls, extra)
        ok = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
        if extra is not None:
            ok &= np.isfinite(extra).all(axis=1)
        if not ok.all():
            what = "boxes/scores" if extra is None else f"boxes/scores/{self.layout.task} values"
            self._nonfinite(what, image, int((~ok).sum()))
            cand = cand.take(np.flatnonzero(ok))
        if len(cand) > self.max_candidates:
            cand = cand.take(np.argsort(-cand.scores, kind="stable")[: self.max_candidates])
        return cand

    def _check_nan(self, values: np.ndarray, image: int) -> np.ndarray | None:
        """Row mask of NaN scores (None when all fine); raises under 'raise'."""
        bad: np.ndarray = np.isnan(values)
        if bad.any():
            self._nonfinite("scores", image, int(bad.sum()))
            return bad
        return None

    # -------------------------------------------------------------- families
    def _yolov8(self, out: np.ndarray, image: int) -> Candidates:
        lay = self.layout
        nc = lay.num_classes
        cls_scores = out[4 : 4 + nc]  # (nc, N), each row contiguous
        best = cls_scores.max(axis=0)  # NaN propagates into best
        self._check_nan(best, image)
        idx = np.flatnonzero(best > self._min_thr)  # NaN never passes
        if idx.size == 0:
            return Candidates.empty(5 if lay.task == "obb" else lay.extra_channels)
        rows_scores = cls_scores[:, idx].T  # (K, nc)
        rows, cls, scores = self._select(
            rows_scores, None if self.multi_label else best[idx], image
        )
        sel = idx[rows]
        xywh = out[:4, sel].T
        boxes = _cxcywh_to_xyxy(xywh)
        extra: np.ndarray | None = None
        if lay.task == "obb":  # the rotated box itself: cx, cy, w, h, angle
            extra = np.concatenate([xywh, out[4 + nc, sel][:, None]], axis=1).astype(np.float32)
        elif lay.extra_channels:
            extra = out[4 + nc : 4 + nc + lay.extra_channels, sel].T.astype(np.float32)
        return self._finish(boxes, scores, cls, image, extra)

    def _yolox(self, out: np.ndarray, image: int, input_hw: tuple[int, int]) -> Candidates:
        lay = self.layout
        if lay.variant == "":
            decoded = yolox_is_decoded(out, input_hw)
            self.layout = lay = replace(lay, variant="decoded" if decoded else "raw")
            log.info("yolox output detected as %s boxes", lay.variant)
        if lay.scores_are_probabilities is None or lay.scores_are_probabilities:
            probs = out[:, 4:]
            if lay.scores_are_probabilities is None:
                inside = bool(np.nanmin(probs) >= 0.0 and np.nanmax(probs) <= 1.0)
                self.layout = lay = replace(lay, scores_are_probabilities=inside)
        obj = out[:, 4]
        if not lay.scores_are_probabilities:
            obj = 1.0 / (1.0 + np.exp(-obj.astype(np.float32)))
        self._check_nan(obj, image)
        # score = obj * cls <= obj since cls <= 1: rows with obj <= thr cannot
        # pass; NaN never passes.
        idx = np.flatnonzero(obj > self._min_thr)
        if idx.size == 0:
            return Candidates.empty()
        sub = out[idx]
        cls_p = sub[:, 5:]
        if not lay.scores_are_probabilities:
            cls_p = 1.0 / (1.0 + np.exp(-cls_p))
        score_rows = obj[idx, None] * cls_p
        nan_rows = np.isnan(score_rows).any(axis=1)
        if nan_rows.any():
            self._nonfinite("class scores", image, int(nan_rows.sum()))
            score_rows = score_rows[~nan_rows]
            idx, sub = idx[~nan_rows], sub[~nan_rows]
        rows, cls, scores = self._select(score_rows, None, image)
        box = sub[rows, :4].astype(np.float32)
        if lay.variant == "raw":
            grid, stride = yolox_grid(*input_hw)
            g = grid[idx[rows]]
            s = stride[idx[rows], None]
            with np.errstate(over="ignore"):
                box = np.concatenate([(box[:, :2] + g) * s, np.exp(box[:, 2:4]) * s], axis=1)
        return self._finish(_cxcywh_to_xyxy(box), scores, cls, image)

    def _rtdetr(self, out: np.ndarray, image: int, input_hw: tuple[int, int]) -> Candidates:
        h, w = input_hw
        if self.layout.variant == "topk":
            scores_all = out[:, 4]
            self._check_nan(scores_all, image)
            cls_all = out[:, 5]
            ok_cls = np.isfinite(cls_all) & (cls_all >= 0) & (cls_all < self.layout.num_classes)
            if not ok_cls.all():
                top = self.layout.num_classes - 1
                raise DecodeError(
                    f"image {image}: rtdetr class column: expected ids 0..{top}, "
                    f"got {cls_all[~ok_cls][:3].tolist()}"
                )
            cls_all = cls_all.astype(np.int32)
            thr = self._class_thr[cls_all] if self._class_thr is not None else self.conf
            rows = np.flatnonzero(scores_all > thr)  # NaN never passes
            cls, scores = cls_all[rows], scores_all[rows].astype(np.float32)
            sel = rows
        else:
            nc = self.layout.num_classes
            score_rows = out[:, 4 : 4 + nc]
            best = score_rows.max(axis=1)
            bad = self._check_nan(best, image)
            if bad is not None:
                score_rows = np.where(bad[:, None], -np.inf, score_rows)
                best = np.where(bad, -np.inf, best)
            rows, cls, scores = self._select(score_rows, None if self.multi_label else best, image)
            sel = rows
        box = out[sel, :4].astype(np.float32) * np.array([w, h, w, h], dtype=np.float32)
        return self._finish(_cxcywh_to_xyxy(box), scores, cls, image)

    def _e2e(self, out: np.ndarray, image: int) -> Candidates:
        scores_all = out[:, 4]
        self._check_nan(scores_all, image)
        cls_all = np.nan_to_num(out[:, 5], nan=-1).astype(np.int32)
        thr = (
            self._class_thr[np.clip(cls_all, 0, self.layout.num_classes - 1)]
            if self._class_thr is not None
            else self.conf
        )
        rows = np.flatnonzero(scores_all > thr)  # NaN never passes
        cls = cls_all[rows]
        bad_cls = (cls < 0) | (cls >= self.layout.num_classes)
        if bad_cls.any():
            raise DecodeError(
                f"image {image}: yolo_e2e class column: expected ids "
                f"0..{self.layout.num_classes - 1}, got {cls[bad_cls][:3].tolist()}"
            )
        boxes = out[rows, :4].astype(np.float32)
        return self._finish(boxes, scores_all[rows].astype(np.float32), cls, image)

    # -------------------------------------------------------------- entry
    def __call__(
        self, outputs: Sequence[np.ndarray], input_hw: tuple[int, int]
    ) -> list[Candidates]:
        """Decode a batch: `outputs` as returned by `Engine.infer`, `input_hw`
        the (H, W) of the tensor that was fed. Raises on the first image that
        cannot be decoded (see `batch_output` / `decode_image` to decode
        image by image)."""
        out = self.batch_output(outputs, input_hw)
        return [self.decode_image(out[i], i, input_hw) for i in range(out.shape[0])]

    def batch_protos(self, outputs: Sequence[np.ndarray], input_hw: tuple[int, int]) -> np.ndarray:
        """The prototype output [B, nm, H/4, W/4] of a segmentation model, its
        shape checked against the input (ModelLayoutError otherwise)."""
        lay = self.layout
        if lay.proto_index < 0 or lay.proto_index >= len(outputs):
            raise ModelLayoutError(
                f"segment model: expected a prototype output at index {lay.proto_index}, "
                f"got {len(outputs)} outputs"
            )
        protos = outputs[lay.proto_index]
        want = (lay.extra_channels, input_hw[0] // 4, input_hw[1] // 4)
        if not isinstance(protos, np.ndarray) or protos.ndim != 4 or protos.shape[1:] != want:
            raise ModelLayoutError(
                f"output {lay.proto_index}: expected prototypes [B, {want[0]}, {want[1]}, "
                f"{want[2]}] for input {input_hw}, got {getattr(protos, 'shape', None)}"
            )
        if not np.issubdtype(protos.dtype, np.floating):
            raise ModelLayoutError(f"output {lay.proto_index}: expected float, got {protos.dtype}")
        return protos

    def batch_output(self, outputs: Sequence[np.ndarray], input_hw: tuple[int, int]) -> np.ndarray:
        """The detection output of a batch, its layout checked (ModelLayoutError:
        a problem of the model, hence of the whole batch)."""
        lay = self.layout
        if lay.output_index >= len(outputs):
            raise ModelLayoutError(
                f"model outputs: expected at least {lay.output_index + 1}, got {len(outputs)}"
            )
        out = outputs[lay.output_index]
        if not isinstance(out, np.ndarray) or out.ndim != 3:
            raise ModelLayoutError(
                f"output {lay.output_index}: expected a 3-axis array, got "
                f"{getattr(out, 'shape', type(out).__name__)}"
            )
        if not np.issubdtype(out.dtype, np.floating):
            raise ModelLayoutError(f"output {lay.output_index}: expected float, got {out.dtype}")
        self._check_shape(out.shape, input_hw)
        return out

    def decode_image(self, out: np.ndarray, image: int, input_hw: tuple[int, int]) -> Candidates:
        """Candidates of one image's output (`batch_output(...)[image]`);
        DecodeError (NonFiniteOutputError for NaN/inf) concerns this image only."""
        family = self.layout.family
        if family == "yolov8":
            return self._yolov8(out, image)
        if family == "yolox":
            return self._yolox(out, image, input_hw)
        if family == "rtdetr":
            return self._rtdetr(out, image, input_hw)
        return self._e2e(out, image)

    def _check_shape(self, shape: tuple[int, ...], input_hw: tuple[int, int]) -> None:
        lay = self.layout
        nc = lay.num_classes
        if lay.family == "yolov8":
            expect_ok = shape[1] == 4 + nc + lay.extra_channels
            want = f"[B, {4 + nc + lay.extra_channels}, N]"
        elif lay.family == "yolox":
            n = _anchor_count(input_hw[0], input_hw[1], lay.strides)
            expect_ok = shape[2] == 5 + nc and shape[1] == n
            want = f"[B, {n}, {5 + nc}]"
        elif lay.family == "rtdetr":
            width = 6 if lay.variant == "topk" else 4 + nc
            expect_ok = shape[2] == width
            want = f"[B, Q, {width}]"
        else:
            expect_ok = shape[2] == 6
            want = "[B, K, 6]"
        if not expect_ok:
            raise ModelLayoutError(
                f"{lay.family} output: expected {want} for input {input_hw}, got {tuple(shape)}"
            )
