"""One tracker per camera, selected by the detections' frame_id."""

from __future__ import annotations

import logging

from perception.core.tracking.config import TrackerConfig
from perception.core.tracking.tracker import Tracker, TrackerStats
from perception.core.types import Detections

__all__ = ["MultiCameraTracker"]

_LOG = logging.getLogger(__name__)


class MultiCameraTracker:
    """Routes each `Detections` to the tracker of its `frame_id`, creating it
    on first sight. Ids are unique per camera (each camera counts from 1), and
    each camera's stamps are checked independently, so cameras with different
    clocks or rates do not interfere.

    For trusted inputs only (files, offline tools): every new frame_id makes a
    tracker that is never freed. Nodes key one `Tracker` per configured camera
    or input topic instead, never per frame_id from the wire."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        if config is not None and not isinstance(config, TrackerConfig):
            raise TypeError(f"config: expected TrackerConfig, got {type(config).__name__}")
        self._cfg = config if config is not None else TrackerConfig()
        self._trackers: dict[str, Tracker] = {}

    @property
    def config(self) -> TrackerConfig:
        return self._cfg

    def set_config(self, config: TrackerConfig) -> None:
        """New parameters for every camera, now and later (tracks are kept)."""
        if not isinstance(config, TrackerConfig):
            raise TypeError(f"config: expected TrackerConfig, got {type(config).__name__}")
        self._cfg = config
        for t in self._trackers.values():
            t.set_config(config)

    def update(self, det: Detections) -> Detections:
        """Track one frame of the camera named by `det.frame_id`."""
        if not isinstance(det, Detections):
            raise TypeError(f"det: expected Detections, got {type(det).__name__}")
        tracker = self._trackers.get(det.frame_id)
        if tracker is None:
            tracker = Tracker(self._cfg, frame_id=det.frame_id)
            self._trackers[det.frame_id] = tracker
            _LOG.info("tracker: new camera %r", det.frame_id)
        return tracker.update(det)

    def tracker(self, frame_id: str) -> Tracker | None:
        return self._trackers.get(frame_id)

    @property
    def frame_ids(self) -> list[str]:
        return list(self._trackers)

    def reset(self, frame_id: str | None = None) -> None:
        """Drop the tracks of one camera, or of all (ids are never reused)."""
        if frame_id is None:
            for t in self._trackers.values():
                t.reset()
        elif frame_id in self._trackers:
            self._trackers[frame_id].reset()

    def stats(self) -> dict[str, TrackerStats]:
        """Counters per camera."""
        return {k: t.stats for k, t in self._trackers.items()}
