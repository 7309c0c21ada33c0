"""Core data types: detections and tracks as a structure of numpy arrays.

One `Detections` object holds every box of one image. Arrays keep the hot paths
(NMS, tracking, message conversion) vectorised; the object is frozen so a
stage cannot change what another stage already published. No ROS imports here.

Segmentation, pose and oriented-box models add optional per-row fields
(`Detections.masks`, `.keypoints`, `.obb`). They default to None, every
row operation (indexing, filtering, concatenation, `with_track_ids`) keeps them
aligned with the boxes, and a consumer that only reads boxes never sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["UNTRACKED", "Detections", "InstanceMasks"]

UNTRACKED = -1
"""`track_ids` value of a detection that no tracker has assigned."""

_FIELDS = (
    # name, dtype, trailing shape
    ("xyxy", np.float32, (4,)),
    ("scores", np.float32, ()),
    ("class_ids", np.int32, ()),
    ("track_ids", np.int64, ()),
)
_OPTIONAL = ("masks", "keypoints", "obb")


def _check_array(name: str, value: Any, dtype: type, tail: tuple[Any, ...], n: int | None) -> int:
    """Validate one field; return its length. Messages name expected vs actual."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"Detections.{name}: expected numpy.ndarray, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(
            f"Detections.{name}: expected dtype {np.dtype(dtype).name}, got {value.dtype.name}"
        )
    want = ("N", *tail)
    if value.ndim != 1 + len(tail) or value.shape[1:] != tail:
        raise ValueError(f"Detections.{name}: expected shape {want}, got {value.shape}")
    if n is not None and value.shape[0] != n:
        raise ValueError(f"Detections.{name}: expected {n} rows (as xyxy), got {value.shape[0]}")
    return int(value.shape[0])


def _row_index(index: Any, n: int, what: str) -> np.ndarray | slice:
    """Normalise a row selector (int, slice, bool mask, index array) the same
    way for every field; an int becomes a length-1 slice."""
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        if not -n <= index < n:
            raise IndexError(f"{what} index {index} out of range for length {n}")
        return slice(index, index + 1 if index != -1 else None)
    if isinstance(index, slice):
        return index
    arr = np.asarray(index)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"{what} boolean mask: expected shape ({n},), got {arr.shape}")
        return arr
    if arr.size == 0:
        return arr.astype(np.int64).reshape(0)
    if not np.issubdtype(arr.dtype, np.integer):
        raise IndexError(f"{what} index: expected ints, a slice or a boolean mask, got {arr.dtype}")
    return arr


