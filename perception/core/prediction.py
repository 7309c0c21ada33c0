"""Tracks predicted to a requested time (latency compensation for AR and planning).

A track published with the stamp of the image it came from describes where an
object *was*; by the time an overlay is shown or a planner reads it, the
object has moved on by velocity x pipeline delay. These functions move 2D
tracks to a requested time with the tracker's own constant-velocity model and
report how far they were extrapolated (the horizon) and how much the position
uncertainty grew on the way.

Two sources of motion state:

- `predict_tracker` / `predict_snapshot`: the Kalman means and covariances of
  a live `Tracker` (exact, in the process that tracks);
- `TrackMotionEstimator`: the same filter re-run on tracked boxes as they
  arrive (e.g. a Detection2DArray over ROS, which carries no velocity).

Horizons are capped (`max_horizon_s`): a constant-velocity guess half a second
ahead is already poor for pedestrians, so beyond the cap the request is
refused with `HorizonExceededError` rather than answered badly. A target time
before the state's stamp (negative horizon: the display is older than the
tracks) is handled by an explicit policy: "refuse", "hold" (the boxes as they
are, horizon 0) or "extrapolate" (moved backwards along the velocity, within
the same cap). Pure numpy; no ROS.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from perception.core.errors import PerceptionError
from perception.core.fusion.types import Objects3D
from perception.core.tracking.kalman import KalmanState, kf_init, kf_predict, kf_update
from perception.core.tracking.tracker import Tracker, TrackSnapshot, TrackState
from perception.core.types import UNTRACKED, Detections

__all__ = [
    "DEFAULT_MAX_HORIZON_S",
    "HorizonExceededError",
    "NegativeHorizonError",
    "PastPolicy",
    "Prediction",
    "PredictionError",
    "TrackMotionEstimator",
    "predict_objects3d",
    "predict_snapshot",
    "predict_tracker",
    "resolve_horizon",
]

_LOG = logging.getLogger(__name__)
_NS = 1_000_000_000

DEFAULT_MAX_HORIZON_S = 0.5
"""Default cap on |target - state stamp|: beyond it a prediction is refused."""

PastPolicy = Literal["refuse", "hold", "extrapolate"]
_PAST_POLICIES = ("refuse", "hold", "extrapolate")


class PredictionError(PerceptionError, ValueError):
    """A prediction request cannot be answered (see the subclasses)."""


class HorizonExceededError(PredictionError):
    """|target time - state time| is larger than the configured cap."""

    def __init__(self, horizon_s: float, max_horizon_s: float) -> None:
        super().__init__(
            f"prediction horizon {horizon_s:+.3f} s: expected |horizon| <= {max_horizon_s:.3f} s "
            "(max_horizon_s); refusing to extrapolate that far"
        )
        self.horizon_s = horizon_s
        self.max_horizon_s = max_horizon_s


class NegativeHorizonError(PredictionError):
    """The target time is before the state's stamp and the policy is "refuse"."""

    def __init__(self, horizon_s: float) -> None:
        super().__init__(
            f"prediction horizon {horizon_s:+.3f} s: expected a target time at or after the "
            "tracks' stamp (past='refuse')"
        )
        self.horizon_s = horizon_s


@dataclass(frozen=True)
class Prediction:
    """Tracks moved to `detections.stamp_ns` (the requested time).

    Attributes:
        detections: boxes at the target time; `stamp_ns` is the target time,
            track ids, classes and scores as in the source.
        source_stamp_ns: stamp of the state the prediction started from.
        horizon_s: requested target - source, seconds (negative: the past).
        applied_s: the time step actually applied (0 when held by policy).
        velocity: (N, 2) float32 centre velocity in px/s (0 where unknown).
        position_std: (N, 2) float32 std of the centre (x, y) in px at the
            target time (NaN where the track has no filter state).
        source_position_std: (N, 2) float32 the same at the source time, so
            `position_std / source_position_std` is the covariance growth.
    """

    detections: Detections
    source_stamp_ns: int
    horizon_s: float
    applied_s: float
    velocity: np.ndarray
    position_std: np.ndarray
    source_position_std: np.ndarray

    def __len__(self) -> int:
        return len(self.detections)


