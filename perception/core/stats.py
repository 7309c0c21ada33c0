"""Rolling latency statistics and rates for diagnostics (no ROS).

Fixed-size ring buffers: memory stays bounded however long a node runs, and
percentiles describe the recent past, which is what an operator looks at.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

__all__ = ["LatencyStats", "RateMeter"]


class LatencyStats:
    """Per-stage ring buffers of durations in milliseconds."""

    def __init__(self, stages: Iterable[str], window: int = 512) -> None:
        if window < 1:
            raise ValueError(f"window: expected >= 1, got {window}")
        self._lock = threading.Lock()
        self._window = window
        self._buf = {s: np.full(window, np.nan) for s in stages}
        self._pos = dict.fromkeys(self._buf, 0)
        self._count = dict.fromkeys(self._buf, 0)

    @property
    def stages(self) -> list[str]:
        return list(self._buf)

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            if stage not in self._buf:
                self._buf[stage] = np.full(self._window, np.nan)
                self._pos[stage] = 0
                self._count[stage] = 0
            i = self._pos[stage]
            self._buf[stage][i] = ms
            self._pos[stage] = (i + 1) % self._window
            self._count[stage] += 1

    def add_many(self, values: dict[str, float]) -> None:
        for stage, ms in values.items():
            self.add(stage, ms)

    def percentiles(self, qs: Iterable[float] = (50, 95, 99)) -> dict[str, dict[str, float]]:
        """{stage: {"p50": ..., "p95": ..., "max": ..., "n": ...}} over the window."""
        qs = tuple(qs)
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            for stage, buf in self._buf.items():
                vals = buf[~np.isnan(buf)]
                if vals.size == 0:
                    continue
                pct = np.percentile(vals, qs)
                row = {f"p{q:g}": float(v) for q, v in zip(qs, pct, strict=True)}
                row["max"] = float(vals.max())
                row["n"] = float(self._count[stage])
                out[stage] = row
        return out


class RateMeter:
    """Events per second over a sliding window of the last `window` events."""

    def __init__(self, window: int = 64) -> None:
        self._t = np.full(window, np.nan)
        self._i = 0
        self._lock = threading.Lock()

    def tick(self, t_ns: int) -> None:
        with self._lock:
            self._t[self._i % self._t.size] = t_ns
            self._i += 1

    def rate_hz(self, now_ns: int | None = None) -> float:
        with self._lock:
            t = self._t[~np.isnan(self._t)]
            if t.size < 2:
                return 0.0
            end = float(now_ns) if now_ns is not None else t.max()
            span = (end - t.min()) * 1e-9
            return float((t.size - 1) / span) if span > 0 else 0.0
