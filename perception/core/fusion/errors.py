"""Typed errors of the fusion stage; each names what was expected and what came.

All derive from `PerceptionError` (and `ValueError`), so a node catches them
around per-frame work, counts them and keeps serving.
"""

from __future__ import annotations

from perception.core.errors import PerceptionError

__all__ = [
    "DepthImageError",
    "FusionInputError",
    "MissingExtrinsicsError",
    "PointCloudFormatError",
]


class FusionInputError(PerceptionError, ValueError):
    """An input of the fusion stage has the wrong shape, type or content."""


class DepthImageError(FusionInputError):
    """Depth image of the wrong size, dtype or scale for the camera model."""


class PointCloudFormatError(FusionInputError):
    """Point cloud buffer without x/y/z fields, or inconsistent layout."""


class MissingExtrinsicsError(FusionInputError):
    """No valid transform between the cloud frame and the camera frame."""
