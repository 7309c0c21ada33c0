"""Single-camera multi-object tracker: ByteTrack-style association on a
time-stepped Kalman filter, with OC-SORT-style observation-centric updates.

One `Tracker` follows the boxes of one camera (one `frame_id`). Each accepted
frame goes through:

1. validation of the frame (frame_id, stamp order) and of every row (finite,
   positive size) -- nothing in the track state changes before this passes;
2. prediction of every track to the frame's stamp (dt from stamps, seconds);
3. association, each stage an optimal assignment on an IoU cost matrix:
   confirmed and lost tracks with high-score detections; still-unmatched
   confirmed tracks with low-score detections (ByteTrack); leftover tracks by
   their last observed box (OC-SORT recovery); tentative tracks with the
   remaining high-score detections; with `match_distance`, what is left of
   both by centre distance (image motion larger than the boxes). Tracks never
   match another class unless `class_consistent` is off;
4. Kalman update of matched tracks; a track found again after a gap is
   re-filtered along a straight virtual path from its last observation (OC-SORT
   re-update), which removes the velocity drift accumulated while unseen;
5. state changes: tentative -> confirmed after `min_hits`, confirmed -> lost
   when unmatched, unmatched tentative -> removed, any track unseen for more
   than `max_lost_s` seconds -> removed (checked first, before association, so
   a stream that pauses cannot revive stale tracks); new tracks from
   unmatched high-score detections.

Track state is kept as arrays over tracks, so the cost per frame is a fixed
number of numpy calls, whatever the number of boxes.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np

from perception.core.tracking.cmc import affine_scale, warp_boxes_cxcywh
from perception.core.tracking.config import TrackerConfig
from perception.core.tracking.kalman import (
    KalmanState,
    kf_init,
    kf_predict,
    kf_update,
)
from perception.core.tracking.matching import iou_matrix, linear_assignment
from perception.core.tracking.stamps import WarningThrottle, check_frame, count_reset
from perception.core.types import Detections, InstanceMasks

__all__ = ["TrackInfo", "TrackSnapshot", "TrackState", "Tracker", "TrackerStats"]

_LOG = logging.getLogger(__name__)
_NS = 1_000_000_000
_MAX_VIRTUAL_STEPS = 8  # coarser steps over long gaps: Q scales with dt
_HIST = 6  # observed centres kept per track for the direction term
_NO_STAMP = np.iinfo(np.int64).min // 2  # history slot not filled yet


class TrackState(IntEnum):
    """Life cycle of a track."""

    TENTATIVE = 0
    CONFIRMED = 1
    LOST = 2
    REMOVED = 3


# Plain ints for the hot path (enum attribute lookups cost more than the maths).
_TENTATIVE = int(TrackState.TENTATIVE)
_CONFIRMED = int(TrackState.CONFIRMED)
_LOST = int(TrackState.LOST)


@dataclass(frozen=True)
class TrackInfo:
    """Snapshot of one live track (for inspection, logging and tests)."""

    track_id: int
    state: TrackState
    xyxy: tuple[float, float, float, float]
    class_id: int
    score: float
    hits: int
    age_s: float
    time_since_update_s: float


@dataclass(frozen=True)
class TrackSnapshot:
    """Copy of the filter state of every live track at `stamp_ns` (read-only
    view for prediction; changing it does not affect the tracker).

    Arrays have one row per track: `kalman` holds (cx, cy, w, h) means and their
    rates (px, px/s) with the per-coordinate covariances (see kalman.py).
    """

    stamp_ns: int | None
    frame_id: str | None
    track_ids: np.ndarray
    states: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    seen_ns: np.ndarray
    kalman: KalmanState

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])


@dataclass
class TrackerStats:
    """Counters of what the tracker accepted, rejected and did."""

    frames: int = 0
    frames_rejected_duplicate: int = 0
    frames_rejected_out_of_order: int = 0
    frames_rejected_frame_id: int = 0
    resets: int = 0
    rows: int = 0
    rows_rejected_nonfinite: int = 0
    rows_rejected_size: int = 0
    tracks_created: int = 0
    tracks_removed: int = 0

    @property
    def frames_rejected(self) -> int:
        return (
            self.frames_rejected_duplicate
            + self.frames_rejected_out_of_order
            + self.frames_rejected_frame_id
        )

    @property
    def rows_rejected(self) -> int:
        return self.rows_rejected_nonfinite + self.rows_rejected_size

    def as_dict(self) -> dict[str, int]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["frames_rejected"] = self.frames_rejected
        out["rows_rejected"] = self.rows_rejected
        return out


def _require_solver(solver: str) -> None:
    """Fail at construction, not at the first ambiguous frame, when the
    configured assignment solver is not installed."""
    module = {"lap": "lap", "scipy": "scipy.optimize"}[solver]
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise ModuleNotFoundError(
            f"tracker solver {solver!r} needs the {module.split('.')[0]!r} package, which is "
            "not installed; install it or set solver to the other one ('lap' or 'scipy')"
        )


def _xyxy_to_cxcywh(b: np.ndarray) -> np.ndarray:
    wh = b[:, 2:] - b[:, :2]
    return np.concatenate((b[:, :2] + 0.5 * wh, wh), axis=1)


def _cxcywh_to_xyxy(z: np.ndarray) -> np.ndarray:
    half = 0.5 * z[:, 2:]
    return np.concatenate((z[:, :2] - half, z[:, :2] + half), axis=1)


def _extras(
    det: Detections, src: np.ndarray, coast_xyxy: np.ndarray
) -> tuple[InstanceMasks | None, np.ndarray | None, np.ndarray | None]:
    """Masks, keypoints and oriented boxes of the output rows: those of the
    matched detection rows `src` (as observed, also with `output_filtered`),
    then, for the coasting rows (boxes `coast_xyxy`, nothing observed), an
    empty mask, keypoints at NaN with confidence 0 and the predicted box as an
    oriented box at angle 0."""
    n_coast = int(coast_xyxy.shape[0])
    masks = keypoints = obb = None
    if det.masks is not None:
        masks = det.masks[src]
        if n_coast:
            size = det.masks.image_size
            empty = InstanceMasks(
                np.zeros((n_coast, 4), np.int32),
                tuple(np.zeros((0, 0), bool) for _ in range(n_coast)),
                size,
            )
            masks = InstanceMasks.concatenate([masks, empty])
    if det.keypoints is not None:
        keypoints = det.keypoints[src]
        if n_coast:
            lost = np.zeros((n_coast, *det.keypoints.shape[1:]), np.float32)
            lost[..., :2] = np.nan
            keypoints = np.concatenate((keypoints, lost))
    if det.obb is not None:
        obb = det.obb[src]
        if n_coast:
            b = coast_xyxy.astype(np.float32)
            wh = b[:, 2:] - b[:, :2]
            rows = np.concatenate(
                (b[:, :2] + 0.5 * wh, wh, np.zeros((n_coast, 1), np.float32)), axis=1
            )
            obb = np.concatenate((obb, rows))
    return masks, keypoints, obb


def _check_affine(camera_motion: np.ndarray) -> np.ndarray:
    a = np.asarray(camera_motion, np.float64)
    if a.shape != (2, 3) or not np.isfinite(a).all():
        raise ValueError(f"camera_motion: expected a finite 2x3 affine, got shape {a.shape}")
    return a


def _box(row: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(c) for c in row)
    return x1, y1, x2, y2


class Tracker:
    """Tracks the boxes of one camera; `update()` once per image, in stamp order.

    Track ids start at 1, are never reused and survive `reset()`, so an id is
    unique for the tracker's lifetime. Rejected frames (duplicate or
    out-of-order stamp, other frame_id) leave the tracks untouched and return
    no boxes; see `stats`.
    """

    _last_stamp: int | None  # newest accepted stamp (ns); set by _clear()
    _nominal_dt: float | None  # smoothed frame interval (s)

    def __init__(self, config: TrackerConfig | None = None, frame_id: str | None = None) -> None:
        if config is not None and not isinstance(config, TrackerConfig):
            raise TypeError(f"config: expected TrackerConfig, got {type(config).__name__}")
        self._cfg = config if config is not None else TrackerConfig()
        _require_solver(self._cfg.solver)
        self._frame_id = frame_id
        self._next_id = 1
        self.stats = TrackerStats()
        self._warn = WarningThrottle(_LOG)  # per tracker: one camera cannot mute another
        self._clear()

    # ------------------------------------------------------------ public API
    @property
    def config(self) -> TrackerConfig:
        return self._cfg

    def set_config(self, config: TrackerConfig) -> None:
        """Swap parameters at run time (tracks are kept)."""
        if not isinstance(config, TrackerConfig):
            raise TypeError(f"config: expected TrackerConfig, got {type(config).__name__}")
        _require_solver(config.solver)
        self._cfg = config

    @property
    def frame_id(self) -> str | None:
        """Camera frame this tracker follows (set by the first accepted frame)."""
        return self._frame_id

    @property
    def last_stamp_ns(self) -> int | None:
        return self._last_stamp

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def reset(self) -> None:
        """Drop every track (ids keep counting up, so none is ever reused)."""
        self.stats.tracks_removed += len(self)
        self._clear()

    def tracks(self) -> list[TrackInfo]:
        """Live tracks (tentative, confirmed and lost) at the last accepted stamp."""
        now = self._last_stamp if self._last_stamp is not None else 0
        boxes = self._kf.xyxy()
        return [
            TrackInfo(
                track_id=int(self._ids[i]),
                state=TrackState(int(self._state[i])),
                xyxy=_box(boxes[i]),
                class_id=int(self._cls[i]),
                score=float(self._score[i]),
                hits=int(self._hits[i]),
                age_s=(now - int(self._start_ns[i])) / _NS,
                time_since_update_s=(now - int(self._seen_ns[i])) / _NS,
            )
            for i in range(len(self))
        ]

    def snapshot(self) -> TrackSnapshot:
        """Copies of the live tracks' Kalman means and covariances at the last
        accepted stamp, so callers can predict without touching the tracker."""
        kf = self._kf
        return TrackSnapshot(
            stamp_ns=self._last_stamp,
            frame_id=self._frame_id,
            track_ids=self._ids.copy(),
            states=self._state.copy(),
            class_ids=self._cls.copy(),
            scores=self._score.copy(),
            seen_ns=self._seen_ns.copy(),
            kalman=KalmanState(
                kf.x.copy(), kf.v.copy(), kf.pxx.copy(), kf.pxv.copy(), kf.pvv.copy()
            ),
        )

    def update(self, det: Detections, camera_motion: np.ndarray | None = None) -> Detections:
        """Track one frame. Returns the confirmed tracks seen in it (their
        detections, in input order, bad rows dropped; filtered boxes when
        `output_filtered`), then lost tracks within `output_lost_s` at their
        predicted boxes; `track_ids` set. A rejected frame returns no boxes.
        Masks, keypoints and oriented boxes (segmentation, pose, obb models)
        are those of each row's matched detection (see `_extras` for lost
        tracks), so mask-based 3D and drawing work on tracks too.

        `camera_motion` (optional, 2x3 affine) maps pixels of the previous
        accepted frame of this camera onto this one (see cmc.py); the tracks
        are moved by it before prediction, so a moving camera does not read
        as object motion. A non-finite or malformed affine is an error (raised
        before any state change)."""
        if not isinstance(det, Detections):
            raise TypeError(f"det: expected Detections, got {type(det).__name__}")
        affine = None if camera_motion is None else _check_affine(camera_motion)
        cfg = self._cfg
        stats = self.stats
        stamp = det.stamp_ns

        # ---- 1. validation: no state change above the "accepted" line.
        last = self._last_stamp
        reset = check_frame(
            self._warn, "tracker", stats, self._frame_id, det.frame_id, stamp, last,
            cfg.reorder_tolerance_s,
        )  # fmt: skip
        if reset is None:
            return self._empty_like(det)
        n_in = len(det)
        xyxy_in = det.xyxy
        if n_in:
            finite = np.isfinite(xyxy_in).all(axis=1) & np.isfinite(det.scores)
            sized = (xyxy_in[:, 2] > xyxy_in[:, 0]) & (xyxy_in[:, 3] > xyxy_in[:, 1])
            valid = finite & sized
            n_valid = int(np.count_nonzero(valid))
        else:
            finite = sized = valid = np.zeros(0, dtype=bool)
            n_valid = 0

        # ---- accepted: from here on the state changes.
        if reset:
            count_reset(self._warn, "tracker", stats, det.frame_id, stamp, last, len(self))
            self.reset()
            last = None
        if self._frame_id is None:
            self._frame_id = det.frame_id
        stats.frames += 1
        stats.rows += n_in
        if n_valid < n_in:
            bad_finite = int(np.count_nonzero(~finite))
            stats.rows_rejected_nonfinite += bad_finite
            stats.rows_rejected_size += int(np.count_nonzero(finite & ~sized))
            _LOG.debug("tracker[%s]: dropped %d invalid rows", det.frame_id, n_in - n_valid)
        first_frame = last is None
        dt = 0.0 if last is None else (stamp - last) / _NS
        if not first_frame:
            self._nominal_dt = dt if self._nominal_dt is None else 0.9 * self._nominal_dt + 0.1 * dt
        self._last_stamp = stamp

        # ---- 2. drop tracks unseen for too long (before they can match), move
        # the others by the camera's motion, then predict them to this stamp.
        if len(self):
            expired = stamp - self._seen_ns > int(cfg.max_lost_s * _NS)
            if expired.any():
                self._compact(~expired)
        if affine is not None and len(self) and not reset:
            self._warp(affine)
        n_tracks = len(self)
        kf = self._kf
        if n_tracks and dt > 0.0:
            lost = self._state == _LOST
            if lost.any():
                kf.v[lost, 2:] = 0.0  # an unseen box keeps its size
            kf_predict(kf, dt, cfg.pos_noise, cfg.vel_noise)

        if n_valid == n_in:
            rows = np.arange(n_in)
            boxes = xyxy_in.astype(np.float64)
            scores = det.scores
            classes = det.class_ids
        else:
            rows = np.flatnonzero(valid)
            boxes = xyxy_in[rows].astype(np.float64)
            scores = det.scores[rows]
            classes = det.class_ids[rows]
        high = scores >= cfg.high_score
        used = np.zeros(n_valid, bool)
        track_det = np.full(n_tracks, -1, np.intp)

        # ---- 3. association stages.
        if n_tracks and n_valid:
            state = self._state
            pred = kf.xyxy()
            pool = np.flatnonzero(state != _TENTATIVE)
            hi = np.flatnonzero(high)
            self._associate(
                pool,
                hi,
                pred,
                boxes,
                scores,
                classes,
                cfg.match_iou,
                cfg.fuse_score,
                track_det,
                used,
                direction=cfg.direction_weight > 0.0,
            )
            low = np.flatnonzero(~high & (scores >= cfg.low_score))
            if low.size:
                left = pool[(track_det[pool] < 0) & (state[pool] == _CONFIRMED)]
                self._associate(
                    left,
                    low,
                    pred,
                    boxes,
                    scores,
                    classes,
                    cfg.match_iou_low,
                    False,
                    track_det,
                    used,
                )
            if cfg.recovery:
                left = pool[track_det[pool] < 0]
                hi_left = hi[~used[hi]]
                if left.size and hi_left.size:
                    last_obs = _cxcywh_to_xyxy(self._obs)
                    self._associate(
                        left,
                        hi_left,
                        last_obs,
                        boxes,
                        scores,
                        classes,
                        cfg.recovery_iou,
                        False,
                        track_det,
                        used,
                        max_scale=cfg.recovery_max_scale,
                    )
            tent = np.flatnonzero(state == _TENTATIVE)
            if tent.size:
                hi_left = hi[~used[hi]]
                self._associate(
                    tent,
                    hi_left,
                    pred,
                    boxes,
                    scores,
                    classes,
                    cfg.match_iou_tentative,
                    cfg.fuse_score,
                    track_det,
                    used,
                )
            if cfg.match_distance > 0.0:
                left = np.flatnonzero(track_det < 0)
                hi_left = hi[~used[hi]]
                self._associate_distance(left, hi_left, pred, boxes, classes, track_det, used)

        # ---- 4. Kalman update of matched tracks.
        if n_tracks:
            state = self._state
            matched = np.flatnonzero(track_det >= 0)
            if matched.size:
                z = _xyxy_to_cxcywh(boxes[track_det[matched]])
                refound = state[matched] == _LOST
                if cfg.observation_centric and refound.any():
                    self._reupdate(matched[refound], z[refound], stamp)
                    normal, zn = matched[~refound], z[~refound]
                else:
                    normal, zn = matched, z
                if normal.size:
                    sub = kf.take(normal)
                    kf_update(sub, zn, cfg.meas_noise)
                    kf.put(normal, sub)
                self._saved.put(matched, kf.take(matched))
                md = track_det[matched]
                self._hits[matched] += 1
                self._seen_ns[matched] = stamp
                self._obs[matched] = z
                self._hist[matched, 1:] = self._hist[matched, :-1]
                self._hist_ns[matched, 1:] = self._hist_ns[matched, :-1]
                self._hist[matched, 0] = z[:, :2]
                self._hist_ns[matched, 0] = stamp
                self._score[matched] = scores[md]
                if not cfg.class_consistent:
                    self._cls[matched] = classes[md]
                self._row[matched] = md
                promote = (state[matched] != _TENTATIVE) | (self._hits[matched] >= cfg.min_hits)
                state[matched[promote]] = _CONFIRMED
            unmatched = track_det < 0
            state[unmatched & (state == _CONFIRMED)] = _LOST
            remove = unmatched & (state == _TENTATIVE)
            if remove.any():
                self._compact(~remove)

        # ---- 5. new tracks from unmatched high-score detections.
        if n_valid:
            new = np.flatnonzero(~used & (scores >= cfg.new_track_score) & high)
            if new.size:
                self._spawn(new, boxes, scores, classes, stamp, first_frame)

        return self._output(det, rows, stamp)

    # ------------------------------------------------------------ internals
    def _clear(self) -> None:
        self._kf = KalmanState.empty()
        self._saved = KalmanState.empty()
        self._ids = np.zeros(0, np.int64)
        self._state = np.zeros(0, np.int8)
        self._cls = np.zeros(0, np.int32)
        self._score = np.zeros(0, np.float32)
        self._hits = np.zeros(0, np.int32)
        self._start_ns = np.zeros(0, np.int64)
        self._seen_ns = np.zeros(0, np.int64)
        self._obs = np.zeros((0, 4), np.float64)
        # short history of observed centres for the direction term (OC-SORT OCM)
        self._hist = np.zeros((0, _HIST, 2), np.float64)
        self._hist_ns = np.zeros((0, _HIST), np.int64)
        self._row = np.zeros(0, np.intp)
        self._last_stamp = None
        self._nominal_dt = None

    @staticmethod
    def _empty_like(det: Detections) -> Detections:
        return Detections.empty(
            stamp_ns=det.stamp_ns, frame_id=det.frame_id, image_size=det.image_size
        )

    def _associate(
        self,
        tracks: np.ndarray,
        dets: np.ndarray,
        track_boxes: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        min_iou: float,
        fuse: bool,
        track_det: np.ndarray,
        used: np.ndarray,
        max_scale: float | None = None,
        direction: bool = False,
    ) -> None:
        """One assignment stage between track rows and detection rows; records
        matches in `track_det` / `used`. With `max_scale`, pairs whose box
        heights differ by more than that factor are not matched. With
        `direction`, the cost also rewards detections that continue the
        direction the track's observations moved in (OC-SORT's momentum term,
        over `direction_delta_s` of observations); the IoU gate is unchanged."""
        if tracks.size == 0 or dets.size == 0:
            return
        tb = track_boxes[tracks]
        db = boxes[dets]
        sim = iou_matrix(tb, db)
        if fuse:
            sim *= scores[dets]
        sim[self._forbidden(tracks, tb, db, classes[dets], max_scale)] = -1.0
        limit = 1.0 - min_iou
        if direction:
            weight = self._cfg.direction_weight
            bonus = self._direction_bonus(tracks, db, scores[dets])
            cost = np.where(sim >= min_iou, 1.0 - sim - weight * bonus, np.inf)
            limit += 0.5 * weight
        else:
            cost = 1.0 - sim
        r, c = linear_assignment(cost, limit, self._cfg.solver)
        self._record(tracks, dets, r, c, track_det, used)

    def _forbidden(
        self,
        tracks: np.ndarray,
        tb: np.ndarray,
        db: np.ndarray,
        det_classes: np.ndarray,
        max_scale: float | None,
    ) -> np.ndarray:
        """(tracks, dets) pairs no stage may match: box heights differing by
        more than `max_scale` (when given), another class (`class_consistent`)."""
        bad = np.zeros((tb.shape[0], db.shape[0]), bool)
        if max_scale is not None:
            ratio = (tb[:, 3:4] - tb[:, 1:2]) / (db[:, 3] - db[:, 1])[None, :]
            bad |= (ratio > max_scale) | (ratio * max_scale < 1.0)
        if self._cfg.class_consistent:
            bad |= self._cls[tracks][:, None] != det_classes[None, :]
        return bad

    @staticmethod
    def _record(
        tracks: np.ndarray,
        dets: np.ndarray,
        r: np.ndarray,
        c: np.ndarray,
        track_det: np.ndarray,
        used: np.ndarray,
    ) -> None:
        """Write an assignment's pairs (rows r of `tracks`, columns c of `dets`)."""
        if r.size:
            track_det[tracks[r]] = dets[c]
            used[dets[c]] = True

    def _associate_distance(
        self,
        tracks: np.ndarray,
        dets: np.ndarray,
        track_boxes: np.ndarray,
        boxes: np.ndarray,
        classes: np.ndarray,
        track_det: np.ndarray,
        used: np.ndarray,
    ) -> None:
        """The `match_distance` stage: leftover tracks and detections by the
        distance between predicted and detected centres over the predicted
        box's larger side, gated by `match_distance`, the height ratio
        (`recovery_max_scale`) and the class."""
        if tracks.size == 0 or dets.size == 0:
            return
        cfg = self._cfg
        tb = track_boxes[tracks]
        db = boxes[dets]
        tc = 0.5 * (tb[:, :2] + tb[:, 2:])
        dc = 0.5 * (db[:, :2] + db[:, 2:])
        side = np.maximum(np.maximum(tb[:, 2] - tb[:, 0], tb[:, 3] - tb[:, 1]), 1.0)
        cost = np.hypot(tc[:, None, 0] - dc[None, :, 0], tc[:, None, 1] - dc[None, :, 1])
        cost /= side[:, None]
        bad = self._forbidden(tracks, tb, db, classes[dets], cfg.recovery_max_scale)
        cost[bad] = cfg.match_distance + 1.0
        r, c = linear_assignment(cost, cfg.match_distance, cfg.solver)
        self._record(tracks, dets, r, c, track_det, used)

    def _direction_bonus(
        self, tracks: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray
    ) -> np.ndarray:
        """(T, D) in [-0.5, 0.5]: how well the direction from each track's
        anchor observation (the newest one at least `direction_delta_s` before
        its last) to each detection agrees with the direction from the anchor
        to the last observation, scaled by the detection score; 0 for tracks
        without an anchor or that did not move."""
        hist = self._hist[tracks]
        hist_ns = self._hist_ns[tracks]
        age = hist_ns[:, :1] - hist_ns
        ok = (age >= int(self._cfg.direction_delta_s * _NS)) & (hist_ns != _NO_STAMP)
        have = ok.any(axis=1)
        # newest slot old enough, else the oldest filled one (a young track)
        filled = hist_ns != _NO_STAMP
        oldest = filled.sum(axis=1) - 1
        pick = np.where(have, ok.argmax(axis=1), oldest)
        rows = np.arange(tracks.size)
        anchor = hist[rows, pick]
        valid = pick > 0
        v = hist[:, 0] - anchor
        norm = np.hypot(v[:, 0], v[:, 1])
        valid &= norm > 1e-6
        v /= np.maximum(norm, 1e-6)[:, None]
        dc = 0.5 * (det_boxes[:, :2] + det_boxes[:, 2:])  # (D, 2)
        u = dc[None, :, :] - anchor[:, None, :]
        un = np.hypot(u[..., 0], u[..., 1])
        cos = (u[..., 0] * v[:, None, 0] + u[..., 1] * v[:, None, 1]) / np.maximum(un, 1e-6)
        angle = np.arccos(np.clip(cos, -1.0, 1.0))
        bonus: np.ndarray = (0.5 * np.pi - angle) / np.pi * det_scores[None, :]
        bonus[~valid] = 0.0
        return bonus

    def _warp(self, affine: np.ndarray) -> None:
        """Move every track (filter state, state at the last observation and
        the last observation itself) by a camera motion: centres through the
        affine, velocities through its linear part, sizes and covariances by
        its scale (the covariance stays per axis: the rotation between two
        frames is small)."""
        lin = affine[:, :2]
        s = affine_scale(affine)
        for st in (self._kf, self._saved):
            st.x[:, :2] = st.x[:, :2] @ lin.T + affine[:, 2]
            st.x[:, 2:] *= s
            st.v[:, :2] = st.v[:, :2] @ lin.T
            st.v[:, 2:] *= s
            s2 = s * s
            st.pxx *= s2
            st.pxv *= s2
            st.pvv *= s2
        self._obs = warp_boxes_cxcywh(self._obs, affine)
        self._hist = self._hist @ lin.T + affine[:, 2]

    def _reupdate(self, idx: np.ndarray, z: np.ndarray, stamp: int) -> None:
        """OC-SORT observation-centric re-update: restart each re-found track
        from its state at the last observation and filter it along a straight
        virtual path of observations to the new one, at the nominal frame
        interval. This replaces the drifted prediction made while unseen.
        All re-found tracks are stepped together (shorter gaps stop early)."""
        cfg = self._cfg
        gap = (stamp - self._seen_ns[idx]).astype(np.float64) / _NS
        nominal = self._nominal_dt
        if nominal is not None and nominal > 0.0:
            steps = np.clip(np.rint(gap / nominal), 1, _MAX_VIRTUAL_STEPS).astype(np.int64)
        else:
            steps = np.ones(idx.size, np.int64)
        st = self._saved.take(idx)  # a copy: the saved state stays as it was
        z0 = self._obs[idx]
        dz = z - z0
        step_dt = (gap / steps)[:, None]
        inv = 1.0 / steps
        for s in range(1, int(steps.max()) + 1):
            active = (s <= steps)[:, None]
            frac = (np.minimum(s, steps) * inv)[:, None]
            kf_predict(st, np.where(active, step_dt, 0.0), cfg.pos_noise, cfg.vel_noise)
            kf_update(st, z0 + dz * frac, cfg.meas_noise, active)
        self._kf.put(idx, st)

    def _output(self, det: Detections, rows: np.ndarray, stamp: int) -> Detections:
        """Confirmed tracks observed at `stamp` (in input row order), then lost
        tracks still within `output_lost_s` at their predicted boxes."""
        cfg = self._cfg
        state = self._state
        seen = (state == _CONFIRMED) & (self._seen_ns == stamp)
        sel = np.flatnonzero(seen)
        src = rows[self._row[sel]]
        order = np.argsort(src, kind="stable")
        sel, src = sel[order], src[order]
        if cfg.output_filtered:
            xyxy = self._kf.take(sel).xyxy().astype(np.float32)
        else:
            xyxy = det.xyxy[src]
        scores = det.scores[src]
        classes = det.class_ids[src]
        if cfg.output_lost_s > 0.0:
            coast = np.flatnonzero(
                (state == _LOST) & (stamp - self._seen_ns <= int(cfg.output_lost_s * _NS))
            )
            width, height = det.image_size
            if coast.size and width > 0 and height > 0:
                # A box reaching the image border is most likely leaving it.
                b = self._kf.take(coast).xyxy()
                inside = (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= width) & (b[:, 3] <= height)
                coast = coast[inside]
            if coast.size:
                sel = np.concatenate((sel, coast))
                xyxy = np.concatenate((xyxy, self._kf.take(coast).xyxy().astype(np.float32)))
                scores = np.concatenate((scores, self._score[coast]))
                classes = np.concatenate((classes, self._cls[coast]))
        if sel.size == 0:
            return self._empty_like(det)
        masks, keypoints, obb = _extras(det, src, xyxy[src.size :])
        return Detections(
            xyxy=xyxy,
            scores=scores,
            class_ids=classes,
            track_ids=self._ids[sel],
            stamp_ns=stamp,
            frame_id=det.frame_id,
            image_size=det.image_size,
            masks=masks,
            keypoints=keypoints,
            obb=obb,
        )

    def _compact(self, keep: np.ndarray) -> None:
        self.stats.tracks_removed += int(keep.size - np.count_nonzero(keep))
        self._kf = self._kf.take(keep)
        self._saved = self._saved.take(keep)
        self._ids = self._ids[keep]
        self._state = self._state[keep]
        self._cls = self._cls[keep]
        self._score = self._score[keep]
        self._hits = self._hits[keep]
        self._start_ns = self._start_ns[keep]
        self._seen_ns = self._seen_ns[keep]
        self._obs = self._obs[keep]
        self._hist = self._hist[keep]
        self._hist_ns = self._hist_ns[keep]
        self._row = self._row[keep]

    def _spawn(
        self,
        new: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        stamp: int,
        first_frame: bool,
    ) -> None:
        """Start tracks at detections `new` (confirmed at once on the first
        frame or when `min_hits` is 1)."""
        cfg = self._cfg
        k = int(new.size)
        z = _xyxy_to_cxcywh(boxes[new])
        ids = np.arange(self._next_id, self._next_id + k, dtype=np.int64)
        self._next_id += k
        self.stats.tracks_created += k
        confirmed = (first_frame and cfg.confirm_first_frame) or cfg.min_hits <= 1
        st = kf_init(z, cfg.init_pos_noise, cfg.init_vel_noise)
        self._kf = self._kf.append(st)
        self._saved = self._saved.append(kf_init(z, cfg.init_pos_noise, cfg.init_vel_noise))
        self._ids = np.concatenate((self._ids, ids))
        state = _CONFIRMED if confirmed else _TENTATIVE
        self._state = np.concatenate((self._state, np.full(k, state, np.int8)))
        self._cls = np.concatenate((self._cls, classes[new]))
        self._score = np.concatenate((self._score, scores[new]))
        self._hits = np.concatenate((self._hits, np.ones(k, np.int32)))
        self._start_ns = np.concatenate((self._start_ns, np.full(k, stamp, np.int64)))
        self._seen_ns = np.concatenate((self._seen_ns, np.full(k, stamp, np.int64)))
        self._obs = np.concatenate((self._obs, z))
        hist = np.zeros((k, _HIST, 2), np.float64)
        hist[:, 0] = z[:, :2]
        hist_ns = np.full((k, _HIST), _NO_STAMP, np.int64)
        hist_ns[:, 0] = stamp
        self._hist = np.concatenate((self._hist, hist))
        self._hist_ns = np.concatenate((self._hist_ns, hist_ns))
        self._row = np.concatenate((self._row, new.astype(np.intp)))
