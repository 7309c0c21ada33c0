"""Bounded work per message: at most N rows, the highest-scoring ones.

A tracker's association is quadratic in the number of boxes (and the 3D
fusion is per box), so a single message of 20 000 boxes could stall a node
for minutes. Callers cap the rows before tracking or fusion and count what
they dropped; which rows survive depends only on the scores (ties: the
earlier row), so live runs and replays keep the same ones.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from perception.core.fusion.types import Objects3D
from perception.core.types import Detections

__all__ = ["keep_best"]

RowsT = TypeVar("RowsT", Detections, Objects3D)


def keep_best(rows: RowsT, max_rows: int) -> tuple[RowsT, int]:
    """At most `max_rows` rows of `rows`: the highest scores (NaN lowest),
    kept in their original order. Returns them and how many were dropped."""
    if max_rows < 1:
        raise ValueError(f"max_rows: expected >= 1, got {max_rows}")
    n = len(rows)
    if n <= max_rows:
        return rows, 0
    scores = np.asarray(rows.scores, np.float64)
    key = np.where(np.isnan(scores), -np.inf, scores)
    best = np.sort(np.argsort(-key, kind="stable")[:max_rows])
    return rows[best], n - max_rows
