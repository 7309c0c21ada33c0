"""Typed errors of the core: each carries a one-line reason a user can act on.

Nodes catch `PerceptionError` around per-frame work, count it, log it
throttled and keep serving; start-up code lets it end the process with the
reason printed.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "EngineBuildError",
    "EngineError",
    "InputImageError",
    "ModelFileError",
    "ModelLayoutError",
    "PerceptionError",
    "RuntimeUnavailableError",
]


class PerceptionError(Exception):
    """Base of every error raised on purpose by perception."""


class EngineError(PerceptionError):
    """An inference engine could not be created or run."""


class ModelFileError(EngineError):
    """Model file missing, truncated, unreadable or not of the expected format."""


class RuntimeUnavailableError(EngineError):
    """The configured runtime (onnxruntime, tensorrt, torch_tensorrt, torch) or
    device is not available here. Nothing is installed at run time and there is
    no silent fallback unless one is configured."""


class EngineBuildError(EngineError):
    """Compiling or serialising an optimised engine failed."""


class ModelLayoutError(PerceptionError):
    """Model outputs do not match a known family, or class names disagree with
    the class count."""


class InputImageError(PerceptionError, ValueError):
    """An input image has the wrong shape, channel count, dtype or is empty."""


class DecodeError(PerceptionError):
    """Model outputs could not be decoded (e.g. NaN/inf values)."""