def resolve_horizon(
    source_ns: int, target_ns: int, max_horizon_s: float, past: PastPolicy
) -> tuple[float, float]:
    """(requested horizon, step to apply) in seconds, or a typed refusal.

    The cap applies to both directions; "hold" in the past applies 0 s.
    """
    if past not in _PAST_POLICIES:
        raise ValueError(f"past: expected one of {list(_PAST_POLICIES)}, got {past!r}")
    if not (isinstance(max_horizon_s, (int, float)) and math.isfinite(max_horizon_s)):
        raise ValueError(f"max_horizon_s: expected a finite number, got {max_horizon_s!r}")
    if max_horizon_s < 0.0:
        raise ValueError(f"max_horizon_s: expected >= 0, got {max_horizon_s}")
    horizon = (int(target_ns) - int(source_ns)) / _NS
    if horizon < 0.0:
        if past == "refuse":
            raise NegativeHorizonError(horizon)
        if past == "hold":
            return horizon, 0.0
    if abs(horizon) > max_horizon_s:
        raise HorizonExceededError(horizon, float(max_horizon_s))
    return horizon, horizon


def _cxcywh(xyxy: np.ndarray) -> np.ndarray:
    b = np.asarray(xyxy, np.float64)
    wh = b[:, 2:] - b[:, :2]
    return np.concatenate((b[:, :2] + 0.5 * wh, wh), axis=1)


def _xyxy(z: np.ndarray) -> np.ndarray:
    half = 0.5 * z[:, 2:]
    return np.concatenate((z[:, :2] - half, z[:, :2] + half), axis=1)


def _propagate(st: KalmanState, dt: float | np.ndarray, pos_noise: float, vel_noise: float) -> None:
    """Forward step; a backward (or zero) step moves the means only: the
    covariance of a retrodiction is not the forward formula, so it is kept."""
    if np.all(np.asarray(dt) > 0.0):
        kf_predict(st, dt, pos_noise, vel_noise)
        return
    st.x += st.v * dt
    np.maximum(st.x[:, 2:], 1e-3, out=st.x[:, 2:])


def predict_snapshot(
    snapshot: TrackSnapshot,
    target_ns: int,
    *,
    pos_noise: float,
    vel_noise: float,
    max_horizon_s: float = DEFAULT_MAX_HORIZON_S,
    past: PastPolicy = "refuse",
    include_lost: bool = False,
    image_size: tuple[int, int] = (0, 0),
) -> Prediction:
    """Confirmed (and, with `include_lost`, lost) tracks of `snapshot` moved to
    `target_ns` with the constant-velocity Kalman model (noise per second as in
    `TrackerConfig`). Raises `HorizonExceededError` / `NegativeHorizonError`."""
    if not isinstance(snapshot, TrackSnapshot):
        raise TypeError(f"snapshot: expected TrackSnapshot, got {type(snapshot).__name__}")
    frame_id = snapshot.frame_id or ""
    if snapshot.stamp_ns is None:  # nothing tracked yet: nothing to move
        empty = Detections.empty(stamp_ns=int(target_ns), frame_id=frame_id, image_size=image_size)
        z = np.zeros((0, 2), np.float32)
        return Prediction(empty, int(target_ns), 0.0, 0.0, z, z.copy(), z.copy())
    horizon, step = resolve_horizon(snapshot.stamp_ns, target_ns, max_horizon_s, past)
    keep = snapshot.states == int(TrackState.CONFIRMED)
    if include_lost:
        keep |= snapshot.states == int(TrackState.LOST)
    st = snapshot.kalman.take(keep)
    if include_lost:
        st.v[snapshot.states[keep] == int(TrackState.LOST), 2:] = 0.0  # as the tracker does
    std0 = np.sqrt(st.pxx[:, :2]).astype(np.float32)
    if step != 0.0:
        _propagate(st, step, pos_noise, vel_noise)
    det = Detections.from_arrays(
        st.xyxy(),
        snapshot.scores[keep],
        snapshot.class_ids[keep],
        snapshot.track_ids[keep],
        stamp_ns=int(target_ns),
        frame_id=frame_id,
        image_size=image_size,
    )
    return Prediction(
        detections=det,
        source_stamp_ns=int(snapshot.stamp_ns),
        horizon_s=horizon,
        applied_s=step,
        velocity=st.v[:, :2].astype(np.float32),
        position_std=np.sqrt(st.pxx[:, :2]).astype(np.float32),
        source_position_std=std0,
    )


