"""Core pieces of the tracker: config validation, Kalman filter over real time
steps, IoU and assignment."""

from __future__ import annotations

import numpy as np
import pytest

from perception.core.tracking import TrackerConfig, TrackerConfigError, iou_matrix
from perception.core.tracking.kalman import kf_init, kf_predict, kf_update
from perception.core.tracking.matching import linear_assignment


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"high_score": 1.5}, "high_score"),
        ({"low_score": 0.9, "high_score": 0.5}, "low_score"),
        ({"min_hits": 0}, "min_hits"),
        ({"min_hits": 2.0}, "expected int"),
        ({"max_lost_s": -1.0}, "max_lost_s"),
        ({"meas_noise": 0.0}, "meas_noise"),
        ({"match_iou": float("nan")}, "finite"),
        ({"fuse_score": 1}, "expected bool"),
        ({"solver": "hungarian"}, "solver"),
        ({"recovery_max_scale": 0.5}, "recovery_max_scale"),
    ],
)
def test_config_rejects_bad_values(changes: dict, message: str) -> None:
    with pytest.raises(TrackerConfigError, match=message):
        TrackerConfig(**changes)


def test_config_replace_validates_and_is_frozen() -> None:
    cfg = TrackerConfig()
    new = cfg.replace(high_score=0.7, max_lost_s=2)
    assert new.high_score == 0.7 and isinstance(new.max_lost_s, float)
    assert cfg.high_score == 0.5
    with pytest.raises(TrackerConfigError, match="unknown"):
        cfg.replace(nonsense=1)
    with pytest.raises(TrackerConfigError):
        cfg.replace(low_score=0.9)
    with pytest.raises(AttributeError):
        cfg.high_score = 0.1  # type: ignore[misc]
    assert cfg.as_dict()["solver"] == "lap"


# ---------------------------------------------------------------- Kalman
def test_kalman_learns_velocity_in_pixels_per_second_from_stamps() -> None:
    """Same motion sampled at 10 Hz and at irregular intervals gives the same
    velocity estimate, in px/s (not px/frame)."""
    speed = 120.0  # px/s
    for times in (np.arange(0, 2.0, 0.1), np.cumsum(np.r_[0, np.tile([0.03, 0.17, 0.1], 7)])):
        st = kf_init(np.array([[0.0, 50.0, 40.0, 80.0]]), 0.1, 1.9)
        prev = times[0]
        for t in times[1:]:
            kf_predict(st, float(t - prev), 0.27, 1.0)
            kf_update(st, np.array([[speed * t, 50.0, 40.0, 80.0]]), 0.05)
            prev = t
        assert st.v[0, 0] == pytest.approx(speed, rel=0.05)
        assert abs(st.v[0, 1]) < 1.0


def test_kalman_prediction_scales_with_dt_and_is_step_invariant() -> None:
    st1 = kf_init(np.array([[0.0, 0.0, 40.0, 80.0]]), 0.1, 1.9)
    st1.v[:] = [[100.0, -50.0, 0.0, 0.0]]
    st2 = st1.take(np.array([0]))
    kf_predict(st1, 0.5, 0.27, 1.0)
    for _ in range(5):
        kf_predict(st2, 0.1, 0.27, 1.0)
    np.testing.assert_allclose(st1.x, [[50.0, -25.0, 40.0, 80.0]])
    np.testing.assert_allclose(st2.x, st1.x)
    # Variance grows with elapsed time; one long step == several short ones
    # for the random-walk terms (the dt^2 cross term differs only slightly).
    assert (st1.pxx > 0.1**2 * 40**2).all()
    np.testing.assert_allclose(st2.pvv, st1.pvv)
    small = kf_init(np.array([[0.0, 0.0, 40.0, 80.0]]), 0.1, 1.9)
    kf_predict(small, 0.01, 0.27, 1.0)
    assert (small.pxx < st1.pxx).all()


def test_kalman_update_shrinks_uncertainty() -> None:
    st = kf_init(np.array([[0.0, 0.0, 40.0, 80.0]]), 0.1, 1.9)
    kf_predict(st, 0.1, 0.27, 1.0)
    before = st.pxx.copy()
    kf_update(st, np.array([[2.0, 1.0, 41.0, 79.0]]), 0.05)
    assert (st.pxx < before).all()
    assert 0.0 < st.x[0, 0] < 2.0


# ---------------------------------------------------------------- matching
def test_iou_matrix_values() -> None:
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]], np.float32)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0])
    assert iou_matrix(a[:0], b).shape == (0, 3)


@pytest.mark.parametrize("solver", ["lap", "scipy"])
def test_linear_assignment_respects_limit(solver: str) -> None:
    cost = np.array([[0.1, 0.9, 0.95], [0.2, 0.3, 0.99]])
    r, c = linear_assignment(cost, 0.5, solver)
    assert sorted(zip(r.tolist(), c.tolist(), strict=True)) == [(0, 0), (1, 1)]
    r, c = linear_assignment(np.array([[0.9, np.inf]]), 0.5, solver)
    assert r.size == 0
    r, c = linear_assignment(np.zeros((0, 3)), 0.5, solver)
    assert r.size == 0


def test_solvers_agree_on_random_problems() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        cost = rng.random((rng.integers(1, 9), rng.integers(1, 9)))
        a = linear_assignment(cost, 0.6, "lap")
        b = linear_assignment(cost, 0.6, "scipy")
        total_a = cost[a].sum() + 0.3 * (cost.shape[0] + cost.shape[1] - 2 * a[0].size)
        total_b = cost[b].sum() + 0.3 * (cost.shape[0] + cost.shape[1] - 2 * b[0].size)
        assert total_a == pytest.approx(total_b)
