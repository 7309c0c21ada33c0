"""Vectorised box similarity and assignment with a maintained solver.

The assignment is solved by `lap.lapjv` or `scipy.optimize.linear_sum_assignment`
(both imported lazily); pairs whose cost is above a limit are never matched.
"""

from __future__ import annotations

import numpy as np

from perception.core.tracking.config import Solver

__all__ = ["iou_matrix", "linear_assignment"]

_BIG = 1e6


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of boxes a (N, 4) and b (M, 4) given as x1, y1, x2, y2."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]), np.float64)
    ax1, ay1, ax2, ay2 = (a[:, i : i + 1] for i in range(4))
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    iw = np.minimum(ax2, bx2)
    iw -= np.maximum(ax1, bx1)
    np.maximum(iw, 0.0, out=iw)
    ih = np.minimum(ay2, by2)
    ih -= np.maximum(ay1, by1)
    np.maximum(ih, 0.0, out=ih)
    inter = np.multiply(iw, ih, out=iw)
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    union = area_a + area_b
    union -= inter
    np.maximum(union, 1e-12, out=union)
    iou: np.ndarray = np.divide(inter, union, out=inter)
    return iou


def linear_assignment(
    cost: np.ndarray, cost_limit: float, solver: Solver = "lap"
) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost matching where leaving a row or column unmatched costs
    `cost_limit / 2` each, so no matched pair costs more than `cost_limit`.

    Returns (rows, cols) index arrays of the matched pairs. Non-finite costs
    are treated as forbidden. Rows and columns without any admissible pair
    are left out before solving, and when no row or column has a choice
    (each has at most one admissible pair, the common case of separated
    objects) those pairs are the optimum and the solver is not called.
    """
    n, m = cost.shape
    empty = np.zeros(0, np.intp)
    if n == 0 or m == 0:
        return empty, empty
    ok = cost <= cost_limit  # False for NaN and +inf
    row_n = ok.sum(axis=1)
    col_n = ok.sum(axis=0)
    if row_n.max() <= 1 and col_n.max() <= 1:
        rows, cols = np.nonzero(ok)
        return rows.astype(np.intp), cols.astype(np.intp)
    rsel = np.flatnonzero(row_n)
    csel = np.flatnonzero(col_n)
    sub = cost[np.ix_(rsel, csel)]
    sub = np.where(np.isfinite(sub), sub, _BIG)
    if solver == "lap":
        import lap

        _, x, _ = lap.lapjv(sub, extend_cost=True, cost_limit=cost_limit)
        r = np.flatnonzero(x >= 0)
        c = x[r].astype(np.intp)
    elif solver == "scipy":
        from scipy.optimize import linear_sum_assignment

        k, q = sub.shape
        # Same extension as lap's cost_limit: dummy rows/columns at limit/2.
        ext = np.full((k + q, q + k), cost_limit * 0.5)
        ext[:k, :q] = sub
        ext[k:, q:] = 0.0
        rr, cc = linear_sum_assignment(ext)
        keep = (rr < k) & (cc < q)
        r, c = rr[keep].astype(np.intp), cc[keep].astype(np.intp)
    else:
        raise ValueError(f"solver: expected 'lap' or 'scipy', got {solver!r}")
    good = sub[r, c] <= cost_limit
    return rsel[r[good]], csel[c[good]]
