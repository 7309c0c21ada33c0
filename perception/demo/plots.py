"""PNG charts drawn with OpenCV, so the demo needs no plotting library:
latency over time (one line per stage) and bar charts of the scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["bar_chart", "line_chart"]

_W, _H = 900, 480
_L, _R, _T, _B = 70, 190, 40, 50
_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
            (75, 86, 140), (194, 119, 227), (127, 127, 127)]  # fmt: skip


def _canvas(title: str):
    import cv2

    img = np.full((_H, _W, 3), 255, np.uint8)
    cv2.putText(img, title, (_L, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(img, (_L, _T), (_W - _R, _H - _B), (0, 0, 0), 1)
    return img, cv2


def _nice_max(v: float) -> float:
    if not np.isfinite(v) or v <= 0:
        return 1.0
    e = 10 ** np.floor(np.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * e:
            return float(m * e)
    return float(10 * e)


def _y_axis(img: np.ndarray, cv2, ymax: float, label: str) -> None:
    for k in range(6):
        v = ymax * k / 5
        y = int(_H - _B - (_H - _B - _T) * k / 5)
        cv2.line(img, (_L - 4, y), (_W - _R, y), (225, 225, 225) if k else (0, 0, 0), 1)
        cv2.putText(img, f"{v:.3g}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(img, label, (5, _T - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Path:
    """One polyline per named (x, y) series, y clipped at the largest p99."""
    img, cv2 = _canvas(title)
    xs = [np.asarray(x, np.float64) for x, _ in series.values() if len(x)]
    ys = [np.asarray(y, np.float64) for _, y in series.values() if len(y)]
    x0 = min((float(x.min()) for x in xs), default=0.0)
    x1 = max((float(x.max()) for x in xs), default=1.0)
    x1 = x1 if x1 > x0 else x0 + 1.0
    ymax = _nice_max(max((float(np.percentile(y, 99)) for y in ys), default=1.0) * 1.05)
    _y_axis(img, cv2, ymax, ylabel)
    pw, ph = _W - _R - _L, _H - _B - _T
    for k in range(6):
        v = x0 + (x1 - x0) * k / 5
        tx = int(_L + pw * k / 5)
        cv2.putText(img, f"{v:.3g}", (tx - 10, _H - _B + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1)  # fmt: skip
    cv2.putText(img, xlabel, (_L + pw // 2 - 30, _H - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1)  # fmt: skip
    for i, (name, (xv, yv)) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        x, y = np.asarray(xv, np.float64), np.asarray(yv, np.float64)
        if len(x):
            px = _L + (x - x0) / (x1 - x0) * pw
            py = _H - _B - np.clip(y, 0, ymax) / ymax * ph
            pts = np.stack([px, py], 1).round().astype(np.int32)
            cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
        ly = _T + 15 + 18 * i
        cv2.line(img, (_W - _R + 10, ly - 4), (_W - _R + 30, ly - 4), colour, 2)
        cv2.putText(img, name, (_W - _R + 35, ly), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    path = Path(path)
    cv2.imwrite(str(path), img)
    return path


def bar_chart(values: Mapping[str, float], path: Path, title: str, ylabel: str) -> Path:
    """Vertical bars with their values written on top (NaN drawn as 'n/a',
    negative values such as a MOTA below 0 as an empty bar with the value)."""
    img, cv2 = _canvas(title)
    finite = [v for v in values.values() if np.isfinite(v)]
    top = max([*finite, 1e-9])
    ymax = 1.0 if top <= 1.0 else _nice_max(top * 1.1)  # scores: a fixed 0..1 axis
    _y_axis(img, cv2, ymax, ylabel)
    pw, ph = _W - _R - _L, _H - _B - _T
    n = max(len(values), 1)
    slot = pw / n
    for i, (name, v) in enumerate(values.items()):
        x0 = int(_L + slot * i + slot * 0.2)
        x1 = int(_L + slot * (i + 1) - slot * 0.2)
        ok = np.isfinite(v)
        h = int(np.clip(max(v, 0.0) if ok else 0.0, 0, ymax) / ymax * ph)
        cv2.rectangle(img, (x0, _H - _B - h), (x1, _H - _B), _COLOURS[i % len(_COLOURS)], -1)
        txt = f"{v:.3f}" if ok else "n/a"
        cv2.putText(img, txt, (x0, _H - _B - h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        cv2.putText(img, name, (x0, _H - _B + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1)
    path = Path(path)
    cv2.imwrite(str(path), img)
    return path
