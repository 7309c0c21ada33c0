"""What the AR overlay draws on which image: matching, prediction, trails, 3D boxes.

`OverlayCompositor` is the overlay node's per-frame logic without ROS, so it
can run (and be tested) offline: images, tracks and 3D objects go in with
their stamps, and out come `OverlayFrame`s (an image with what to draw on it)
that `render()` draws. Images are opaque handles (a ROS message, a path, an
array): a frame's image is decoded only when it is drawn, so images that are
never matched cost no decoding.

Two modes (`OverlaySettings.use_prediction`):

- matched: images and tracks are matched by stamp with a
  `StampSynchronizer` (tolerance `stamp_tolerance_s`, `buffer_size` per
  stream). An image waits until the tracks have passed its stamp; an image or
  tracks message that can no longer be matched (a later partner came, or its
  queue overflowed) is dropped and counted (`unmatched_images`,
  `unmatched_tracks`). With 3D boxes on, a matched image then waits, in a
  second synchronizer, for the objects of its stamp; one whose objects cannot
  come any more (later objects came, or `buffer_size` images wait) goes out
  without 3D boxes (`objects_missing`).
- predicted: every image goes out at once with the newest tracks moved to the
  image's stamp by `TrackMotionEstimator`; horizons beyond `max_horizon_s`
  are refused (`prediction_refused`, the image goes out without boxes). 3D
  objects are drawn only when those of exactly the image's stamp are already
  here (they are not predicted).

Everything is decided from stamps, never from the wall clock, so the same
inputs in the same order give the same frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from perception.core.camera import CameraModel
from perception.core.errors import PerceptionError
from perception.core.fusion.sync import StampSynchronizer
from perception.core.fusion.types import Objects3D
from perception.core.overlay import TrailHistory, draw_boxes3d, draw_overlay
from perception.core.prediction import (
    PastPolicy,
    Prediction,
    PredictionError,
    TrackMotionEstimator,
)
from perception.core.types import Detections

__all__ = [
    "COUNTERS",
    "OverlayCompositor",
    "OverlayFrame",
    "OverlaySettings",
    "OverlayStatus",
]

COUNTERS = (
    "images_received",
    "tracks_received",
    "published",
    "unmatched_images",
    "unmatched_tracks",
    "prediction_refused",
    "requests",
    "requests_refused",
    "decode_errors",
    "draw_errors",
    "objects_received",
    "unmatched_objects",
    "objects_missing",
    "objects_errors",
    "camera_info_missing",
    "camera_info_errors",
    "tracks_errors",
    "rejected_rows",
    "too_many_boxes",
    "callback_errors",
    "extras_missing",
    "extras_errors",
)
"""Counters of `OverlayCompositor.counters` (reported in /diagnostics by the node)."""

MAX_CLASS_NAMES = 4096
"""Most class names learnt from the inputs (a flood of odd strings cannot grow them)."""
MAX_CLASS_NAME_LEN = 256
"""Longer class strings are not learnt as names (4096 of 1 MB each would be 4 GB)."""

BadInput = Literal["image", "objects", "camera_info", "tracks", "request", "callback", "extras"]
ImageT = TypeVar("ImageT")
RowsT = TypeVar("RowsT", Detections, Objects3D)
Warn = Callable[[str, str], None]
"""warn(kind, message): kind is a stable key (e.g. for throttling per kind)."""

_PAST = ("refuse", "hold", "extrapolate")
_DROP_COUNTERS = {
    "image": "unmatched_images",
    "tracks": "unmatched_tracks",
    "objects": "unmatched_objects",
}


@dataclass(frozen=True)
class OverlaySettings:
    """What the compositor does; the node builds it from its parameters.

    buffer_size, stamp_tolerance_s, trail_points, trail_max_age_s, max_tracks
    and boxes3d size the state and are fixed once a compositor is built; the
    others may change at run time (`OverlayCompositor.update`).
    """

    buffer_size: int = 10
    stamp_tolerance_s: float = 0.0
    use_prediction: bool = False
    max_horizon_s: float = 0.5
    past: PastPolicy = "hold"
    show_source: bool = False
    trails: bool = True
    trail_points: int = 30
    trail_max_age_s: float = 2.0
    max_tracks: int = 256
    max_boxes: int = 1000
    """Most tracks or 3D objects drawn per message (highest scores first);
    the rest are dropped and counted (`too_many_boxes`)."""
    boxes3d: bool = False
    """Match and draw 3D objects (the node: objects_topic set)."""
    T_camera_from_objects: np.ndarray | None = field(default=None, compare=False)
    """4x4 from the objects' frame to the camera optical frame; None = identity."""

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size: expected >= 1, got {self.buffer_size}")
        if not self.stamp_tolerance_s >= 0.0:
            raise ValueError(f"stamp_tolerance_s: expected >= 0, got {self.stamp_tolerance_s}")
        if self.past not in _PAST:
            raise ValueError(f"past: expected one of {list(_PAST)}, got {self.past!r}")
        if self.max_boxes < 1:
            raise ValueError(f"max_boxes: expected >= 1, got {self.max_boxes}")