def _check_size(name: str, size: Any) -> tuple[int, int]:
    value = tuple(size)
    if len(value) != 2 or any(int(s) != s or s < 0 for s in value):
        raise ValueError(f"{name}: expected (width, height) of non-negative ints, got {size!r}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True, eq=False)
class InstanceMasks:
    """Binary instance masks at original-image resolution, each stored only
    inside its own box (a 1080p frame with 20 people is 20 small crops, not
    20 full frames).

    Attributes:
        boxes: (N, 4) int32 x0, y0, x1, y1 in original pixels, x1/y1 exclusive,
            0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height. The decoders
            use the detection box rounded outwards the way Ultralytics crops
            (pixel column c is inside when x1_box <= c < x2_box, so
            x0 = ceil(x1_box), x1 = ceil(x2_box)); any box that contains the
            instance is valid.
        crops: N bool arrays, crops[i].shape == (y1 - y0, x1 - x0) of box i;
            True where the instance is. Pixels outside the box are False.
        image_size: (width, height) of the image the masks belong to.

    Rows follow the owning `Detections` (mask i belongs to detection i).
    Frozen like `Detections`; the crops are not copied, treat them as read-only.
    `to_id_image` renders the whole frame (e.g. a mono16 instance-id image),
    `full` / `to_dense` one or all instances at frame size (tests, tools),
    `pixel_coords` the (x, y) pixels of one instance (depth lifting).
    """

    boxes: np.ndarray
    crops: tuple[np.ndarray, ...]
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        boxes = self.boxes
        if not isinstance(boxes, np.ndarray):
            raise TypeError(
                f"InstanceMasks.boxes: expected numpy.ndarray, got {type(boxes).__name__}"
            )
        if boxes.dtype != np.int32:
            raise TypeError(f"InstanceMasks.boxes: expected dtype int32, got {boxes.dtype.name}")
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"InstanceMasks.boxes: expected shape ('N', 4), got {boxes.shape}")
        crops = self.crops
        if not isinstance(crops, tuple):
            crops = tuple(crops)
            object.__setattr__(self, "crops", crops)
        size = _check_size("InstanceMasks.image_size", self.image_size)
        object.__setattr__(self, "image_size", size)
        n = boxes.shape[0]
        if len(crops) != n:
            raise ValueError(
                f"InstanceMasks.crops: expected {n} crops (as boxes), got {len(crops)}"
            )
        if n:
            w, h = size
            x0, y0, x1, y1 = boxes.T
            bad = (x0 < 0) | (y0 < 0) | (x1 < x0) | (y1 < y0) | (x1 > w) | (y1 > h)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"InstanceMasks.boxes[{i}]: expected 0 <= x0 <= x1 <= {w} and "
                    f"0 <= y0 <= y1 <= {h}, got {boxes[i].tolist()}"
                )
        for i, crop in enumerate(crops):
            if not isinstance(crop, np.ndarray) or crop.dtype != bool:
                kind = crop.dtype.name if isinstance(crop, np.ndarray) else type(crop).__name__
                raise TypeError(f"InstanceMasks.crops[{i}]: expected a bool array, got {kind}")
            want = (int(boxes[i, 3] - boxes[i, 1]), int(boxes[i, 2] - boxes[i, 0]))
            if crop.shape != want:
                raise ValueError(
                    f"InstanceMasks.crops[{i}]: expected shape {want} (its box), got {crop.shape}"
                )

    # ---------------------------------------------------------------- builders
    @classmethod
    def empty(cls, image_size: tuple[int, int] = (0, 0)) -> InstanceMasks:
        return cls(np.zeros((0, 4), np.int32), (), image_size)

    @classmethod
    def from_dense(cls, masks: Any, boxes: Any | None = None) -> InstanceMasks:
        """From (N, H, W) full-frame masks (anything non-zero is inside).

        `boxes` ((N, 4) ints, x1/y1 exclusive) keeps only that region of each
        mask; by default each crop is the tight extent of its True pixels
        (an empty mask gets a 0x0 box at the origin)."""
        dense = np.asarray(masks).astype(bool, copy=False)
        if dense.ndim != 3:
            raise ValueError(f"InstanceMasks.from_dense: expected (N, H, W), got {dense.shape}")
        n, h, w = dense.shape
        if boxes is None:
            out = np.zeros((n, 4), np.int32)
            for i in range(n):
                rows = np.flatnonzero(dense[i].any(axis=1))
                if rows.size:
                    cols = np.flatnonzero(dense[i].any(axis=0))
                    out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        else:
            out = np.asarray(boxes, dtype=np.int32).reshape(-1, 4)
        crops = tuple(dense[i, y0:y1, x0:x1].copy() for i, (x0, y0, x1, y1) in enumerate(out))
        return cls(out, crops, (w, h))

    @classmethod
    def concatenate(cls, parts: Sequence[InstanceMasks]) -> InstanceMasks:
        """Join masks of the same image."""
        if not parts:
            raise ValueError("InstanceMasks.concatenate: expected at least one part, got none")
        size = parts[0].image_size
        for p in parts[1:]:
            if p.image_size != size:
                raise ValueError(
                    f"InstanceMasks.concatenate: expected image_size {size}, got {p.image_size}"
                )
        crops: list[np.ndarray] = []
        for p in parts:
            crops.extend(p.crops)
        return cls(np.concatenate([p.boxes for p in parts]), tuple(crops), size)

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __getitem__(self, index: Any) -> InstanceMasks:
        """Rows by bool mask, index array, slice or int (as `Detections`)."""
        sel = _row_index(index, len(self), "InstanceMasks")
        rows = np.arange(len(self))[sel]
        return InstanceMasks(
            self.boxes[rows], tuple(self.crops[int(i)] for i in rows), self.image_size
        )

    @property
    def areas(self) -> np.ndarray:
        """(N,) int64 pixel count of each mask."""
        return np.array([int(np.count_nonzero(c)) for c in self.crops], dtype=np.int64)

    def full(self, i: int) -> np.ndarray:
        """Mask `i` as an (H, W) bool array of the whole image."""
        w, h = self.image_size
        out = np.zeros((h, w), dtype=bool)
        x0, y0, x1, y1 = (int(v) for v in self.boxes[i])
        out[y0:y1, x0:x1] = self.crops[i]
        return out

    def to_dense(self) -> np.ndarray:
        """(N, H, W) bool, every mask at frame size (memory: N x H x W bytes)."""
        w, h = self.image_size
        out = np.zeros((len(self), h, w), dtype=bool)
        for i, (x0, y0, x1, y1) in enumerate(self.boxes.tolist()):
            out[i, y0:y1, x0:x1] = self.crops[i]
        return out

    def pixel_coords(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(xs, ys) int64 original-image pixel coordinates inside mask `i`."""
        ys, xs = np.nonzero(self.crops[i])
        return xs + int(self.boxes[i, 0]), ys + int(self.boxes[i, 1])

    def to_id_image(self, ids: Any | None = None, dtype: Any = np.uint16) -> np.ndarray:
        """One (H, W) image of the whole frame: 0 where no instance is, else
        the id of the instance there (a mono16 instance-id image).

        `ids` (N,) gives each mask's id (e.g. detection index + 1, or track
        ids); default ``1..N``. Ids must be in 1..max of `dtype` (0 is the
        background). Where masks overlap, the earlier row wins (`Detector`
        output is sorted by score, so the more confident instance).
        """
        n = len(self)
        info = np.iinfo(dtype)
        if ids is None:
            values = np.arange(1, n + 1, dtype=np.int64)
        else:
            values = np.asarray(ids).reshape(-1)
            if values.shape != (n,):
                raise ValueError(f"InstanceMasks.to_id_image: expected {n} ids, got {values.shape}")
            if not np.issubdtype(values.dtype, np.integer):
                raise TypeError(f"InstanceMasks.to_id_image: expected int ids, got {values.dtype}")
        if n and (values.min() < 1 or values.max() > info.max):
            raise ValueError(
                f"InstanceMasks.to_id_image: expected ids in 1..{info.max}, "
                f"got {int(values.min())}..{int(values.max())}"
            )
        w, h = self.image_size
        out = np.zeros((h, w), dtype=dtype)
        for i in range(n - 1, -1, -1):  # earlier rows painted last: they win
            x0, y0, x1, y1 = (int(v) for v in self.boxes[i])
            region = out[y0:y1, x0:x1]
            region[self.crops[i]] = values[i]
        return out

    def equals(self, other: InstanceMasks) -> bool:
        """Exact equality of boxes, crops and image size."""
        return (
            self.image_size == other.image_size
            and np.array_equal(self.boxes, other.boxes)
            and all(np.array_equal(a, b) for a, b in zip(self.crops, other.crops, strict=True))
        )


@dataclass(frozen=True, eq=False)
class Detections:
    """Boxes of one image, in original-image pixels.

    Attributes:
        xyxy: (N, 4) float32, x1, y1, x2, y2 in pixels of the image as received.
        scores: (N,) float32 confidence.
        class_ids: (N,) int32 index into the model's class names.
        track_ids: (N,) int64, `UNTRACKED` (-1) when no tracker assigned one.
        stamp_ns: capture time of the image (header stamp) in nanoseconds.
        frame_id: optical frame of the camera that took the image.
        image_size: (width, height) of that image in pixels; (0, 0) if unknown.

    Optional per-row fields (None unless the model produces them; every row
    operation keeps them aligned with the boxes, and code that reads only the
    boxes can ignore them):

        masks: `InstanceMasks` of a segmentation model, one per row, at the
            resolution of the image (its `image_size` equals this one's unless
            this one is (0, 0)). Each mask is stored inside its box only.
        keypoints: (N, K, 3) float32 x, y in original pixels and a confidence
            (visibility probability, 0..1; 1.0 for models without one) of
            K keypoints per row (pose models; K = 17 for COCO persons).
        obb: (N, 5) float32 oriented boxes cx, cy, w, h in original pixels and
            the rotation theta in radians (counter-clockwise in image axes,
            i.e. from +x towards +y, Ultralytics' xywhr convention). `xyxy`
            is then the axis-aligned hull of the rotated box, clipped to the
            image; `obb` itself is not clipped.

    Build from loose arrays with `Detections.from_arrays`, which converts dtypes;
    the constructor itself only validates, so a wrong dtype is a visible bug.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray
    stamp_ns: int = 0
    frame_id: str = ""
    image_size: tuple[int, int] = field(default=(0, 0))
    masks: InstanceMasks | None = None
    keypoints: np.ndarray | None = None
    obb: np.ndarray | None = None

    def __post_init__(self) -> None:
        n: int | None = None
        for name, dtype, tail in _FIELDS:
            n = _check_array(name, getattr(self, name), dtype, tail, n)
        if not isinstance(self.stamp_ns, (int, np.integer)) or isinstance(self.stamp_ns, bool):
            raise TypeError(
                f"Detections.stamp_ns: expected int, got {type(self.stamp_ns).__name__}"
            )
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        if not isinstance(self.frame_id, str):
            raise TypeError(
                f"Detections.frame_id: expected str, got {type(self.frame_id).__name__}"
            )
        size = _check_size("Detections.image_size", self.image_size)
        object.__setattr__(self, "image_size", size)
        self._check_optional(int(n or 0))

    def _check_optional(self, n: int) -> None:
        if self.masks is not None:
            if not isinstance(self.masks, InstanceMasks):
                raise TypeError(
                    "Detections.masks: expected InstanceMasks or None, "
                    f"got {type(self.masks).__name__}"
                )
            if len(self.masks) != n:
                raise ValueError(
                    f"Detections.masks: expected {n} masks (as xyxy), got {len(self.masks)}"
                )
            if self.image_size != (0, 0) and self.masks.image_size != self.image_size:
                raise ValueError(
                    f"Detections.masks: expected image_size {self.image_size}, "
                    f"got {self.masks.image_size}"
                )
        if self.keypoints is not None:
            kp = self.keypoints
            if isinstance(kp, np.ndarray) and kp.ndim == 3 and kp.shape[1] >= 1:
                _check_array("keypoints", kp, np.float32, (kp.shape[1], 3), n)
            else:
                _check_array("keypoints", kp, np.float32, ("K", 3), n)
        if self.obb is not None:
            _check_array("obb", self.obb, np.float32, (5,), n)

    # ---------------------------------------------------------------- builders
    @classmethod
    def from_arrays(
        cls,
        xyxy: Any,
        scores: Any,
        class_ids: Any,
        track_ids: Any | None = None,
        *,
        stamp_ns: int = 0,
        frame_id: str = "",
        image_size: tuple[int, int] = (0, 0),
        masks: InstanceMasks | None = None,
        keypoints: Any | None = None,
        obb: Any | None = None,
    ) -> Detections:
        """Build from array-likes, converting to the canonical dtypes (no copy if
        already canonical). `track_ids=None` means untracked; `keypoints`
        ((N, K, 3)) and `obb` ((N, 5)) are converted to float32."""
        boxes = np.asarray(xyxy, dtype=np.float32)
        if boxes.size == 0 and boxes.ndim < 2:
            boxes = boxes.reshape(0, 4)
        n = boxes.shape[0] if boxes.ndim >= 1 else 0
        tids = (
            np.full(n, UNTRACKED, dtype=np.int64)
            if track_ids is None
            else np.asarray(track_ids, dtype=np.int64).reshape(-1)
        )
        return cls(
            xyxy=boxes,
            scores=np.asarray(scores, dtype=np.float32).reshape(-1),
            class_ids=np.asarray(class_ids, dtype=np.int32).reshape(-1),
            track_ids=tids,
            stamp_ns=stamp_ns,
            frame_id=frame_id,
            image_size=image_size,
            masks=masks,
            keypoints=None if keypoints is None else np.asarray(keypoints, dtype=np.float32),
            obb=None if obb is None else np.asarray(obb, dtype=np.float32),
        )

    @classmethod
    def empty(
        cls, *, stamp_ns: int = 0, frame_id: str = "", image_size: tuple[int, int] = (0, 0)
    ) -> Detections:
        """No detections, but keeping the image's stamp, frame and size."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            class_ids=np.zeros(0, np.int32),
            track_ids=np.zeros(0, np.int64),
            stamp_ns=stamp_ns,
            frame_id=frame_id,
            image_size=image_size,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Detections]) -> Detections:
        """Join detections of the same image (same stamp, frame and size).

        An optional field (masks, keypoints, obb) is kept when every part with
        rows has it (parts without rows may lack it); a field that some parts
        with rows have and others lack raises ValueError."""
        if not parts:
            raise ValueError("Detections.concatenate: expected at least one Detections, got none")
        first = parts[0]
        for p in parts[1:]:
            meta, ref = (
                (p.stamp_ns, p.frame_id, p.image_size),
                (
                    first.stamp_ns,
                    first.frame_id,
                    first.image_size,
                ),
            )
            if meta != ref:
                raise ValueError(
                    "Detections.concatenate: parts belong to different images: "
                    f"expected (stamp_ns, frame_id, image_size)={ref}, got {meta}"
                )
        present = {}
        for name in _OPTIONAL:
            have = [getattr(p, name) is not None for p in parts if len(p)]
            if any(have) and not all(have):
                raise ValueError(
                    f"Detections.concatenate: expected every part to have {name} or none, "
                    f"got {sum(have)} of {len(have)} non-empty parts with it"
                )
            present[name] = bool(have) and all(have)
        with_rows = [p for p in parts if len(p)] or list(parts[:1])
        masks = keypoints = obb = None
        if present["masks"]:
            masks = InstanceMasks.concatenate([p.masks for p in with_rows if p.masks is not None])
        if present["keypoints"]:
            kps = [p.keypoints for p in with_rows if p.keypoints is not None]
            if len({k.shape[1] for k in kps}) > 1:
                raise ValueError(
                    "Detections.concatenate: expected the same keypoint count in every part, "
                    f"got {sorted({k.shape[1] for k in kps})}"
                )
            keypoints = np.concatenate(kps)
        if present["obb"]:
            obb = np.concatenate([p.obb for p in with_rows if p.obb is not None])
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            class_ids=np.concatenate([p.class_ids for p in parts]),
            track_ids=np.concatenate([p.track_ids for p in parts]),
            stamp_ns=first.stamp_ns,
            frame_id=first.frame_id,
            image_size=first.image_size,
            masks=masks,
            keypoints=keypoints,
            obb=obb,
        )

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> Detections:
        """Select rows with a boolean mask, an index array or a slice.

        A single int also returns a `Detections` (of length 1), so the result
        is always the same type.
        """
        index = _row_index(index, len(self), "Detections")
        return replace(
            self,
            xyxy=self.xyxy[index],
            scores=self.scores[index],
            class_ids=self.class_ids[index],
            track_ids=self.track_ids[index],
            masks=None if self.masks is None else self.masks[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
            obb=None if self.obb is None else self.obb[index],
        )

    def with_track_ids(self, track_ids: Any) -> Detections:
        """Copy with track ids set (what a tracker returns)."""
        return replace(self, track_ids=np.asarray(track_ids, dtype=np.int64).reshape(-1))

    @property
    def is_tracked(self) -> np.ndarray:
        """(N,) bool: rows that carry a track id."""
        tracked: np.ndarray = self.track_ids != UNTRACKED
        return tracked

    @property
    def xywh(self) -> np.ndarray:
        """(N, 4) float32 top-left x, y, width, height (MOTChallenge layout)."""
        out: np.ndarray = self.xyxy.copy()
        out[:, 2:] -= out[:, :2]
        return out

    @property
    def centers(self) -> np.ndarray:
        """(N, 2) float32 box centres."""
        centers: np.ndarray = (self.xyxy[:, :2] + self.xyxy[:, 2:]) * np.float32(0.5)
        return centers

    @property
    def areas(self) -> np.ndarray:
        """(N,) float32 box areas (0 for degenerate boxes)."""
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0.0, None)
        areas: np.ndarray = wh[:, 0] * wh[:, 1]
        return areas

    def finite_mask(self) -> np.ndarray:
        """(N,) bool: rows whose box and score are all finite."""
        finite: np.ndarray = np.isfinite(self.xyxy).all(axis=1) & np.isfinite(self.scores)
        return finite

    def equals(self, other: Detections) -> bool:
        """Exact equality of every array (optional fields included) and of the
        metadata."""
        if not (
            self.stamp_ns == other.stamp_ns
            and self.frame_id == other.frame_id
            and self.image_size == other.image_size
            and all(np.array_equal(getattr(self, n), getattr(other, n)) for n, _, _ in _FIELDS)
        ):
            return False
        if self.masks is None or other.masks is None:
            if (self.masks is None) != (other.masks is None):
                return False
        elif not self.masks.equals(other.masks):
            return False
        for name in ("keypoints", "obb"):
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                return False
        return True

    def __repr__(self) -> str:
        extra = "".join(f", {name}" for name in ("masks", "obb") if getattr(self, name) is not None)
        if self.keypoints is not None:
            extra += f", keypoints={self.keypoints.shape[1]}"
        return (
            f"Detections(n={len(self)}, stamp_ns={self.stamp_ns}, frame_id={self.frame_id!r}, "
            f"image_size={self.image_size}, tracked={int(self.is_tracked.sum())}{extra})"
        )
