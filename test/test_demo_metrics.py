"""The demo's 3D scores: centre error and size error share one greedy
centre matching; sizes compare the same box whichever axis is its length."""

from __future__ import annotations

import numpy as np
import pytest

from perception.demo import metrics


def test_size_errors_use_the_centre_matches_and_ignore_axis_order() -> None:
    gt = np.array(
        [
            [10.0, 0.0, 0.75, 4.4, 1.8, 1.5],
            [20.0, 5.0, 0.9, 0.5, 0.6, 1.8],
        ]
    )
    out = np.array(
        [
            [10.5, 0.0, 0.75, 1.8, 4.0, 1.5],  # the car, length along y: 0.4 short
            [20.0, 5.3, 0.9, 0.6, 0.5, 1.5],  # the pedestrian, 0.3 too short
            [40.0, 0.0, 0.0, 1.0, 1.0, 1.0],  # matches nothing
        ]
    )
    ce = metrics.centre_errors([(gt, out)], max_distance=2.0)
    assert ce["matched"] == 2.0 and ce["unmatched"] == 1.0
    assert ce["median_m"] == pytest.approx(0.4)
    # the same as with centres only
    ce3 = metrics.centre_errors([(gt[:, :3], out[:, :3])], max_distance=2.0)
    assert ce3 == ce
    se = metrics.size_errors([(gt, out)], max_distance=2.0)
    assert se["matched"] == 2.0
    assert se["median_m"] == pytest.approx(0.35)
    assert se["length_median_m"] == pytest.approx(0.2)
    assert se["width_median_m"] == pytest.approx(0.0)
    assert se["height_median_m"] == pytest.approx(0.15)


def test_size_errors_empty_and_bad_rows() -> None:
    se = metrics.size_errors([(np.zeros((0, 6)), np.zeros((0, 6)))])
    assert se["matched"] == 0.0 and np.isnan(se["median_m"])
    with pytest.raises(ValueError, match="6 values"):
        metrics.size_errors([(np.zeros((1, 3)), np.zeros((1, 3)))])