def predict_tracker(
    tracker: Tracker,
    target_ns: int,
    *,
    max_horizon_s: float = DEFAULT_MAX_HORIZON_S,
    past: PastPolicy = "refuse",
    include_lost: bool = False,
    image_size: tuple[int, int] = (0, 0),
) -> Prediction:
    """The tracker's tracks at `target_ns`, with the tracker's own noise model."""
    if not isinstance(tracker, Tracker):
        raise TypeError(f"tracker: expected Tracker, got {type(tracker).__name__}")
    cfg = tracker.config
    return predict_snapshot(
        tracker.snapshot(),
        target_ns,
        pos_noise=cfg.pos_noise,
        vel_noise=cfg.vel_noise,
        max_horizon_s=max_horizon_s,
        past=past,
        include_lost=include_lost,
        image_size=image_size,
    )


class TrackMotionEstimator:
    """Per-track constant-velocity filter fed with tracked boxes (track ids set).

    For consumers that receive tracks without their velocity (a
    Detection2DArray over ROS): each `update` corrects one small Kalman filter
    per track id with the box of that id (same model and noise units as the
    tracker), and `predict` moves a `Detections` to another time with those
    velocities. Memory is bounded: ids unseen for `max_age_s` are dropped and
    at most `max_tracks` ids are kept (the least recently seen go first).
    """

    def __init__(
        self,
        *,
        meas_noise: float = 0.05,
        pos_noise: float = 0.27,
        vel_noise: float = 0.5,
        init_pos_noise: float = 0.1,
        init_vel_noise: float = 1.0,
        max_age_s: float = 1.0,
        max_tracks: int = 1000,
    ) -> None:
        for name, value in (
            ("meas_noise", meas_noise),
            ("pos_noise", pos_noise),
            ("vel_noise", vel_noise),
            ("init_pos_noise", init_pos_noise),
            ("init_vel_noise", init_vel_noise),
            ("max_age_s", max_age_s),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        if not isinstance(max_tracks, int) or max_tracks < 1:
            raise ValueError(f"max_tracks: expected an int >= 1, got {max_tracks!r}")
        self.meas_noise = float(meas_noise)
        self.pos_noise = float(pos_noise)
        self.vel_noise = float(vel_noise)
        self.init_pos_noise = float(init_pos_noise)
        self.init_vel_noise = float(init_vel_noise)
        self.max_age_s = float(max_age_s)
        self.max_tracks = int(max_tracks)
        self.reset()

    def reset(self) -> None:
        self._ids = np.zeros(0, np.int64)
        self._stamps = np.zeros(0, np.int64)
        self._kf = KalmanState.empty()
        self._row: dict[int, int] = {}
        self._newest: int | None = None

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self._row.get(int(i), -1) for i in ids.tolist()], np.intp)

    def update(self, det: Detections) -> None:
        """Correct the filters of the tracked rows of `det` at `det.stamp_ns`.

        Rows that are untracked, non-finite or empty are ignored; an id whose
        filter is already at or after this stamp is left as it is (a late or
        repeated message must not pull the velocity backwards). A stamp older
        than the newest seen by more than `max_age_s` (a clock reset) clears
        every filter first.
        """
        if not isinstance(det, Detections):
            raise TypeError(f"det: expected Detections, got {type(det).__name__}")
        stamp = det.stamp_ns
        if self._newest is not None and self._newest - stamp > self.max_age_s * _NS:
            _LOG.warning(
                "motion estimator: stamp went back %.3f s: reset", (self._newest - stamp) / _NS
            )
            self.reset()
        ok = det.is_tracked & det.finite_mask()
        ok &= (det.xyxy[:, 2] > det.xyxy[:, 0]) & (det.xyxy[:, 3] > det.xyxy[:, 1])
        ids, first = np.unique(det.track_ids[ok], return_index=True)  # one row per id
        z = _cxcywh(det.xyxy[ok][first])
        rows = self._rows_of(ids)
        known = rows >= 0
        if known.any():
            r = rows[known]
            dt = (stamp - self._stamps[r]).astype(np.float64) / _NS
            fwd = dt > 0.0
            r, dt, zk = r[fwd], dt[fwd], z[known][fwd]
            if r.size:
                sub = self._kf.take(r)
                kf_predict(sub, dt[:, None], self.pos_noise, self.vel_noise)
                kf_update(sub, zk, self.meas_noise)
                self._kf.put(r, sub)
                self._stamps[r] = stamp
        new = ~known
        if new.any():
            self._kf = self._kf.append(kf_init(z[new], self.init_pos_noise, self.init_vel_noise))
            self._ids = np.concatenate((self._ids, ids[new]))
            self._stamps = np.concatenate((self._stamps, np.full(int(new.sum()), stamp, np.int64)))
        self._newest = stamp if self._newest is None else max(self._newest, stamp)
        self._expire(self._newest)

    def _expire(self, newest: int) -> None:
        """Drop tracks older than max_age_s before `newest`, then the oldest
        beyond max_tracks."""
        keep = newest - self._stamps <= int(self.max_age_s * _NS)
        if keep.sum() > self.max_tracks:
            order = np.argsort(-self._stamps, kind="stable")
            keep = np.zeros_like(keep)
            keep[order[: self.max_tracks]] = True
        if not keep.all() or len(self._row) != len(self):
            self._ids = self._ids[keep]
            self._stamps = self._stamps[keep]
            self._kf = self._kf.take(keep)
            self._row = {int(i): k for k, i in enumerate(self._ids.tolist())}

    def velocities(self, track_ids: np.ndarray) -> np.ndarray:
        """(N, 2) float32 centre velocity in px/s per id (0 for unknown ids)."""
        rows = self._rows_of(np.asarray(track_ids, np.int64).reshape(-1))
        out = np.zeros((rows.size, 2), np.float32)
        known = rows >= 0
        out[known] = self._kf.v[rows[known], :2]
        return out

    def predict(
        self,
        det: Detections,
        target_ns: int,
        *,
        max_horizon_s: float = DEFAULT_MAX_HORIZON_S,
        past: PastPolicy = "refuse",
    ) -> Prediction:
        """`det` moved from its stamp to `target_ns` with each id's velocity
        (box centre and size rates). Rows without a known id stay where they
        are (velocity 0, std NaN). Raises the same refusals as `predict_snapshot`."""
        if not isinstance(det, Detections):
            raise TypeError(f"det: expected Detections, got {type(det).__name__}")
        horizon, step = resolve_horizon(det.stamp_ns, target_ns, max_horizon_s, past)
        n = len(det)
        rows = self._rows_of(det.track_ids)
        rows[det.track_ids == UNTRACKED] = -1
        known = rows >= 0
        z = _cxcywh(det.xyxy)
        v = np.zeros((n, 4), np.float64)
        std0 = np.full((n, 2), np.nan, np.float32)
        std1 = std0.copy()
        if known.any():
            st = self._kf.take(rows[known])
            v[known] = st.v
            std0[known] = np.sqrt(st.pxx[:, :2])
            if step > 0.0:
                kf_predict(st, step, self.pos_noise, self.vel_noise)
            std1[known] = np.sqrt(st.pxx[:, :2])
        z = z + v * step
        z[:, 2:] = np.maximum(z[:, 2:], 1e-3)
        out = Detections.from_arrays(
            _xyxy(z),
            det.scores,
            det.class_ids,
            det.track_ids,
            stamp_ns=int(target_ns),
            frame_id=det.frame_id,
            image_size=det.image_size,
        )
        return Prediction(
            detections=out,
            source_stamp_ns=det.stamp_ns,
            horizon_s=horizon,
            applied_s=step,
            velocity=v[:, :2].astype(np.float32),
            position_std=std1,
            source_position_std=std0,
        )


