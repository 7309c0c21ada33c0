"""Inference engines: one interface (`Engine`), several runtimes chosen by
`EngineConfig` and built by `create_engine`. Runtimes are imported lazily, so
importing this package needs only numpy."""

from perception.core.engines.base import BuildStatus, Engine, EngineInfo
from perception.core.engines.cache import CachedEngine, EngineCache
from perception.core.engines.config import Device, EngineConfig, EngineConfigError
from perception.core.engines.factory import create_engine

__all__ = [
    "BuildStatus",
    "CachedEngine",
    "Device",
    "Engine",
    "EngineCache",
    "EngineConfig",
    "EngineConfigError",
    "EngineInfo",
    "create_engine",
]
