"""TensorRT engine: serialized plans run with the `tensorrt` Python runtime
(TensorRT 10 tensor API), and a cache builder that turns an ONNX model into a
plan with the ONNX parser.

Device buffers are torch CUDA tensors, so this needs `tensorrt` and a CUDA
build of `torch`; both are imported only when an engine or builder is made
and their absence raises RuntimeUnavailableError naming the packages.

VERIFICATION STATUS: written against the documented TensorRT 10 Python API
(Runtime.deserialize_cuda_engine, ICudaEngine.num_io_tensors/get_tensor_name/
get_tensor_mode/get_tensor_shape/get_tensor_dtype/get_tensor_profile_shape,
IExecutionContext.set_input_shape/set_tensor_address/execute_async_v3,
Builder/OnnxParser/IBuilderConfig/IOptimizationProfile/IProgressMonitor).
It has not been run on a GPU by its author; see test_engines_tensorrt.py,
which runs wherever tensorrt and CUDA import.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from perception.core.engines._common import one_line, run_chunked, validate_batch
from perception.core.engines.base import Engine, EngineInfo
from perception.core.engines.cache import Builder, ProgressFn
from perception.core.engines.config import Device
from perception.core.engines.torch_engine import import_torch, torch_device
from perception.core.errors import (
    EngineBuildError,
    EngineError,
    InputImageError,
    ModelFileError,
    RuntimeUnavailableError,
)

__all__ = ["TensorRTBuilder", "TensorRTEngine", "cuda_device_name", "import_tensorrt"]

_log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    """Import tensorrt or raise RuntimeUnavailableError naming the package."""
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeUnavailableError(
            "TensorRT is not installed: pip install tensorrt (x86_64 with an NVIDIA driver) or, "
            "on Jetson, apt install python3-libnvinfer (JetPack); it also needs a CUDA build of "
            f"torch for device buffers ({one_line(exc)})"
        ) from None
    return tensorrt


def _cuda_torch(device: Device) -> tuple[Any, Any]:
    torch = import_torch()
    if not device.is_cuda:
        raise EngineError(f"TensorRT runs on a CUDA device ('cuda' or 'cuda:N'), got '{device}'")
    return torch, torch_device(torch, device)


def cuda_device_name(device: str | Device) -> str:
    """GPU model and compute capability, e.g. 'NVIDIA H100 80GB HBM3 sm90' (cache keys:
    a plan only runs on the GPU model and TensorRT version it was built for)."""
    torch, dev = _cuda_torch(Device.parse(device))
    major, minor = torch.cuda.get_device_capability(dev)
    return f"{torch.cuda.get_device_name(dev)} sm{major}{minor}"


def _make_logger(trt: Any) -> Any:
    """A trt.ILogger that forwards to logging and remembers the last error."""

    class _Logger(trt.ILogger):  # type: ignore[misc]  # tensorrt is untyped (Any)
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.last_error = ""

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.last_error = msg
                _log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.WARNING:
                _log.warning("TensorRT: %s", msg)
            else:
                _log.debug("TensorRT: %s", msg)

    return _Logger()


def _torch_dtype(trt: Any, torch: Any, trt_dtype: Any) -> Any:
    table = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT8": torch.int8,
        "UINT8": torch.uint8,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "BOOL": torch.bool,
    }
    for name, tdtype in table.items():
        if hasattr(trt.DataType, name) and trt_dtype == getattr(trt.DataType, name):
            return tdtype
    raise EngineError(f"unsupported TensorRT tensor dtype {trt_dtype}")


class TensorRTEngine(Engine):
    """A deserialized TensorRT plan behind the Engine interface.

    One execution context and one CUDA stream per engine; `infer` calls are
    serialised by a lock (create one engine per thread for concurrency).
    Dynamic input axes use optimisation profile 0: batches above its max
    batch run in chunks; H/W outside the profile are an InputImageError.

    Args:
        plan_path: a serialized engine (.engine/.plan).
        device: 'cuda', 'cuda:N' or a Device.
        metadata: model metadata to report (plans carry none; the factory
            passes the source ONNX model's metadata).
        name: reported model name (default: the file stem).
    """

    runtime_name = "tensorrt"

    def __init__(
        self,
        plan_path: str | os.PathLike[str],
        device: str | Device = "cuda:0",
        *,
        metadata: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        trt = import_tensorrt()
        torch, dev = _cuda_torch(Device.parse(device))
        self._trt, self._torch, self._dev = trt, torch, dev
        path = Path(plan_path)
        if not path.is_file():
            raise ModelFileError(f"TensorRT plan not found: {path}")
        data = path.read_bytes()
        if not data:
            raise ModelFileError(f"TensorRT plan is empty (0 bytes): {path}")
        self._logger = _make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(dev):
            engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ModelFileError(
                f"TensorRT {trt.__version__} cannot deserialize {path.name} (truncated, or built "
                f"by another TensorRT version / GPU?): {self._logger.last_error or 'no detail'}"
            )
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1:
            raise ModelFileError(f"{path.name}: expected one input tensor, got {inputs}")
        self._in = inputs[0]
        self._outs = outputs
        shape = tuple(int(d) for d in engine.get_tensor_shape(self._in))
        if len(shape) != 4:
            raise ModelFileError(f"{path.name}: expected a 4-D (B, C, H, W) input, got {shape}")
        self._in_dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(self._in))
        if self._in_dtype not in (torch.float32, torch.float16):
            raise ModelFileError(f"{path.name}: expected a float input, got {self._in_dtype}")
        self._min: tuple[int, ...] = shape
        self._max: tuple[int, ...] = shape
        if any(d < 0 for d in shape):
            lo, _opt, hi = engine.get_tensor_profile_shape(self._in, 0)
            self._min, self._max = tuple(int(d) for d in lo), tuple(int(d) for d in hi)
            # an axis the profile pins (min == max) is fixed for callers, even
            # though the network declares it dynamic
            b, c, h, w = (a if a == z else -1 for a, z in zip(self._min, self._max, strict=True))
            shape = (b, c, h, w)
        self._out_dtypes = [_torch_dtype(trt, torch, engine.get_tensor_dtype(n)) for n in outputs]
        self._context = engine.create_execution_context()
        if self._context is None:
            raise EngineError(
                f"{path.name}: TensorRT could not create an execution context "
                f"(GPU memory?): {self._logger.last_error or 'no detail'}"
            )
        self._stream = torch.cuda.Stream(device=dev)
        self._lock = threading.Lock()
        half = self._in_dtype == torch.float16 or any(d == torch.float16 for d in self._out_dtypes)
        self._info = EngineInfo(
            name=name or path.stem,
            runtime=self.runtime_name,
            device=str(dev),
            precision="fp16" if half else "fp32",  # plans do not record int8 in their I/O types
            input_name=self._in,
            input_shape=shape,
            input_dtype="float16" if self._in_dtype == torch.float16 else "float32",
            output_names=tuple(outputs),
            output_shapes=tuple(tuple(int(d) for d in engine.get_tensor_shape(n)) for n in outputs),
            metadata=dict(metadata or {}),
            max_batch=self._max[0],
        )
        self._fixed_batch = shape[0] if shape[0] > 0 else None

    @property
    def info(self) -> EngineInfo:
        return self._info

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        label = f"{self.runtime_name}:{self._info.name}"
        batch = validate_batch(batch, self._info.input_shape, label)
        for axis, what in ((2, "height"), (3, "width")):
            if not self._min[axis] <= batch.shape[axis] <= self._max[axis]:
                raise InputImageError(
                    f"{label}: {what} {batch.shape[axis]} outside the engine's profile "
                    f"[{self._min[axis]}, {self._max[axis]}]"
                )
        chunk = self._fixed_batch or self._max[0]
        return run_chunked(batch, chunk, self._run, label, pad=self._fixed_batch is not None)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch, ctx = self._torch, self._context
        if ctx is None:
            raise EngineError(f"{self._info.name}: engine is closed")
        with self._lock, torch.cuda.device(self._dev), torch.cuda.stream(self._stream):
            x = torch.from_numpy(batch).to(self._dev, self._in_dtype)
            if not ctx.set_input_shape(self._in, tuple(batch.shape)):
                raise InputImageError(
                    f"{self._info.name}: TensorRT rejected input shape {batch.shape}: "
                    f"{self._logger.last_error or 'outside the optimisation profile?'}"
                )
            ctx.set_tensor_address(self._in, x.data_ptr())
            outs = []
            for name, dtype in zip(self._outs, self._out_dtypes, strict=True):
                shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise EngineError(
                        f"{self._info.name}: output {name} has a data-dependent shape {shape}; "
                        "plans needing an output allocator are not supported"
                    )
                t = torch.empty(shape, dtype=dtype, device=self._dev)
                ctx.set_tensor_address(name, t.data_ptr())
                outs.append(t)
            if not ctx.execute_async_v3(self._stream.cuda_stream):
                raise EngineError(
                    f"{self._info.name}: TensorRT execution failed: "
                    f"{self._logger.last_error or 'no detail'}"
                )
            # .cpu() is enqueued on this stream after the engine and waits for it
            return [
                t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for t in outs
            ]

    def close(self) -> None:
        with self._lock:
            self._context = None
            self._engine = None


class _Monitor:
    """Adapts TensorRT's IProgressMonitor to a ProgressFn (TensorRT >= 10.0)."""

    @staticmethod
    def create(trt: Any, progress: ProgressFn) -> Any:
        class Monitor(trt.IProgressMonitor):  # type: ignore[misc]  # tensorrt is untyped (Any)
            def __init__(self) -> None:
                trt.IProgressMonitor.__init__(self)
                self.steps: dict[str, tuple[int, str | None]] = {}
                self.error: BaseException | None = None
                self.lock = threading.Lock()

            def phase_start(
                self, phase_name: str, parent_phase: str | None, num_steps: int
            ) -> None:
                with self.lock:
                    self.steps[phase_name] = (max(int(num_steps), 1), parent_phase)

            def step_complete(self, phase_name: str, step: int) -> bool:
                with self.lock:
                    total, parent = self.steps.get(phase_name, (1, None))
                if parent is None:  # report top-level phases only
                    try:
                        progress(min((step + 1) / total, 1.0), f"TensorRT: {phase_name}")
                    except BaseException as exc:  # cancellation: ask TensorRT to stop
                        self.error = exc
                        return False
                return self.error is None

            def phase_finish(self, phase_name: str) -> None:
                with self.lock:
                    self.steps.pop(phase_name, None)

        return Monitor()


class TensorRTBuilder(Builder):
    """Cache build step: ONNX -> TensorRT plan with the ONNX parser.

    `input_shape` (B, C, H, W) sets the optimisation profile for dynamic
    axes: batch from 1 to B (opt B), H and W fixed at the given size. For a
    model with a fully fixed input it may be left empty. precision 'fp16'
    sets BuilderFlag.FP16; 'int8' sets INT8 (+FP16) and expects an explicitly
    quantised (Q/DQ) model: no calibrator is run here.
    """

    runtime = "tensorrt"
    suffix = ".plan"

    def __init__(
        self,
        device: str | Device = "cuda:0",
        precision: str = "fp16",
        input_shape: tuple[int, ...] = (),
        *,
        workspace_bytes: int | None = None,
        metadata: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(precision, input_shape)
        if precision not in ("fp32", "fp16", "int8"):
            raise EngineError(f"TensorRT precision must be fp32, fp16 or int8, got {precision!r}")
        self.device = Device.parse(device)
        self.workspace_bytes = workspace_bytes
        self.metadata = dict(metadata or {})
        self.name = name

    def runtime_version(self) -> str:
        return str(import_tensorrt().__version__)

    def device_name(self) -> str:
        return cuda_device_name(self.device)

    def build(self, model_path: Path, artifact_path: Path, progress: ProgressFn) -> None:
        trt = import_tensorrt()
        torch, dev = _cuda_torch(self.device)
        logger = _make_logger(trt)
        progress(0.02, f"parsing {model_path.name}")
        with torch.cuda.device(dev):
            builder = trt.Builder(logger)
            network = builder.create_network(0)  # explicit batch is the only mode in TRT 10
            parser = trt.OnnxParser(network, logger)
            if not parser.parse_from_file(str(model_path)):
                errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
                raise EngineBuildError(
                    f"TensorRT ONNX parser rejected {model_path.name}: "
                    f"{errors[0] if errors else logger.last_error or 'no detail'}"
                )
            if network.num_inputs != 1:
                raise EngineBuildError(
                    f"{model_path.name}: expected one input, the network has {network.num_inputs}"
                )
            config = builder.create_builder_config()
            if self.workspace_bytes:
                config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
            if self.precision in ("fp16", "int8"):
                config.set_flag(trt.BuilderFlag.FP16)
            if self.precision == "int8":
                config.set_flag(trt.BuilderFlag.INT8)
            inp = network.get_input(0)
            shape = tuple(int(d) for d in inp.shape)
            if any(d < 0 for d in shape):
                if len(self.input_shape) != 4:
                    raise EngineBuildError(
                        f"{model_path.name} has dynamic input {shape}: set build_input_shape "
                        "(B, C, H, W) for the TensorRT optimisation profile"
                    )
                b, c, h, w = self.input_shape
                want = (b, c, h, w)
                for axis, (d, g) in enumerate(zip(shape, want, strict=True)):
                    if d > 0 and d != g:
                        raise EngineBuildError(
                            f"build_input_shape {want} disagrees with the model input {shape} "
                            f"on axis {axis}"
                        )
                lo = (1 if shape[0] < 0 else b, c, h, w)
                profile = builder.create_optimization_profile()
                profile.set_shape(inp.name, lo, want, want)
                config.add_optimization_profile(profile)
            monitor = None
            if hasattr(trt, "IProgressMonitor"):
                monitor = _Monitor.create(trt, progress)
                config.progress_monitor = monitor
            progress(0.05, f"building TensorRT {self.precision} engine")
            plan = builder.build_serialized_network(network, config)
            if monitor is not None and monitor.error is not None:
                raise monitor.error
            if plan is None:
                raise EngineBuildError(
                    f"TensorRT failed to build {model_path.name}: "
                    f"{logger.last_error or 'no detail'}"
                )
            with open(artifact_path, "wb") as f:
                f.write(memoryview(plan))
        progress(1.0, f"wrote {artifact_path.name}")

    def load(self, artifact_path: Path) -> Engine:
        return TensorRTEngine(artifact_path, self.device, metadata=self.metadata, name=self.name)
