"""Hand-written additions to generated parameter classes: conversion to the core configs.

The tracker sections of tracker.params.yaml mirror the core dataclasses field by
field (test/test_config.py keeps them equal); these mixins also apply the core's
cross-field rules (e.g. low_score <= high_score) at construction, so a
TrackerParams object is always one the tracker accepts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perception.config.base import SpecParams
from perception.config.spec import ParameterError

if TYPE_CHECKING:
    from perception.core.tracking.config import TrackerConfig
    from perception.core.tracking.tracker3d import Tracker3DConfig

__all__ = ["Tracker3DConfigMixin", "TrackerConfigMixin"]


class TrackerConfigMixin(SpecParams):
    """TrackerParams -> perception.core.tracking.TrackerConfig."""

    def to_config(self) -> TrackerConfig:
        """The core tracker's config with these values."""
        from perception.core.tracking.config import TrackerConfig

        return TrackerConfig(**self.to_flat())

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.to_config()
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc


class Tracker3DConfigMixin(SpecParams):
    """Tracker3DParams -> perception.core.tracking.tracker3d.Tracker3DConfig."""

    def to_config(self) -> Tracker3DConfig:
        """The core 3D tracker's config with these values."""
        from perception.core.tracking.tracker3d import Tracker3DConfig

        return Tracker3DConfig(**self.to_flat())

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.to_config()
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