_FIXED = ("buffer_size", "stamp_tolerance_s", "trail_points", "trail_max_age_s",
          "max_tracks", "boxes3d")  # fmt: skip


@dataclass(frozen=True)
class OverlayFrame(Generic[ImageT]):
    """One image to draw and publish, with what goes on it."""

    image: ImageT
    stamp_ns: int
    tracks: Detections | None
    """Solid boxes (the matched or predicted tracks); None = the image as it is."""
    dashed: Detections | None = None
    """Measured boxes shown dashed under a prediction (`show_source`)."""
    objects: Objects3D | None = None
    """3D objects to project (None: none matched, or 3D boxes off)."""


@dataclass(frozen=True)
class OverlayStatus:
    """A diagnostics summary: `ok` False when anything went wrong."""

    ok: bool
    message: str
    values: dict[str, str]


class OverlayCompositor(Generic[ImageT]):
    """The AR overlay's state and decisions (see the module docstring).

    Every `add_*` method returns the frames that became ready, oldest first;
    the caller decodes each frame's image and passes it to `render()`.

    Args:
        settings: what to do (see `OverlaySettings`).
        class_names: names by class id, for labels; names met in the inputs are
            added with `learn_class_names`.
        warn: called for what a user should see in a log, at most once per
            event (the caller throttles).
    """

    def __init__(
        self,
        settings: OverlaySettings,
        class_names: Iterable[str] = (),
        warn: Warn | None = None,
    ) -> None:
        self._settings = settings
        self._warn = warn
        self.class_names: list[str] = [n for n in class_names if n]
        self._class_lookup = {n: i for i, n in enumerate(self.class_names)}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.rejected: dict[str, int] = {}
        """Rows dropped at conversion and messages refused, by "<source>.<kind>"."""
        self.camera: CameraModel | None = None
        self.latest_tracks: Detections | None = None
        self.last_horizon_s: float | None = None
        s = settings
        self.trails = TrailHistory(
            max_points=s.trail_points, max_tracks=s.max_tracks, max_age_s=s.trail_max_age_s
        )
        self.motion = TrackMotionEstimator(max_age_s=s.trail_max_age_s, max_tracks=s.max_tracks)
        self._ready: list[OverlayFrame[ImageT]] = []
        # images <-> tracks; then matched frames <-> 3D objects
        self._sync2d = StampSynchronizer(
            ("image", "tracks"), s.stamp_tolerance_s, s.buffer_size, on_drop=self._on_drop
        )
        self._sync3d = StampSynchronizer(
            ("frame", "objects"), s.stamp_tolerance_s, s.buffer_size, on_drop=self._on_drop
        )

    # ------------------------------------------------------------ settings
    @property
    def settings(self) -> OverlaySettings:
        return self._settings

    def update(self, settings: OverlaySettings) -> None:
        """New run-time settings; switching mode drops the images and tracks
        waiting for a match (counted unmatched). Raises ValueError when a
        setting fixed at construction changes."""
        changed = [k for k in _FIXED if getattr(settings, k) != getattr(self._settings, k)]
        if changed:
            raise ValueError(f"fixed when the overlay starts: {', '.join(changed)}")
        switched = settings.use_prediction != self._settings.use_prediction
        self._settings = settings
        if switched:
            self._sync2d.reset()

    def learn_class_names(self, names: Iterable[str]) -> None:
        """Give every class string not known yet (and not a number) an id of
        its own, so labels show the names the inputs carry (bounded)."""
        known = self._class_lookup
        for name in names:
            if name in known or len(known) >= MAX_CLASS_NAMES or len(name) > MAX_CLASS_NAME_LEN:
                continue
            try:
                int(name)
            except ValueError:
                known[name] = len(self.class_names)
                self.class_names.append(name)

    def set_camera(self, camera: CameraModel) -> None:
        """The camera model the 3D boxes are projected with."""
        self.camera = camera

    def note_bad_input(self, kind: BadInput, reason: str, detail: str | None = None) -> None:
        """Count an input the caller could not convert: an image that did not
        decode, a 3D objects or tracks message (also counted received), a
        CameraInfo, a "tracks at t" request (counted refused), a mask image or
        keypoints message of the tracks ("extras"; the tracks are drawn
        without it), or anything a callback did not expect ("callback": the
        caller's last-resort guard).
        `detail` (e.g. the error's kind: "too_large", "stamp") is also counted
        as `rejected["<kind>.<detail>"]`."""
        if detail:
            key = f"{kind}.{detail}"
            self.rejected[key] = self.rejected.get(key, 0) + 1
        if kind == "image":
            self._count("decode_errors", "decode", f"overlay: bad image: {reason}")
        elif kind == "objects":
            self.counters["objects_received"] += 1
            self._count("objects_errors", "objects", f"overlay: bad 3D objects: {reason}")
        elif kind == "tracks":
            self.counters["tracks_received"] += 1
            self._count("tracks_errors", "tracks", f"overlay: bad tracks: {reason}")
        elif kind == "request":
            self.counters["requests"] += 1
            self._count("requests_refused", "request", f"overlay: bad request: {reason}")
        elif kind == "callback":
            self._count("callback_errors", "callback", f"overlay: unexpected error: {reason}")
        elif kind == "extras":
            self._count("extras_errors", "extras", f"overlay: bad masks / keypoints: {reason}")
        else:
            self._count("camera_info_errors", "camera_info", f"overlay: bad CameraInfo: {reason}")

    def note_extras_missing(self, stamp_ns: int) -> None:
        """Tracks whose mask image or keypoints did not come (in time): they are
        drawn without them."""
        message = f"overlay: tracks {stamp_ns} drawn without their masks / keypoints"
        self._count("extras_missing", "extras_missing", message)

    def note_rejected_rows(self, source: str, rejected: Mapping[str, int]) -> None:
        """Count rows the caller's conversion dropped (by kind: "id",
        "class_id", "size", ...) from a `source` message ("tracks", "objects")."""
        total = 0
        for kind, n in rejected.items():
            key = f"{source}.{kind}"
            self.rejected[key] = self.rejected.get(key, 0) + n
            total += n
        if total:
            self.counters["rejected_rows"] += total
            if self._warn is not None:
                what = ", ".join(f"{n} {k}" for k, n in sorted(rejected.items()))
                self._warn(f"rows.{source}", f"overlay: dropped {source} rows out of range: {what}")

    # ------------------------------------------------------------ data path
    def add_image(self, stamp_ns: int, image: ImageT) -> list[OverlayFrame[ImageT]]:
        """An image: matched mode queues it, predicted mode gives its frame now."""
        self.counters["images_received"] += 1
        if self._settings.use_prediction:
            self._ready.append(self._predicted(stamp_ns, image))
        else:
            for s in self._sync2d.push("image", stamp_ns, image):
                self._matched(s.stamp_ns, s["image"], s["tracks"])
        return self._take_ready()

    def add_tracks(self, tracks: Detections) -> list[OverlayFrame[ImageT]]:
        """Tracks (stamped with their image's stamp): trails, velocities, matching.
        Beyond `max_boxes`, the highest-scoring are kept (counted)."""
        self.counters["tracks_received"] += 1
        tracks = self._capped(tracks, tracks.scores, "tracks")
        self.trails.update(tracks)
        self.motion.update(tracks)
        if self.latest_tracks is None or tracks.stamp_ns >= self.latest_tracks.stamp_ns:
            self.latest_tracks = tracks
        if not self._settings.use_prediction:
            for s in self._sync2d.push("tracks", tracks.stamp_ns, tracks):
                self._matched(s.stamp_ns, s["image"], s["tracks"])
        return self._take_ready()

    def add_objects(self, objects: Objects3D) -> list[OverlayFrame[ImageT]]:
        """3D objects (stamped with their image's stamp): completes waiting frames.
        Beyond `max_boxes`, the highest-scoring are kept (counted)."""
        self.counters["objects_received"] += 1
        objects = self._capped(objects, objects.scores, "3D objects")
        if self._settings.boxes3d:
            for s in self._sync3d.push("objects", objects.stamp_ns, objects):
                frame: OverlayFrame[ImageT] = s["frame"]
                self._ready.append(_with_objects(frame, s["objects"]))
        return self._take_ready()

    def tracks_at(self, target_ns: int) -> Prediction:
        """The newest tracks predicted to `target_ns` ("tracks at time t");
        raises PredictionError (counted) when there are none or the horizon
        is beyond `max_horizon_s`."""
        self.counters["requests"] += 1
        try:
            if self.latest_tracks is None:
                raise PredictionError("no tracks received yet")
            return self._predict(self.latest_tracks, target_ns)
        except PredictionError:
            self.counters["requests_refused"] += 1
            raise

    def render(self, frame: OverlayFrame[ImageT], bgr: np.ndarray) -> np.ndarray | None:
        """The annotated copy of `bgr` (the frame's decoded image), or None when
        the 2D overlay cannot be drawn (counted); a 3D box that cannot be drawn
        is counted and the image still comes back with its 2D overlay."""
        s = self._settings
        out: np.ndarray
        try:
            if frame.tracks is None:
                out = bgr.copy()
            else:
                out = draw_overlay(
                    bgr,
                    frame.tracks,
                    self.class_names,
                    trails=self.trails if s.trails else None,
                    dashed=frame.dashed,
                    until_ns=frame.stamp_ns,
                )
        except PerceptionError as exc:
            self._count("draw_errors", "draw", f"overlay: cannot draw: {exc}")
            return None
        if frame.objects is not None and len(frame.objects):
            self._draw_3d(out, frame.objects)
        self.counters["published"] += 1
        return out

    # ---------------------------------------------------------- diagnostics
    def pending(self) -> dict[str, int]:
        """Messages waiting: images and tracks for each other, 3D objects, and
        matched images for their objects."""
        p2, p3 = self._sync2d.pending(), self._sync3d.pending()
        return {
            "image_buffer": p2["image"],
            "track_buffer": p2["tracks"],
            "objects_buffer": p3["objects"],
            "pending_3d": p3["frame"],
        }

    def status(self) -> OverlayStatus:
        """Counters, queue sizes and mode as strings, with a one-line summary."""
        c = self.counters
        values = {k: str(v) for k, v in c.items()}
        values.update({k: str(v) for k, v in self.pending().items()})
        values["camera_info"] = str(self.camera is not None)
        values["buffer_size"] = str(self._settings.buffer_size)
        values["trail_tracks"] = str(len(self.trails))
        values["use_prediction"] = str(self._settings.use_prediction)
        values.update({f"rejected.{k}": str(v) for k, v in sorted(self.rejected.items())})
        if self.last_horizon_s is not None:
            values["last_horizon_ms"] = f"{self.last_horizon_s * 1e3:.1f}"
        bad = c["decode_errors"] + c["draw_errors"] + c["prediction_refused"]
        bad += c["objects_errors"] + c["camera_info_errors"] + c["camera_info_missing"]
        bad += c["tracks_errors"] + c["rejected_rows"] + c["too_many_boxes"]
        bad += c["callback_errors"] + c["extras_errors"] + c["extras_missing"]
        message = (
            f"{c['published']} published, {c['unmatched_images']} images and "
            f"{c['unmatched_tracks']} tracks unmatched"
        )
        return OverlayStatus(ok=not bad, message=message, values=values)

    # ------------------------------------------------------------ internals
    def _count(self, counter: str, kind: str, message: str) -> None:
        self.counters[counter] += 1
        if self._warn is not None:
            self._warn(kind, message)

    def _capped(self, rows: RowsT, scores: np.ndarray, what: str) -> RowsT:
        """The `max_boxes` highest-scoring rows (in their order), counted when cut."""
        cap = self._settings.max_boxes
        n = len(scores)
        if n <= cap:
            return rows
        keep = np.sort(np.argsort(-scores, kind="stable")[:cap])
        message = f"overlay: {n} {what} in one message, drawing the {cap} best (max_boxes)"
        self._count("too_many_boxes", "too_many_boxes", message)
        capped: RowsT = rows[keep]
        return capped

    def _take_ready(self) -> list[OverlayFrame[ImageT]]:
        out, self._ready = self._ready, []
        return out

    def _on_drop(self, stream: str, stamp_ns: int, item: Any, reason: str) -> None:
        """A message the synchronizers could not match: counted; a matched image
        whose objects cannot come goes out without 3D boxes."""
        if stream == "frame":
            self.counters["objects_missing"] += 1
            self._ready.append(item)
        else:
            self.counters[_DROP_COUNTERS[stream]] += 1

    def _matched(self, stamp_ns: int, image: ImageT, tracks: Detections) -> None:
        frame = OverlayFrame(image, stamp_ns, tracks)
        if not self._settings.boxes3d:
            self._ready.append(frame)
            return
        for s in self._sync3d.push("frame", stamp_ns, frame):
            self._ready.append(_with_objects(frame, s["objects"]))

    def _predict(self, tracks: Detections, target_ns: int) -> Prediction:
        s = self._settings
        return self.motion.predict(tracks, target_ns, max_horizon_s=s.max_horizon_s, past=s.past)

    def _predicted(self, stamp_ns: int, image: ImageT) -> OverlayFrame[ImageT]:
        tracks = self.latest_tracks
        if tracks is None:
            return OverlayFrame(image, stamp_ns, None, objects=self._objects_of(stamp_ns))
        try:
            pred = self._predict(tracks, stamp_ns)
        except PredictionError as exc:
            self._count("prediction_refused", "prediction",
                        f"overlay: no boxes on image {stamp_ns}: {exc}")  # fmt: skip
            return OverlayFrame(image, stamp_ns, None)
        self.last_horizon_s = pred.horizon_s
        dashed = tracks if self._settings.show_source else None
        return OverlayFrame(
            image, stamp_ns, pred.detections, dashed=dashed, objects=self._objects_of(stamp_ns)
        )

    def _objects_of(self, stamp_ns: int) -> Objects3D | None:
        """Predicted mode: the objects of this stamp if already here (taken)."""
        if not self._settings.boxes3d:
            return None
        found = self._sync3d.take("objects", stamp_ns)
        if found is None:
            self.counters["objects_missing"] += 1
            return None
        objects: Objects3D = found[1]
        return objects

    def _draw_3d(self, out: np.ndarray, objects: Objects3D) -> None:
        if self.camera is None:
            self._count("camera_info_missing", "camera_info_missing",
                        "overlay: no CameraInfo yet, 3D boxes skipped")  # fmt: skip
            return
        try:
            draw_boxes3d(
                out,
                self.camera,
                objects,
                self.class_names,
                transform=self._settings.T_camera_from_objects,
                copy=False,
            )
        except PerceptionError as exc:
            self._count("draw_errors", "draw", f"overlay: cannot draw 3D boxes: {exc}")


def _with_objects(frame: OverlayFrame[ImageT], objects: Objects3D) -> OverlayFrame[ImageT]:
    return OverlayFrame(frame.image, frame.stamp_ns, frame.tracks, frame.dashed, objects)
