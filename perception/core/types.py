"""Core data types: detections and tracks as a structure of numpy arrays.

One `Detections` object holds every box of one image. Arrays keep the hot paths
(NMS, tracking, message conversion) vectorised; the object is frozen so a
stage cannot change what another stage already published. No ROS imports here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["UNTRACKED", "Detections"]

UNTRACKED = -1
"""`track_ids` value of a detection that no tracker has assigned."""

_FIELDS = (
    # name, dtype, trailing shape
    ("xyxy", np.float32, (4,)),
    ("scores", np.float32, ()),
    ("class_ids", np.int32, ()),
    ("track_ids", np.int64, ()),
)


def _check_array(name: str, value: Any, dtype: type, tail: tuple[int, ...], n: int | None) -> int:
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
        size = tuple(self.image_size)
        if len(size) != 2 or any(int(s) != s or s < 0 for s in size):
            raise ValueError(
                f"Detections.image_size: expected (width, height) of non-negative ints, "
                f"got {self.image_size!r}"
            )
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))

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
    ) -> Detections:
        """Build from array-likes, converting to the canonical dtypes (no copy if
        already canonical). `track_ids=None` means untracked."""
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
        """Join detections of the same image (same stamp, frame and size)."""
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
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            class_ids=np.concatenate([p.class_ids for p in parts]),
            track_ids=np.concatenate([p.track_ids for p in parts]),
            stamp_ns=first.stamp_ns,
            frame_id=first.frame_id,
            image_size=first.image_size,
        )

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> Detections:
        """Select rows with a boolean mask, an index array or a slice.

        A single int also returns a `Detections` (of length 1), so the result
        is always the same type.
        """
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"Detections index {index} out of range for length {n}")
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool and index.shape != (len(self),):
                raise IndexError(
                    f"Detections boolean mask: expected shape ({len(self)},), got {index.shape}"
                )
        return replace(
            self,
            xyxy=self.xyxy[index],
            scores=self.scores[index],
            class_ids=self.class_ids[index],
            track_ids=self.track_ids[index],
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
        """Exact equality of every array and of the metadata."""
        return (
            self.stamp_ns == other.stamp_ns
            and self.frame_id == other.frame_id
            and self.image_size == other.image_size
            and all(np.array_equal(getattr(self, n), getattr(other, n)) for n, _, _ in _FIELDS)
        )

    def __repr__(self) -> str:
        return (
            f"Detections(n={len(self)}, stamp_ns={self.stamp_ns}, frame_id={self.frame_id!r}, "
            f"image_size={self.image_size}, tracked={int(self.is_tracked.sum())})"
        )