def predict_objects3d(
    objects: Objects3D,
    target_ns: int,
    max_horizon_s: float = 0.5,
    state_covariances: np.ndarray | None = None,
    past: PastPolicy = "refuse",
) -> tuple[Objects3D, float]:
    """3D objects moved to `target_ns` with constant velocity: (objects, horizon_s).

    Rows with unknown velocity (NaN) keep their position. With
    `state_covariances` ((N, 6, 6) over x, y, z, vx, vy, vz, as the 3D
    tracker keeps them) the centre covariance grows as F P F^T for
    F = [[I, dt I], [0, I]]; without, it is kept. The same horizon cap and
    past policy as the 2D prediction apply (`HorizonExceededError`).
    """
    horizon, dt = resolve_horizon(objects.stamp_ns, target_ns, max_horizon_s, past)
    n = len(objects.centers)
    vel = objects.velocities.astype(np.float64)
    known = np.isfinite(vel).all(axis=1)
    centers = objects.centers.copy()
    centers[known] += vel[known] * dt
    covs = objects.covariances.astype(np.float64)
    if state_covariances is not None:
        p = np.asarray(state_covariances, np.float64)
        if p.shape != (n, 6, 6):
            raise ValueError(f"state_covariances: expected shape ({n}, 6, 6), got {p.shape}")
        # position block of F P F^T
        covs = p[:, :3, :3] + dt * (p[:, :3, 3:] + p[:, 3:, :3]) + dt * dt * p[:, 3:, 3:]
    out = replace(
        objects,
        centers=centers,
        covariances=covs.astype(np.float32),
        stamp_ns=int(target_ns),
    )
    return out, horizon
