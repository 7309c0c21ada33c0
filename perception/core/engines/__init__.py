"""Inference engines: one interface (`Engine`), several runtimes chosen by
`EngineConfig` and built by `create_engine`. Runtimes are imported lazily, so
importing this package needs only numpy."""

from perception.core.engines.base import Engine, EngineInfo
from perception.core.engines.cache import BuildStatus, CachedEngine, EngineCache
from perception.core.engines.config import EngineConfig, EngineConfigError
from perception.core.engines.factory import create_engine

__all__ = [
    "BuildStatus",
    "CachedEngine",
    "Engine",
    "EngineCache",
    "EngineConfig",
    "EngineConfigError",
    "EngineInfo",
    "create_engine",
]
