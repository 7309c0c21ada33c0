"""`create_engine(config)`: one entry point for every runtime.

Runtimes are imported only when chosen; a missing one raises
RuntimeUnavailableError naming what to install, before any hashing or build
thread starts. Compiled runtimes (tensorrt from ONNX, torch_tensorrt) go
through the engine cache: a cached engine loads at once, otherwise it builds
in the background while the configured fallback serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from perception.core.engines.base import Engine
from perception.core.engines.cache import Builder, CachedEngine, EngineCache, StatusFn
from perception.core.engines.config import EngineConfig
from perception.core.engines.trust import warn_code_bearing
from perception.core.errors import EngineError

__all__ = ["check_runtime", "create_engine"]

_log = logging.getLogger(__name__)


def check_runtime(runtime: str) -> None:
    """Raise RuntimeUnavailableError if `runtime` cannot be imported here."""
    if runtime == "onnxruntime":
        from perception.core.engines.onnxruntime_engine import import_onnxruntime

        import_onnxruntime()
    elif runtime == "torch":
        from perception.core.engines.torch_engine import import_torch

        import_torch()
    elif runtime == "tensorrt":
        from perception.core.engines.tensorrt_engine import import_tensorrt
        from perception.core.engines.torch_engine import import_torch

        import_tensorrt()
        import_torch()  # device buffers
    elif runtime == "torch_tensorrt":
        from perception.core.engines.torch_tensorrt_engine import import_torch_tensorrt

        import_torch_tensorrt()
    else:
        raise EngineError(f"unknown runtime {runtime!r}")


def _onnx_metadata(path: str) -> dict[str, str]:
    from perception.core.engines.onnx_proto import read_onnx_io

    return read_onnx_io(path)[2]


def _onnx_input_shape(path: str) -> tuple[int, ...]:
    from perception.core.engines.onnx_proto import read_onnx_io

    inputs = read_onnx_io(path)[0]
    return inputs[0].shape if inputs else ()


def _fallback_metadata(config: EngineConfig) -> dict[str, str]:
    """Model metadata (class names, stride...) from the ONNX twin of a plan or
    TorchScript model, when the fallback model is one."""
    path = config.fallback_model_path
    return _onnx_metadata(path) if path and path.endswith(".onnx") else {}


def _cached(
    model: str, builder: Builder, config: EngineConfig, on_progress: StatusFn | None
) -> Engine:
    """A CachedEngine for `builder` in the configured cache, with the fallback."""
    return CachedEngine(
        model,
        builder,
        EngineCache(config.cache_dir),
        fallback=_fallback_factory(config),
        on_progress=on_progress,
    )


def _fallback_factory(config: EngineConfig) -> Callable[[], Engine] | None:
    if config.fallback is None:
        return None
    path = config.fallback_model_path or config.model_path

    if config.fallback == "onnxruntime":
        from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine

        def make() -> Engine:
            _log.info(
                "engine: %s serves from onnxruntime on %s while building",
                Path(config.model_path).name,
                config.fallback_device,
            )
            return OnnxRuntimeEngine(
                path,
                config.parsed_fallback_device,
                intra_op_threads=config.threads,
                graph_rewrites=config.graph_rewrites,
            )

        return make

    from perception.core.engines.torch_engine import TorchEngine

    def make_torch() -> Engine:
        _log.info(
            "engine: %s serves from torch on %s while building",
            Path(config.model_path).name,
            config.fallback_device,
        )
        shape = config.build_input_shape
        return TorchEngine(
            path,
            config.parsed_fallback_device,
            input_shape=(-1, *shape[1:]) if shape else (-1, 3, -1, -1),
            threads=config.threads,
        )

    return make_torch


def create_engine(config: EngineConfig, on_progress: StatusFn | None = None) -> Engine:
    """Build the engine `config` describes.

    Returns a plain engine, or a CachedEngine (poll `.status`, or pass
    `on_progress`) for cached/compiled runtimes. Raises ModelFileError,
    RuntimeUnavailableError, EngineConfigError or EngineError with a reason.
    """
    check_runtime(config.runtime)
    if config.fallback is not None:
        check_runtime(config.fallback)
    model = config.model_path

    if config.runtime == "onnxruntime":
        from perception.core.engines.onnxruntime_engine import (
            OnnxRuntimeBuilder,
            OnnxRuntimeEngine,
        )

        if config.cache_dir is None:
            return OnnxRuntimeEngine(
                model,
                config.parsed_device,
                list(config.providers) or None,
                precision=config.precision,
                intra_op_threads=config.threads,
                allow_fallback=config.allow_fallback,
                graph_rewrites=config.graph_rewrites,
            )
        builder = OnnxRuntimeBuilder(
            config.parsed_device,
            intra_op_threads=config.threads,
            providers=list(config.providers) or None,
            input_shape=config.build_input_shape or (),
            graph_rewrites=config.graph_rewrites,
        )
        return _cached(model, builder, config, on_progress)

    if config.runtime == "torch":
        from perception.core.engines.torch_engine import TorchEngine

        shape = config.build_input_shape
        return TorchEngine(
            model,
            config.parsed_device,
            config.precision,
            input_shape=(-1, *shape[1:]) if shape else (-1, 3, -1, -1),
            threads=config.threads,
        )

    if config.runtime == "tensorrt":
        from perception.core.engines.tensorrt_engine import TensorRTBuilder, TensorRTEngine

        if config.is_plan:
            return TensorRTEngine(model, config.parsed_device, metadata=_fallback_metadata(config))
        trt_shape = config.build_input_shape or _onnx_input_shape(model)
        trt_builder = TensorRTBuilder(
            config.parsed_device,
            config.precision,
            trt_shape if all(d > 0 for d in trt_shape) else (),
            metadata=_onnx_metadata(model),
            name=Path(model).stem,
        )
        return _cached(model, trt_builder, config, on_progress)

    # torch_tensorrt
    from perception.core.engines.torch_tensorrt_engine import TorchTensorRTBuilder

    if config.build_input_shape is None:
        raise EngineError(
            f"runtime torch_tensorrt needs build_input_shape (B, C, H, W) for {Path(model).name}"
        )
    kind = TorchTensorRTBuilder.model_kind_of(model)
    # said before any cache lookup: a cached build runs the same stored code
    warn_code_bearing(model, kind)
    tt_builder = TorchTensorRTBuilder(
        config.parsed_device,
        config.precision,
        config.build_input_shape,
        model_kind=kind,
        metadata=_fallback_metadata(config),
        name=Path(model).stem,
    )
    return _cached(model, tt_builder, config, on_progress)
