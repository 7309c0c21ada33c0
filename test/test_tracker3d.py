"""3D Kalman tracker: velocity, ids carried from 2D, classes, stamps, bad rows."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from perception.core.fusion.types import Objects3D
from perception.core.tracking.tracker3d import Tracker3D, Tracker3DConfig

NS = 1_000_000_000


def _frame(centers, stamp_ns, *, classes=None, tids=None, cov=0.01, frame="base_link", **kw):
    c = np.asarray(centers, float).reshape(-1, 3)
    n = c.shape[0]
    return Objects3D.from_arrays(
        c,
        np.tile([0.6, 0.6, 1.6], (n, 1)),
        covariances=np.tile(np.eye(3) * cov, (n, 1, 1)),
        class_ids=np.zeros(n) if classes is None else classes,
        track_ids=tids,
        stamp_ns=stamp_ns,
        frame_id=frame,
        **kw,
    )


def _run(tracker, starts, vels, n_frames=40, noise=0.1, seed=0, tids=None, classes=None):
    """Constant-velocity objects, 10 Hz with +-30 ms jitter and one dropped frame."""
    rng = np.random.default_rng(seed)
    t = 0
    out = []
    for k in range(n_frames):
        t = k * 100_000_000 + int(rng.integers(-30, 30)) * 1_000_000
        if k == 17:
            continue  # dropped frame: dt from stamps covers it
        true = np.asarray(starts) + np.asarray(vels) * (t / NS)
        meas = true + rng.normal(0, noise, true.shape)
        out.append((true, tracker.update(_frame(meas, t, classes=classes, tids=tids))))
    return out


def test_velocity_and_position_from_noisy_constant_velocity_objects() -> None:
    starts = [[10.0, 2.0, 0.8], [20.0, -3.0, 0.8], [5.0, -8.0, 0.8]]
    vels = [[-1.5, 0.0, 0.0], [0.0, 1.2, 0.0], [0.8, 0.8, 0.0]]
    tracker = Tracker3D()
    out = _run(tracker, starts, vels)
    pos_e, vel_e = [], []
    for true, o in out[15:]:  # after convergence
        assert len(o) == 3 and o.has_velocity.all()
        order = np.argsort(o.track_ids)  # ids given in row order
        pos_e.append(np.linalg.norm(o.centers[order] - true, axis=1))
        vel_e.append(np.linalg.norm(o.velocities[order] - np.asarray(vels), axis=1))
    pos_rms = np.sqrt(np.mean(np.square(pos_e)))
    vel_rms = np.sqrt(np.mean(np.square(vel_e)))
    print(
        f"\ntracker3d: position RMS err {pos_rms:.3f} m, velocity RMS err {vel_rms:.3f} m/s "
        "(measurement noise 0.1 m per axis)"
    )
    # measured: 0.107 m and 0.296 m/s (3D norms; 0.1 m noise per axis)
    assert pos_rms < 0.15 and vel_rms < 0.45
    last = out[-1][1]
    # ids stable over the sequence, one track per object
    ids = {tuple(sorted(o.track_ids.tolist())) for _, o in out[2:]}
    assert len(ids) == 1 and tracker.stats.tracks_created == 3
    # covariance: symmetric, shrinks below the measurement noise
    cov = last.covariances
    assert np.allclose(cov, np.transpose(cov, (0, 2, 1)), atol=1e-6)
    assert (np.diagonal(cov, axis1=1, axis2=2) < 0.1**2 + 0.01).all()


def test_first_output_has_unknown_velocity_not_zero() -> None:
    tracker = Tracker3D(Tracker3DConfig(min_hits=1))
    out = tracker.update(_frame([[5, 0, 0]], 0))
    assert len(out) == 1 and not out.has_velocity.any()


def test_ids_carried_from_2d_tracks() -> None:
    tracker = Tracker3D()
    out = _run(tracker, [[10, 2, 0.8], [12, -2, 0.8]], [[0, 0, 0], [0, 0, 0]], n_frames=5,
               tids=[7, 42])  # fmt: skip
    assert sorted(out[-1][1].track_ids.tolist()) == [7, 42]
    # the 2D tracker's identity wins over distance: swapped positions, same ids
    swapped = tracker.update(_frame([[10.6, 1.5, 0.8], [10.2, 1.9, 0.8]], 10 * NS // 10,
                                    tids=[42, 7]))  # fmt: skip
    # (both rows within id_gate_m of their 2D id's track: identity kept)
    assert swapped.track_ids.tolist() == [42, 7]
    assert tracker.stats.matched_by_2d_id >= 2
    # rows without a 2D id get own ids from own_id_start
    t2 = Tracker3D(Tracker3DConfig(min_hits=1))
    o = t2.update(_frame([[1, 0, 0]], 0))
    assert o.track_ids.tolist() == [1_000_000]


def test_class_consistent_association() -> None:
    tracker = Tracker3D(Tracker3DConfig(min_hits=1))
    tracker.update(_frame([[10, 0, 0.8]], 0, classes=[0]))
    out = tracker.update(_frame([[10.1, 0, 0.8]], NS // 10, classes=[2]))
    assert len(tracker) == 2  # a car at the pedestrian's place is a new track
    assert out.class_ids.tolist() == [2]
    t2 = Tracker3D(Tracker3DConfig(min_hits=1, class_consistent=False))
    t2.update(_frame([[10, 0, 0.8]], 0, classes=[0]))
    t2.update(_frame([[10.1, 0, 0.8]], NS // 10, classes=[2]))
    assert len(t2) == 1


def test_stamps_backwards_reset_with_warning_or_reject(caplog) -> None:
    tracker = Tracker3D(Tracker3DConfig(min_hits=1, reorder_tolerance_s=0.5))
    tracker.update(_frame([[10, 0, 0.8]], 10 * NS))
    assert len(tracker.update(_frame([[10, 0, 0.8]], 10 * NS))) == 0  # duplicate
    assert len(tracker.update(_frame([[10, 0, 0.8]], 10 * NS - NS // 10))) == 0  # reordered
    assert tracker.stats.frames_rejected_duplicate == 1
    assert tracker.stats.frames_rejected_out_of_order == 1
    assert len(tracker) == 1
    with caplog.at_level(logging.WARNING):
        out = tracker.update(_frame([[3, 0, 0.8]], 1 * NS))  # simulator restart
    assert "clock reset" in caplog.text and tracker.stats.resets == 1
    assert len(tracker) == 1 and out.centers[0, 0] == 3.0


def test_bad_rows_rejected_before_state_changes() -> None:
    good = [[10.0, 0.0, 0.8], [20.0, 5.0, 0.8]]
    a, b = Tracker3D(), Tracker3D()
    for k in range(4):
        t = k * NS // 10
        a.update(_frame(good, t))
        cov = np.tile(np.eye(3) * 0.01, (4, 1, 1))
        cov[2, 0, 0] = -1.0  # not a covariance
        scores = np.array([1.0, 1.0, 1.0, np.nan])
        bad = Objects3D.from_arrays(
            np.array([*good, [15.0, 0.0, 0.8], [16.0, 0.0, 0.8]]),
            np.ones((4, 3)) * 0.6,
            covariances=cov,
            scores=scores,
            stamp_ns=t,
            frame_id="base_link",
        )
        b.update(bad)
    assert b.stats.rows_rejected == 8 and len(b) == len(a) == 2
    ta, tb = a.tracks(), b.tracks()
    assert [t.position for t in ta] == [t.position for t in tb]
    # a frame in another frame_id is rejected whole
    out = b.update(_frame(good, NS, frame="camera"))
    assert len(out) == 0 and b.stats.frames_rejected_frame_id == 1


def test_lost_tracks_expire_by_time() -> None:
    tracker = Tracker3D(Tracker3DConfig(min_hits=1, max_lost_s=0.5))
    tracker.update(_frame([[10, 0, 0.8]], 0))
    tracker.update(_frame(np.zeros((0, 3)), NS // 10 * 4))
    assert len(tracker) == 1
    tracker.update(_frame(np.zeros((0, 3)), NS))
    assert len(tracker) == 0 and tracker.stats.tracks_removed == 1


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="max_distance_m"):
        Tracker3DConfig(max_distance_m=0.0)
    with pytest.raises(TypeError):
        Tracker3D().update("not objects")  # type: ignore[arg-type]
