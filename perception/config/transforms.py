"""Rigid transforms given as parameters (16 numbers, row-major 4x4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perception.config.spec import ParameterError

__all__ = ["rigid_transform"]


def rigid_transform(name: str, values: Sequence[float]) -> np.ndarray:
    """A row-major 4x4 rigid transform given as 16 numbers (a double-array parameter)."""
    if len(values) != 16:
        raise ParameterError(f"{name}: expected 16 numbers (row-major 4x4), got {len(values)}")
    m = np.asarray(values, np.float64).reshape(4, 4)
    if not np.isfinite(m).all() or not np.allclose(m[3], [0, 0, 0, 1]):
        raise ParameterError(f"{name}: expected a finite rigid transform with last row 0 0 0 1")
    return m
