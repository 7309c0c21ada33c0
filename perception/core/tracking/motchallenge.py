"""MOTChallenge text format: detections in, tracks out.

Rows are `frame, id, x, y, w, h, score, ...` with 1-based frame numbers and
top-left/size boxes in pixels; detection files carry id -1 (ignored here).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from perception.core.types import Detections

__all__ = ["MotFormatError", "frames_from_mot", "read_mot", "write_mot_tracks"]

_NS = 1_000_000_000


class MotFormatError(ValueError):
    """A MOTChallenge file has the wrong layout."""


def read_mot(source: str | os.PathLike[str] | TextIO) -> np.ndarray:
    """(N, >=7) float64 rows of a MOTChallenge file (a path, or an open text
    stream such as sys.stdin; empty lines ignored)."""
    text = Path(source).read_text() if isinstance(source, str | os.PathLike) else source.read()
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.replace(" ", "").split(",") if "," in line else line.split()
        if len(parts) < 6:
            raise MotFormatError(
                f"line {lineno}: expected at least 6 fields (frame,id,x,y,w,h), got {len(parts)}"
            )
        try:
            vals = [float(p) for p in parts[:7]]
        except ValueError as exc:
            raise MotFormatError(f"line {lineno}: expected numbers, got {line!r}") from exc
        if len(vals) == 6:
            vals.append(1.0)
        rows.append(vals)
    if not rows:
        return np.zeros((0, 7), np.float64)
    return np.asarray(rows, np.float64)


def frames_from_mot(
    rows: np.ndarray,
    fps: float,
    frame_id: str = "camera",
    class_id: int = 0,
    score: float | None = None,
    first_frame: int | None = None,
    last_frame: int | None = None,
    image_size: tuple[int, int] = (0, 0),
) -> Iterator[tuple[int, Detections]]:
    """Yield (frame number, Detections) for every frame from the first to the
    last (frames without rows give empty Detections), stamped
    `round((frame - 1) / fps * 1e9)` ns. `score` overrides the file's scores; `image_size` is
    (width, height) or (0, 0) when unknown."""
    if not fps > 0.0:
        raise ValueError(f"fps: expected > 0, got {fps}")
    frames = rows[:, 0].astype(np.int64) if len(rows) else np.zeros(0, np.int64)
    lo = first_frame if first_frame is not None else (int(frames.min()) if len(frames) else 1)
    hi = last_frame if last_frame is not None else (int(frames.max()) if len(frames) else 0)
    order = np.argsort(frames, kind="stable")
    rows, frames = rows[order], frames[order]
    starts = np.searchsorted(frames, np.arange(lo, hi + 2))
    for k, f in enumerate(range(lo, hi + 1)):
        r = rows[starts[k] : starts[k + 1]]
        xywh = r[:, 2:6]
        xyxy = np.concatenate((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), axis=1)
        sc = np.full(len(r), score) if score is not None else r[:, 6]
        yield (
            f,
            Detections.from_arrays(
                xyxy,
                sc,
                np.full(len(r), class_id),
                stamp_ns=round((f - 1) * _NS / fps),
                frame_id=frame_id,
                image_size=image_size,
            ),
        )


def write_mot_tracks(out: TextIO, results: Iterable[tuple[int, Detections]]) -> int:
    """Write `frame,id,x,y,w,h,score,-1,-1,-1` rows of tracked boxes; returns
    the number of rows."""
    n = 0
    for f, det in results:
        xywh = det.xywh
        for i in range(len(det)):
            x, y, w, h = (float(v) for v in xywh[i])
            out.write(
                f"{f},{int(det.track_ids[i])},{x:.2f},{y:.2f},{w:.2f},{h:.2f},"
                f"{float(det.scores[i]):.4g},-1,-1,-1\n"
            )
            n += 1
    return n
