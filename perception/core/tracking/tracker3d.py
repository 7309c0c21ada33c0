"""3D multi-object tracker for planning: constant-velocity Kalman filter on box
centres in a fixed target frame (e.g. base_link or odom), batched over tracks.

Each accepted frame of `Objects3D` goes through:

1. validation of the frame (frame_id, stamp order) and of every row (score
   finite, covariance symmetric with a non-negative diagonal) -- nothing in
   the track state changes before this passes. A stamp earlier than the last
   by more than `reorder_tolerance_s` is a clock reset (simulator restart):
   the tracks are dropped with a warning; a smaller step back or a duplicate
   stamp rejects the frame;
2. removal of tracks unseen for more than `max_lost_s`, then prediction of
   every track to the frame's stamp (dt from stamps in ns; process noise of a
   white-acceleration model, so one long step and several short ones agree);
3. association: first, rows whose 2D track id equals the 2D id a track was
   last matched with (the 2D tracker already solved that identity), when
   within `id_gate_m`; then an optimal assignment
   (scipy.optimize.linear_sum_assignment) on the Euclidean distance between
   predicted and measured centres, pairs beyond `max_distance_m` or of another
   class forbidden;
4. Kalman update of matched tracks with the row's own centre covariance (a
   floor of `meas_noise_m` keeps the filter from trusting a zero);
5. new tracks from unmatched rows. A new track takes the row's 2D track id as
   its id when no live track uses it, so 3D and 2D ids agree downstream;
   rows without a 2D id get ids from `own_id_start` upwards.

Sizes are smoothed with an exponential average; yaw is the last measured.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from perception.core.fusion.types import Objects3D
from perception.core.tracking.matching import linear_assignment
from perception.core.tracking.stamps import WarningThrottle, check_frame, count_reset

__all__ = ["Track3DInfo", "Tracker3D", "Tracker3DConfig", "Tracker3DStats"]

_LOG = logging.getLogger(__name__)
_NS = 1_000_000_000


class Tracker3DConfigError(ValueError):
    """A Tracker3D parameter is out of range."""


@dataclass(frozen=True)
class Tracker3DConfig:
    """Parameters of `Tracker3D` (metres, seconds).

    Mirrored by the `tracker3d` section of perception/ros/specs/tracker.params.yaml
    (perception.config.Tracker3DParams; test/test_config.py keeps them equal).

    Attributes:
        max_distance_m: largest centre distance of a match.
        id_gate_m: largest distance of a match by carried 2D track id.
        class_consistent: never match a track to a row of another class.
        min_hits: observations to confirm a track (output only when confirmed).
        max_lost_s: a track unseen for longer is removed.
        reorder_tolerance_s: a stamp back by at most this rejects the frame;
            further back resets the tracker.
        meas_noise_m: floor of the measurement std per axis.
        accel_noise: std of the white acceleration (m/s^2 per sqrt(s)).
        init_vel_noise: initial velocity std (m/s) of a new track.
        size_smoothing: weight of a new size measurement in the size average.
        own_id_start: first id given to tracks born without a 2D track id.
    """

    max_distance_m: float = 2.0
    id_gate_m: float = 4.0
    class_consistent: bool = True
    min_hits: int = 2
    max_lost_s: float = 1.0
    reorder_tolerance_s: float = 0.5
    meas_noise_m: float = 0.1
    accel_noise: float = 1.0
    init_vel_noise: float = 5.0
    size_smoothing: float = 0.3
    own_id_start: int = 1_000_000

    def __post_init__(self) -> None:
        positive = (
            "max_distance_m",
            "id_gate_m",
            "max_lost_s",
            "meas_noise_m",
            "accel_noise",
            "init_vel_noise",
        )
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise Tracker3DConfigError(f"Tracker3DConfig.{name}: expected > 0, got {v!r}")
        if self.min_hits < 1:
            raise Tracker3DConfigError(
                f"Tracker3DConfig.min_hits: expected >= 1, got {self.min_hits}"
            )
        if not 0.0 < self.size_smoothing <= 1.0:
            raise Tracker3DConfigError(
                f"Tracker3DConfig.size_smoothing: expected (0, 1], got {self.size_smoothing}"
            )
        if self.reorder_tolerance_s < 0 or self.own_id_start < 0:
            raise Tracker3DConfigError(
                "Tracker3DConfig: expected reorder_tolerance_s >= 0 and own_id_start >= 0"
            )


@dataclass
class Tracker3DStats:
    """Counters of what the tracker accepted, rejected and did."""

    frames: int = 0
    frames_rejected_duplicate: int = 0
    frames_rejected_out_of_order: int = 0
    frames_rejected_frame_id: int = 0
    resets: int = 0
    rows: int = 0
    rows_rejected: int = 0
    matched_by_2d_id: int = 0
    matched_by_distance: int = 0
    tracks_created: int = 0
    tracks_removed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Track3DInfo:
    """Snapshot of one live track."""

    track_id: int
    confirmed: bool
    position: tuple[float, float, float]
    velocity: tuple[float, float, float]
    covariance: np.ndarray  # (6, 6) over x, y, z, vx, vy, vz
    size: tuple[float, float, float]
    class_id: int
    hits: int
    time_since_update_s: float


def _vec3(row: np.ndarray) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in row)
    return x, y, z


class Tracker3D:
    """Tracks 3D objects in one target frame; `update()` once per frame in stamp order."""

    def __init__(self, config: Tracker3DConfig | None = None, frame_id: str | None = None) -> None:
        if config is not None and not isinstance(config, Tracker3DConfig):
            raise TypeError(f"config: expected Tracker3DConfig, got {type(config).__name__}")
        self.config = config if config is not None else Tracker3DConfig()
        self._frame_id = frame_id
        self._next_own = self.config.own_id_start
        self.stats = Tracker3DStats()
        self._warn = WarningThrottle(_LOG)
        self._last_stamp: int | None = None
        self._clear()

    def _clear(self) -> None:
        self._x = np.zeros((0, 6))
        self._p = np.zeros((0, 6, 6))
        self._ids = np.zeros(0, np.int64)
        self._src2d = np.zeros(0, np.int64)
        self._cls = np.zeros(0, np.int32)
        self._size = np.zeros((0, 3))
        self._yaw = np.zeros(0)
        self._score = np.zeros(0, np.float32)
        self._hits = np.zeros(0, np.int64)
        self._seen = np.zeros(0, np.int64)

    # ------------------------------------------------------------ public API
    @property
    def frame_id(self) -> str | None:
        return self._frame_id

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def reset(self) -> None:
        """Drop every track (own ids keep counting up)."""
        self.stats.tracks_removed += len(self)
        self._clear()
        self._last_stamp = None

    def tracks(self) -> list[Track3DInfo]:
        now = self._last_stamp if self._last_stamp is not None else 0
        return [
            Track3DInfo(
                track_id=int(self._ids[i]),
                confirmed=bool(self._hits[i] >= self.config.min_hits),
                position=_vec3(self._x[i, :3]),
                velocity=_vec3(self._x[i, 3:]),
                covariance=self._p[i].copy(),
                size=_vec3(self._size[i]),
                class_id=int(self._cls[i]),
                hits=int(self._hits[i]),
                time_since_update_s=(now - int(self._seen[i])) / _NS,
            )
            for i in range(len(self))
        ]

    def update(self, objects: Objects3D) -> Objects3D:
        """Track one frame. Returns the confirmed tracks observed in it, in
        input row order, with filtered centres, velocities (NaN until a track
        has two observations), centre covariances and track ids. A rejected
        frame returns no objects."""
        if not isinstance(objects, Objects3D):
            raise TypeError(f"objects: expected Objects3D, got {type(objects).__name__}")
        cfg = self.config
        st = self.stats
        stamp = objects.stamp_ns
        empty = Objects3D.empty(stamp_ns=stamp, frame_id=objects.frame_id)

        # ---- 1. validation: no state change before "accepted"
        last = self._last_stamp
        reset = check_frame(
            self._warn, "tracker3d", st, self._frame_id, objects.frame_id, stamp, last,
            cfg.reorder_tolerance_s,
        )  # fmt: skip
        if reset is None:
            return empty
        cov = objects.covariances.astype(np.float64)
        diag = np.diagonal(cov, axis1=1, axis2=2)
        valid = (
            np.isfinite(objects.scores)
            & (diag >= 0).all(axis=1)
            & np.isclose(cov, np.transpose(cov, (0, 2, 1)), atol=1e-6).all(axis=(1, 2))
        )
        rows = np.flatnonzero(valid)
        n_in = len(objects)

        # ---- accepted
        if reset:
            count_reset(self._warn, "tracker3d", st, objects.frame_id, stamp, last, len(self))
            self.reset()
            last = None
        if self._frame_id is None:
            self._frame_id = objects.frame_id
        st.frames += 1
        st.rows += n_in
        st.rows_rejected += n_in - rows.size
        if rows.size < n_in:
            _LOG.debug("tracker3d: dropped %d invalid rows", n_in - rows.size)
        self._last_stamp = stamp

        # ---- 2. expire, predict
        if len(self):
            keep = stamp - self._seen <= int(cfg.max_lost_s * _NS)
            if not keep.all():
                self._take(keep)
        if len(self) and last is not None:
            self._predict((stamp - last) / _NS)

        z = objects.centers[rows]
        r = cov[rows]
        floor = cfg.meas_noise_m**2
        r = r + np.eye(3) * floor
        cls = objects.class_ids[rows]
        tid2d = objects.track_ids[rows]
        n_rows, n_tracks = rows.size, len(self)
        track_of_row = np.full(n_rows, -1, np.intp)

        # ---- 3a. carried 2D identity
        if n_rows and n_tracks:
            live = {int(t): k for k, t in enumerate(self._src2d) if t >= 0}
            for j in range(n_rows):
                cand = live.get(int(tid2d[j]), -1) if tid2d[j] >= 0 else -1
                if cand < 0 or (cfg.class_consistent and self._cls[cand] != cls[j]):
                    continue
                if np.linalg.norm(self._x[cand, :3] - z[j]) <= cfg.id_gate_m:
                    track_of_row[j] = cand
                    del live[int(tid2d[j])]
            st.matched_by_2d_id += int(np.count_nonzero(track_of_row >= 0))
        # ---- 3b. distance assignment of the rest
        free_rows = np.flatnonzero(track_of_row < 0)
        taken = np.zeros(n_tracks, bool)
        taken[track_of_row[track_of_row >= 0]] = True
        free_tracks = np.flatnonzero(~taken)
        if free_rows.size and free_tracks.size:
            d = np.linalg.norm(self._x[free_tracks, None, :3] - z[None, free_rows, :], axis=2)
            if cfg.class_consistent:
                d = np.where(self._cls[free_tracks, None] == cls[None, free_rows], d, np.inf)
            ti, rj = linear_assignment(d, cfg.max_distance_m, "scipy")
            track_of_row[free_rows[rj]] = free_tracks[ti]
            st.matched_by_distance += int(ti.size)

        # ---- 4. update matched tracks
        m_rows = np.flatnonzero(track_of_row >= 0)
        if m_rows.size:
            k = track_of_row[m_rows]
            self._kalman_update(k, z[m_rows], r[m_rows])
            a = cfg.size_smoothing
            self._size[k] = (1 - a) * self._size[k] + a * objects.sizes[rows[m_rows]]
            self._yaw[k] = objects.yaws[rows[m_rows]]
            self._score[k] = objects.scores[rows[m_rows]]
            self._hits[k] += 1
            self._seen[k] = stamp
            has2d = tid2d[m_rows] >= 0
            self._src2d[k[has2d]] = tid2d[m_rows][has2d]

        # ---- 5. new tracks
        new = np.flatnonzero(track_of_row < 0)
        if new.size:
            track_of_row[new] = self._spawn(
                z[new],
                r[new],
                objects.sizes[rows[new]],
                objects.yaws[rows[new]],
                objects.scores[rows[new]],
                cls[new],
                tid2d[new],
                stamp,
            )

        # ---- output: confirmed tracks seen in this frame, in row order
        k = track_of_row
        confirmed = self._hits[k] >= cfg.min_hits
        k = k[confirmed]
        if k.size == 0:
            return empty
        vel = self._x[k, 3:].astype(np.float32)
        vel[self._hits[k] < 2] = np.nan
        return Objects3D(
            centers=self._x[k, :3].copy(),
            sizes=self._size[k].astype(np.float32),
            yaws=self._yaw[k].astype(np.float32),
            covariances=self._p[k, :3, :3].astype(np.float32),
            velocities=vel,
            scores=self._score[k].astype(np.float32),
            class_ids=self._cls[k].astype(np.int32),
            track_ids=self._ids[k].copy(),
            stamp_ns=stamp,
            frame_id=objects.frame_id,
        )

    # ------------------------------------------------------------ internals
    def _take(self, keep: np.ndarray) -> None:
        self.stats.tracks_removed += int(np.count_nonzero(~keep))
        for name in (
            "_x",
            "_p",
            "_ids",
            "_src2d",
            "_cls",
            "_size",
            "_yaw",
            "_score",
            "_hits",
            "_seen",
        ):
            setattr(self, name, getattr(self, name)[keep])

    def _predict(self, dt: float) -> None:
        if dt <= 0:
            return
        f = np.eye(6)
        f[:3, 3:] = dt * np.eye(3)
        q = self.config.accel_noise**2
        qm = np.zeros((6, 6))
        qm[:3, :3] = (dt**3 / 3.0) * q * np.eye(3)
        qm[:3, 3:] = qm[3:, :3] = (dt**2 / 2.0) * q * np.eye(3)
        qm[3:, 3:] = dt * q * np.eye(3)
        self._x = self._x @ f.T
        self._p = f @ self._p @ f.T + qm

    def _kalman_update(self, k: np.ndarray, z: np.ndarray, r: np.ndarray) -> None:
        x, p = self._x[k], self._p[k]
        s = p[:, :3, :3] + r
        gain = p[:, :, :3] @ np.linalg.inv(s)  # (M, 6, 3)
        innov = z - x[:, :3]
        x = x + np.einsum("mij,mj->mi", gain, innov)
        p = p - gain @ s @ np.transpose(gain, (0, 2, 1))
        p = 0.5 * (p + np.transpose(p, (0, 2, 1)))
        self._x[k], self._p[k] = x, p

    def _spawn(
        self,
        z: np.ndarray,
        r: np.ndarray,
        sizes: np.ndarray,
        yaws: np.ndarray,
        scores: np.ndarray,
        cls: np.ndarray,
        tid2d: np.ndarray,
        stamp: int,
    ) -> np.ndarray:
        n = z.shape[0]
        used = set(self._ids.tolist())
        ids = np.empty(n, np.int64)
        for j in range(n):
            t = int(tid2d[j])
            if t >= 0 and t not in used:
                ids[j] = t
            else:
                while self._next_own in used:
                    self._next_own += 1
                ids[j] = self._next_own
                self._next_own += 1
            used.add(int(ids[j]))
        x = np.zeros((n, 6))
        x[:, :3] = z
        p = np.zeros((n, 6, 6))
        p[:, :3, :3] = r
        p[:, 3:, 3:] = np.eye(3) * self.config.init_vel_noise**2
        first = len(self)
        self._x = np.concatenate((self._x, x))
        self._p = np.concatenate((self._p, p))
        self._ids = np.concatenate((self._ids, ids))
        self._src2d = np.concatenate((self._src2d, tid2d.astype(np.int64)))
        self._cls = np.concatenate((self._cls, cls.astype(np.int32)))
        self._size = np.concatenate((self._size, sizes.astype(np.float64)))
        self._yaw = np.concatenate((self._yaw, yaws.astype(np.float64)))
        self._score = np.concatenate((self._score, scores.astype(np.float32)))
        self._hits = np.concatenate((self._hits, np.ones(n, np.int64)))
        self._seen = np.concatenate((self._seen, np.full(n, stamp, np.int64)))
        self.stats.tracks_created += n
        return np.arange(first, first + n)
