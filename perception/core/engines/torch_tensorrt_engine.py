"""Torch-TensorRT: compile a PyTorch model to TensorRT, save it, load it.

The cache build step (`TorchTensorRTBuilder`) compiles

* an ExportedProgram (`torch.export.save`, .pt2/.ep) with `ir="dynamo"`, and
  saves the result with `torch_tensorrt.save(..., output_format=
  "exported_program")` (artifact .ep);
* a TorchScript module (.pt/.ts/.torchscript) with `ir="ts"` when this
  Torch-TensorRT build has its TorchScript frontend (the dynamo frontend
  refuses ScriptModules), saved with `torch.jit.save` (artifact .ts).

ONNX models go through `tensorrt_engine.TensorRTBuilder` (TensorRT's ONNX
parser) instead: there is no ONNX frontend in Torch-TensorRT.

The loaded artifact runs through `TorchEngine` (torch tensors on CUDA), so
batching, validation and EngineInfo behave like the other engines.

VERIFICATION STATUS: written against the documented torch_tensorrt 2.x API
(compile(ir=..., inputs=[Input(min_shape, opt_shape, max_shape, dtype)],
enabled_precisions=...), save(..., output_format=..., arg_inputs=...), load).
Not run by its author (no GPU, no torch-tensorrt wheel here); the tests in
test_engines_torch_tensorrt.py run wherever torch_tensorrt and CUDA import.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perception.core.engines._common import one_line
from perception.core.engines.base import Engine
from perception.core.engines.cache import Builder, ProgressFn
from perception.core.engines.config import Device
from perception.core.engines.tensorrt_engine import cuda_device_name
from perception.core.engines.torch_engine import (
    EXPORTED_SUFFIXES,
    TorchEngine,
    import_torch,
    load_torch_model,
    torch_device,
)
from perception.core.engines.trust import warn_code_bearing
from perception.core.errors import EngineBuildError, EngineError, RuntimeUnavailableError

__all__ = ["TorchTensorRTBuilder", "import_torch_tensorrt"]

_log = logging.getLogger(__name__)


def import_torch_tensorrt() -> Any:
    """Import torch_tensorrt or raise RuntimeUnavailableError naming the package."""
    import_torch()
    try:
        import torch_tensorrt
    except ImportError as exc:
        raise RuntimeUnavailableError(
            "torch-tensorrt is not installed: pip install torch-tensorrt (the release matching "
            "your torch version; on Jetson NVIDIA's JetPack wheel) "
            f"({one_line(exc)})"
        ) from None
    return torch_tensorrt


class TorchTensorRTBuilder(Builder):
    """Compile with Torch-TensorRT and save the compiled module.

    Args:
        model_kind: 'exported_program' or 'torchscript' (picked from the file
            by the factory via `model_kind_of`).
        input_shape: (B, C, H, W) to compile for; the batch axis is dynamic
            from 1 to B when `dynamic_batch` (opt B), otherwise fixed at B.
        precision: fp32, fp16 (enabled_precisions {float16}) or int8
            (enabled_precisions {int8}; needs a model quantised with
            ModelOpt/Q-DQ, no calibration is done here).
    """

    runtime = "torch_tensorrt"

    def __init__(
        self,
        device: str | Device = "cuda:0",
        precision: str = "fp16",
        input_shape: tuple[int, ...] = (),
        *,
        model_kind: str = "exported_program",
        dynamic_batch: bool = True,
        workspace_bytes: int | None = None,
        metadata: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(precision, input_shape)
        if precision not in ("fp32", "fp16", "int8"):
            raise EngineError(
                f"torch_tensorrt precision must be fp32, fp16 or int8, got {precision!r}"
            )
        if len(self.input_shape) != 4 or min(self.input_shape) <= 0:
            raise EngineError(
                f"torch_tensorrt needs build_input_shape (B, C, H, W), got {self.input_shape}"
            )
        if model_kind not in ("exported_program", "torchscript"):
            raise EngineError(
                f"model_kind must be exported_program or torchscript, got {model_kind!r}"
            )
        self.device = Device.parse(device)
        if not self.device.is_cuda:
            raise EngineError(f"torch_tensorrt needs device 'cuda' or 'cuda:N', got '{device}'")
        self.model_kind = model_kind
        self.suffix = ".ep" if model_kind == "exported_program" else ".ts"
        self.dynamic_batch = dynamic_batch
        self.workspace_bytes = workspace_bytes
        self.metadata = dict(metadata or {})
        self.name = name

    @staticmethod
    def model_kind_of(path: str | Path) -> str:
        return (
            "exported_program" if Path(path).suffix.lower() in EXPORTED_SUFFIXES else "torchscript"
        )

    def runtime_version(self) -> str:
        tt = import_torch_tensorrt()
        torch = import_torch()
        trt_version = "?"
        try:
            import tensorrt

            trt_version = tensorrt.__version__
        except ImportError:
            pass
        return f"torch_tensorrt {tt.__version__}; torch {torch.__version__}; tensorrt {trt_version}"

    def device_name(self) -> str:
        return cuda_device_name(self.device)

    def _input_spec(self, tt: Any, torch: Any) -> Any:
        b, c, h, w = self.input_shape
        if self.dynamic_batch and b > 1:
            return tt.Input(
                min_shape=(1, c, h, w),
                opt_shape=(b, c, h, w),
                max_shape=(b, c, h, w),
                dtype=torch.float32,
            )
        return tt.Input(shape=(b, c, h, w), dtype=torch.float32)

    def build(self, model_path: Path, artifact_path: Path, progress: ProgressFn) -> None:
        tt = import_torch_tensorrt()
        torch = import_torch()
        dev = torch_device(torch, self.device)
        precisions = {
            "fp32": {torch.float32},
            "fp16": {torch.float16, torch.float32},
            "int8": {torch.int8, torch.float16, torch.float32},
        }[self.precision]
        spec = self._input_spec(tt, torch)
        extra: dict[str, Any] = {}
        if self.workspace_bytes:
            extra["workspace_size"] = int(self.workspace_bytes)
        progress(0.05, f"loading {model_path.name}")
        try:
            if self.model_kind == "exported_program":
                warn_code_bearing(model_path, "exported_program")
                program = torch.export.load(str(model_path))
                progress(0.15, "compiling with torch_tensorrt (dynamo)")
                compiled = tt.compile(
                    program, ir="dynamo", inputs=[spec], enabled_precisions=precisions, **extra
                )
                progress(0.85, f"saving {artifact_path.name}")
                example = torch.zeros(self.input_shape, dtype=torch.float32, device=dev)
                try:
                    tt.save(
                        compiled,
                        str(artifact_path),
                        output_format="exported_program",
                        arg_inputs=[spec],
                    )
                except TypeError:  # torch_tensorrt < 2.5 knows only `inputs=`
                    tt.save(
                        compiled,
                        str(artifact_path),
                        output_format="exported_program",
                        inputs=[example],
                    )
            else:
                features = getattr(tt, "ENABLED_FEATURES", None)
                if features is not None and not getattr(features, "torchscript_frontend", False):
                    raise EngineBuildError(
                        "this torch-tensorrt build has no TorchScript frontend: export the model "
                        "with torch.export.save (.pt2) to compile it with ir='dynamo'"
                    )
                module, _ = load_torch_model(model_path, torch, dev)
                progress(0.15, "compiling with torch_tensorrt (torchscript)")
                compiled = tt.compile(
                    module, ir="ts", inputs=[spec], enabled_precisions=precisions, **extra
                )
                progress(0.85, f"saving {artifact_path.name}")
                torch.jit.save(compiled, str(artifact_path))
        except EngineBuildError:
            raise
        except Exception as exc:  # compiler errors come in many types
            raise EngineBuildError(
                f"torch_tensorrt failed to compile {model_path.name}: "
                f"{type(exc).__name__}: {one_line(exc)}"
            ) from None
        progress(1.0, f"wrote {artifact_path.name}")

    def load(self, artifact_path: Path) -> Engine:
        tt = import_torch_tensorrt()
        torch = import_torch()
        dev = torch_device(torch, self.device)
        if self.model_kind == "exported_program":
            loaded = tt.load(str(artifact_path))
            module = loaded.module() if hasattr(loaded, "module") else loaded
        else:
            module = torch.jit.load(str(artifact_path), map_location=dev)
        b, c, h, w = self.input_shape
        dynamic = self.dynamic_batch and b > 1
        return TorchEngine(
            module,
            self.device,
            "fp32",  # inputs stay float32; TensorRT picks fp16/int8 kernels inside
            input_shape=(-1 if dynamic else b, c, h, w),
            metadata=self.metadata,
            name=self.name or artifact_path.stem,
            max_batch=b if dynamic else None,
            runtime_label=self.runtime,
            precision_label=self.precision,
        )
