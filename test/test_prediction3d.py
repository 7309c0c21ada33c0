"""3D tracks predicted to the publish time: less error than the raw state."""

from __future__ import annotations

import numpy as np
import pytest

from perception.core.fusion.types import Objects3D
from perception.core.prediction import HorizonExceededError, predict_objects3d
from perception.core.tracking.tracker3d import Tracker3D

NS = 1_000_000_000


def _run(delay_s: float = 0.1, noise_m: float = 0.05, rate_hz: float = 10.0):
    rng = np.random.default_rng(4)
    start = np.array([[10.0, 2.0, 0.8], [20.0, -3.0, 0.9], [6.0, 0.0, 0.8]])
    vel = np.array([[5.0, 1.0, 0.0], [-8.0, 0.5, 0.0], [0.0, 1.5, 0.0]])  # m/s
    tracker = Tracker3D(frame_id="base_link")
    raw, pred = [], []
    for k in range(int(4 * rate_hz)):
        t = k / rate_hz
        truth = start + vel * t
        obj = Objects3D.from_arrays(
            centers=truth + rng.normal(0.0, noise_m, truth.shape),
            sizes=[[4.0, 1.8, 1.5], [4.0, 1.8, 1.5], [0.6, 0.6, 1.7]],
            covariances=np.stack([np.eye(3) * noise_m**2] * 3),
            class_ids=[2, 2, 0],
            track_ids=[1, 2, 3],
            stamp_ns=round(t * NS),
            frame_id="base_link",
        )
        tracked = tracker.update(obj)
        if t < 1.0 or len(tracked.centers) < 3 or not tracked.has_velocity.all():
            continue
        publish_ns = tracked.stamp_ns + round(delay_s * NS)
        truth_at_publish = start + vel * (publish_ns / NS)
        order = np.argsort(tracked.track_ids)
        predicted, horizon = predict_objects3d(tracked, publish_ns, max_horizon_s=0.5)
        assert horizon == pytest.approx(delay_s)
        raw.append(np.linalg.norm(tracked.centers[order] - truth_at_publish, axis=1))
        pred.append(np.linalg.norm(predicted.centers[order] - truth_at_publish, axis=1))
    return float(np.mean(raw)), float(np.mean(pred))


def test_prediction_to_publish_time_is_3x_better_with_100ms_delay():
    raw, pred = _run()
    print(f"3D: unpredicted {raw:.3f} m, predicted {pred:.3f} m, ratio {raw / pred:.1f}x")
    assert raw / pred >= 3.0


def test_covariance_grows_and_horizon_is_capped():
    obj = Objects3D.from_arrays(
        centers=[[1.0, 0.0, 0.0]], sizes=[[1.0, 1.0, 1.0]], velocities=[[2.0, 0.0, 0.0]],
        covariances=[np.eye(3) * 0.01], stamp_ns=NS,
    )  # fmt: skip
    p = np.eye(6) * 0.01
    p[3:, 3:] = np.eye(3) * 0.25
    out, horizon = predict_objects3d(obj, NS + NS // 5, state_covariances=p[None])
    assert horizon == pytest.approx(0.2) and out.stamp_ns == NS + NS // 5
    np.testing.assert_allclose(out.centers[0], [1.4, 0.0, 0.0])
    assert out.covariances[0, 0, 0] == pytest.approx(0.01 + 0.04 * 0.25)
    with pytest.raises(HorizonExceededError, match="refusing to extrapolate"):
        predict_objects3d(obj, NS + 2 * NS, max_horizon_s=0.5)
    unknown = Objects3D.from_arrays(centers=[[1.0, 2.0, 3.0]], sizes=[[1.0, 1.0, 1.0]],
                                    stamp_ns=NS)  # fmt: skip
    held, _ = predict_objects3d(unknown, NS + NS // 10)
    np.testing.assert_array_equal(held.centers, unknown.centers)  # unknown velocity: not moved
